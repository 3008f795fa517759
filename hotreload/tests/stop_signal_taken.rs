//! A program that already handles the stop signal keeps it: stopping (and so redirecting)
//! is refused. Its own test binary, since the handler it installs is process-wide.

use hotreload::stop_world::{with_other_threads_stopped, StopError, STOP_SIGNAL};
use hotreload::{set_entries, EntryChange, RedirectError};
use std::hint::black_box;

extern "C" fn programs_own_handler(_: libc::c_int) {}

#[inline(never)]
fn taken_old(x: u64) -> u64 {
    black_box(x).wrapping_mul(7).wrapping_add(black_box(3))
}

#[inline(never)]
fn taken_new(x: u64) -> u64 {
    black_box(x).wrapping_mul(11).wrapping_add(black_box(5))
}

#[test]
fn a_signal_the_program_handles_is_not_stolen() {
    let handler = programs_own_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installs a handler that does nothing, for a signal nobody sends here.
    assert_ne!(unsafe { libc::signal(STOP_SIGNAL, handler) }, libc::SIG_ERR);
    match with_other_threads_stopped(|_| ()) {
        Err(StopError::SignalInUse { signal }) => assert_eq!(signal, STOP_SIGNAL),
        other => panic!("expected SignalInUse, got {other:?}"),
    }
    let entry = taken_old as fn(u64) -> u64 as usize as u64;
    // SAFETY: reads 5 bytes of this test's own code.
    let before = unsafe { std::ptr::read_volatile(entry as *const [u8; 5]) };
    let refused = set_entries(&[EntryChange {
        entry,
        target: Some(taken_new as fn(u64) -> u64 as usize as u64),
    }]);
    assert!(
        matches!(
            refused,
            Err(RedirectError::Stop(StopError::SignalInUse { .. }))
        ),
        "{refused:?}"
    );
    // SAFETY: reads 5 bytes of this test's own code.
    let after = unsafe { std::ptr::read_volatile(entry as *const [u8; 5]) };
    assert_eq!(before, after);
    assert_eq!(taken_old(2), 17);
    // SAFETY: the handler is still ours to query; restore the default.
    let current = unsafe { libc::signal(STOP_SIGNAL, libc::SIG_DFL) };
    assert_eq!(current, handler, "the program's handler was replaced");
}
