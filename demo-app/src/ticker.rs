//! A second thread with its own `thread_local!` counter, to show per-thread state surviving
//! patches.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

thread_local! {
    /// Ticks counted by the current thread; only the ticker thread ever increments it.
    static TICKS_ON_THIS_THREAD: Cell<u64> = const { Cell::new(0) };
}

/// The ticker's latest count, copied out of its thread-local so other threads can read it.
static PUBLISHED_TICKS: AtomicU64 = AtomicU64::new(0);

/// Starts the ticker thread: it counts one tick every `period`, for the life of the process.
pub fn start(period: Duration) {
    thread::Builder::new()
        .name("ticker".into())
        .spawn(move || loop {
            let ticks = TICKS_ON_THIS_THREAD.with(|ticks| {
                ticks.set(ticks.get() + 1);
                ticks.get()
            });
            PUBLISHED_TICKS.store(ticks, Ordering::Relaxed);
            thread::sleep(period);
        })
        .expect("spawning the ticker thread");
}

/// The ticker thread's count so far.
pub fn ticks() -> u64 {
    PUBLISHED_TICKS.load(Ordering::Relaxed)
}
