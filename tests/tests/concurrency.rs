//! Slots are swapped while other threads call through them: every call returns one of the
//! two valid results, never garbage, and both are observed.

use hotreload::protocol::SlotUpdate;
use hotreload::{hotreload, slot_named};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

#[hotreload]
fn answer(seed: u64) -> u64 {
    seed * 2
}

#[inline(never)]
fn answer_v2(seed: u64) -> u64 {
    seed * 3
}

const CALLERS: usize = 4;
const SWAPS: usize = 5_000;

#[test]
fn callers_see_old_or_new_never_garbage() {
    let entry = slot_named("concurrency::answer").expect("registered");
    let versions = [
        entry.original.get() as u64,
        answer_v2 as fn(u64) -> u64 as usize as u64,
    ];
    let done = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            let done = Arc::clone(&done);
            thread::spawn(move || {
                let (mut old, mut new, mut calls) = (0u64, 0u64, 0u64);
                while !done.load(Ordering::Relaxed) || calls < 1000 {
                    let seed = 1 + calls % 1000;
                    match answer(seed) {
                        r if r == seed * 2 => old += 1,
                        r if r == seed * 3 => new += 1,
                        r => panic!("answer({seed}) returned {r}: neither version"),
                    }
                    calls += 1;
                }
                (old, new)
            })
        })
        .collect();
    let start = hotreload::generation();
    for swap in 0..SWAPS {
        let update = SlotUpdate {
            slot: entry.slot.address() as u64,
            fingerprint: entry.fingerprint,
            target: versions[(swap + 1) % 2],
        };
        hotreload::apply(&[update]).expect("a valid swap is applied");
    }
    done.store(true, Ordering::Relaxed);
    let (old, new) = callers
        .into_iter()
        .map(|caller| caller.join().expect("no caller panicked"))
        .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
    assert!(
        old > 0 && new > 0,
        "both versions observed: old {old}, new {new}"
    );
    assert_eq!(hotreload::generation() - start, SWAPS as u64);
    // SWAPS is even: the last swap restored the original.
    assert_eq!(entry.slot.current(), entry.original.get());
}
