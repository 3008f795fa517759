//! Applying patches: validation, atomic publication, modes and safe points, callbacks.
//!
//! A patch is a table of (slot, new address) pairs and a table of function entries to
//! redirect (or restore). Both are checked whole before anything moves, so a patch is applied
//! completely or not at all. Each slot store is atomic (Release): a concurrent caller runs the
//! old or the new function, never garbage.
//!
//! A patch of one slot and nothing else is that one store, made while the other threads run:
//! a thread already inside the old function finishes that call there (it changes only one
//! function, so no thread mixes two functions' versions; a recursive call through the slot
//! reaches the new one). Every other patch — several slots, or any entry — is applied in one
//! stop of the other threads ([`crate::consistency`]): its entry writes and slot stores become
//! visible to them at the same moment, and only at a stop where no thread runs a version the
//! patch replaces (its instruction pointer or a return address on its stack inside one, as
//! far as the patcher named them in `old_code`). So no thread runs old `a` and then calls new
//! `b` of the same patch, unless a thread keeps running old code past
//! [`OLD_CODE_PATIENCE`](crate::protocol::OLD_CODE_PATIENCE): then the patch is applied anyway and
//! [`Applied::old_code_running`] says which code. The calling thread is not checked: the agent
//! runs no patched code, and a [`safe_point`] is where its caller accepts the switch.
//!
//! In [`Mode::SafePoint`] a patch is applied only inside [`safe_point`], on the app's thread,
//! so nothing changes between two safe points.

use crate::mappings::executable_ranges;
use crate::protocol::SlotUpdate;
use crate::redirect::{set_entries_with, EntryChange, RedirectError, RedirectReport};
use crate::slot::{slot_at, SlotEntry};
use std::fmt;
use std::ops::Range;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

/// When queued patches take effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As soon as they arrive, from the agent thread (the default).
    Immediate,
    /// Only inside [`safe_point`], on the thread that calls it.
    SafePoint,
}

static MODE: AtomicU8 = AtomicU8::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// Serialises applies, so two patches never interleave their slot stores.
static APPLY_LOCK: Mutex<()> = Mutex::new(());

/// Chooses when patches take effect; see [`Mode`].
pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::Release);
}

/// The current [`Mode`].
pub fn mode() -> Mode {
    match MODE.load(Ordering::Acquire) {
        0 => Mode::Immediate,
        _ => Mode::SafePoint,
    }
}

/// Number of patches applied since the program started.
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// What an `on_patch` callback learns about the patch just applied.
#[derive(Debug, Clone)]
pub struct PatchEvent {
    /// [`generation`] after this patch.
    pub generation: u64,
    /// Paths of the slots this patch rewired.
    pub rewired: Vec<&'static str>,
    /// Function entries this patch redirected or restored (plain functions have no path
    /// in the runtime: `hotpatch run` names them).
    pub entries: usize,
}

type Callback = Arc<dyn Fn(&PatchEvent) + Send + Sync>;
static CALLBACKS: Mutex<Vec<Callback>> = Mutex::new(Vec::new());

/// Runs `callback` after every applied patch, on the thread that applied it (the agent in
/// immediate mode, the caller of [`safe_point`] otherwise), once `hotpatch run` has been
/// told. Frameworks redraw or rebuild derived state here. A callback that panics is reported
/// on stderr; the patch stays applied and the other callbacks still run.
pub fn on_patch(callback: impl Fn(&PatchEvent) + Send + Sync + 'static) {
    if FORKED_CHILD.load(Ordering::Relaxed) {
        return; // no patch is ever applied here, and the lock may be held by a thread gone
    }
    CALLBACKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Arc::new(callback));
}

/// Why a patch was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// The patch rewires no slot and redirects no entry.
    Empty,
    /// No registered slot lives at this address.
    UnknownSlot { slot: u64 },
    /// The patch's function has another signature than the slot.
    FingerprintMismatch {
        path: &'static str,
        slot: u64,
        expected: u64,
        patch: u64,
    },
    /// The new address is not inside executable memory of this process.
    NotExecutable { path: &'static str, target: u64 },
    /// The same slot appears twice in one patch.
    DuplicateSlot { path: &'static str },
    /// An entry redirect could not be written (nothing of the patch was applied).
    Redirect(String),
    /// The patch was queued for a safe point, and the thread running that safe point
    /// panicked before it answered.
    SafePointPanicked,
    /// This process is the child of a `fork` (without `exec`) of a program with an agent:
    /// patches belong to the parent, and the runtime's locks may be held by its threads.
    ForkedChild,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::Empty => write!(f, "the patch rewires no slot"),
            ApplyError::UnknownSlot { slot } => {
                write!(f, "no #[hotreload] slot at {slot:#x} in this program (patch built for another executable?)")
            }
            ApplyError::FingerprintMismatch { path, slot, expected, patch } => write!(
                f,
                "signature of `{path}` changed (slot {slot:#x} has fingerprint {expected:#018x}, the patch {patch:#018x}); callers still use the old signature, so restart the program"
            ),
            ApplyError::NotExecutable { path, target } => {
                write!(f, "new code for `{path}` at {target:#x} is not in executable memory")
            }
            ApplyError::DuplicateSlot { path } => write!(f, "the patch rewires `{path}` twice"),
            ApplyError::Redirect(reason) => write!(f, "{reason}"),
            ApplyError::ForkedChild => write!(
                f,
                "this process is a forked child: hot patching stays with the parent"
            ),
            ApplyError::SafePointPanicked => write!(
                f,
                "the thread at the safe point panicked before it answered (the patch may or may not be applied)"
            ),
        }
    }
}

impl std::error::Error for ApplyError {}

/// Checks every update against the registry and the process's memory map.
fn validate(updates: &[SlotUpdate]) -> Result<Vec<(&'static SlotEntry, *const ())>, ApplyError> {
    let executable = executable_ranges();
    let mut checked: Vec<(&'static SlotEntry, *const ())> = Vec::with_capacity(updates.len());
    for update in updates {
        let entry = usize::try_from(update.slot)
            .ok()
            .and_then(slot_at)
            .ok_or(ApplyError::UnknownSlot { slot: update.slot })?;
        if entry.fingerprint != update.fingerprint {
            return Err(ApplyError::FingerprintMismatch {
                path: entry.path,
                slot: update.slot,
                expected: entry.fingerprint,
                patch: update.fingerprint,
            });
        }
        if !executable
            .iter()
            .any(|range| range.contains(&update.target))
        {
            return Err(ApplyError::NotExecutable {
                path: entry.path,
                target: update.target,
            });
        }
        if checked.iter().any(|(seen, _)| std::ptr::eq(*seen, entry)) {
            return Err(ApplyError::DuplicateSlot { path: entry.path });
        }
        checked.push((entry, update.target as *const ()));
    }
    Ok(checked)
}

/// What one applied patch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// [`generation`] after this patch.
    pub generation: u64,
    /// How long the other threads were stopped to apply it (zero when none were).
    pub stopped_for: Duration,
    /// Starts of the `old_code` ranges some thread was still running after
    /// [`OLD_CODE_PATIENCE`](crate::protocol::OLD_CODE_PATIENCE), when the patch was applied anyway:
    /// that thread finishes its call in the old version, and may call new code from it.
    pub old_code_running: Vec<u64>,
}

/// Validates the whole table, then rewires every slot, bumps the generation and runs the
/// `on_patch` callbacks on this thread. Returns the new generation. Ignores the mode: the
/// agent calls it at the right time; apps and tests may call it directly.
pub fn apply(updates: &[SlotUpdate]) -> Result<u64, ApplyError> {
    apply_patch(updates, &[], &[]).map(|applied| applied.generation)
}

/// Like [`apply`], with function entries to redirect (or restore) in the same step.
///
/// A patch of one slot and no entry is one atomic store, made while the others run: a
/// thread already inside the old function finishes that call there. Any other patch is
/// applied with the other threads stopped, all its entry writes and slot stores at once, and
/// at a stop where none of them runs code in `old_code` (`[start, end)` of each version the
/// patch replaces, or `[]` not to check): see [`crate::consistency`] for the check, the
/// retries, and what happens when a thread never leaves.
pub fn apply_patch(
    updates: &[SlotUpdate],
    entries: &[EntryChange],
    old_code: &[Range<u64>],
) -> Result<Applied, ApplyError> {
    let (applied, event) = publish(updates, entries, old_code)?;
    run_callbacks(&event);
    Ok(applied)
}

/// [`apply_patch`] without the callbacks: what the patch did, and the event to run them with.
pub(crate) fn publish(
    updates: &[SlotUpdate],
    entries: &[EntryChange],
    old_code: &[Range<u64>],
) -> Result<(Applied, PatchEvent), ApplyError> {
    if FORKED_CHILD.load(Ordering::Relaxed) {
        return Err(ApplyError::ForkedChild);
    }
    if updates.is_empty() && entries.is_empty() {
        return Err(ApplyError::Empty);
    }
    let (event, report) = {
        let _serial = APPLY_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        let checked = validate(updates)?;
        let store_slots = || {
            for (entry, target) in &checked {
                entry.slot.store(*target);
            }
        };
        let report = if entries.is_empty() && checked.len() == 1 {
            store_slots();
            RedirectReport::default()
        } else {
            set_entries_with(entries, old_code, store_slots)
                .map_err(|error: RedirectError| ApplyError::Redirect(error.to_string()))?
        };
        let event = PatchEvent {
            generation: GENERATION.fetch_add(1, Ordering::AcqRel) + 1,
            rewired: checked.iter().map(|(entry, _)| entry.path).collect(),
            entries: entries.len(),
        };
        (event, report)
    };
    let applied = Applied {
        generation: event.generation,
        stopped_for: report.stopped_for,
        old_code_running: report.old_code_running,
    };
    Ok((applied, event))
}

/// Runs every `on_patch` callback with `event`. Each runs under `catch_unwind`: the app's
/// callback must not take down the agent thread (which would end hot patching for the run)
/// nor the safe point's other queued patches. A panic is reported and the patch stays applied.
pub(crate) fn run_callbacks(event: &PatchEvent) {
    let callbacks = CALLBACKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for callback in callbacks {
        // Unwind safety: a callback that panics halfway may leave its own captured state
        // half-updated; that is the app's state, which it sees again at its next call
        // exactly as a panic anywhere else in the app would leave it. The runtime's own
        // state is not touched by callbacks.
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| callback(event))) {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(not a string)");
            eprintln!(
                "hotreload: an on_patch callback panicked: {message} (patch generation {} stays applied)",
                event.generation
            );
        }
    }
}

/// A patch waiting for the next safe point: it applies the patch, answers hotpatch and
/// returns the event for the callbacks (`None` if the patch was refused).
pub(crate) type Queued = Box<dyn FnOnce() -> Option<PatchEvent> + Send>;

static QUEUED: Mutex<Vec<Queued>> = Mutex::new(Vec::new());
/// Lets [`safe_point`] skip the lock when nothing waits: one relaxed load per frame.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Hands `patch` to the next [`safe_point`], which runs it on its thread and then the
/// callbacks. Returns at once: the agent keeps serving requests while the patch waits.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))] // the agent is its only caller
pub(crate) fn queue_for_safe_point(patch: Queued) {
    QUEUED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(patch);
    PENDING.store(true, Ordering::Release);
}

/// Set in a child of `fork` by the handler [`forget_locks_in_forked_children`] installs.
///
/// A child starts with only the thread that forked: any runtime lock another thread held at
/// that moment (the agent applying a patch holds `APPLY_LOCK`, `QUEUED`, `CALLBACKS`, and
/// the stop and redirect locks) stays locked in the child for ever. Nor does a child have an
/// agent, so no patch can come to it. With this set, [`safe_point`], [`apply_patch`] and
/// [`on_patch`] touch none of those locks.
static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

/// Installs (once) the `pthread_atfork` child handler that sets [`FORKED_CHILD`]. The agent
/// calls it before its thread starts, so it is in place before that thread takes any lock.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))] // the agent is its only caller
pub(crate) fn forget_locks_in_forked_children() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: the handler is a plain `extern "C" fn` that lives as long as the process
        // (this library is never unloaded) and only stores atomics: async-signal-safe, as
        // code in a child of a multithreaded process must be.
        let error = unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
        if error != 0 {
            eprintln!(
                "hotreload: no fork handler ({}): a forked child calling safe_point() may block",
                std::io::Error::from_raw_os_error(error)
            );
        }
    });
}

extern "C" fn in_forked_child() {
    FORKED_CHILD.store(true, Ordering::Relaxed);
    // A patch the parent queued is the parent's: the child's safe points skip the queue.
    PENDING.store(false, Ordering::Relaxed);
}

/// Call once per frame or iteration. In [`Mode::SafePoint`], applies the patches that
/// arrived since the last call, here, on this thread. Cheap when nothing is queued.
#[inline]
pub fn safe_point() {
    if PENDING.load(Ordering::Relaxed) {
        apply_queued();
    }
}

#[cold]
fn apply_queued() {
    let queued = {
        let mut queue = QUEUED.lock().unwrap_or_else(PoisonError::into_inner);
        PENDING.store(false, Ordering::Release);
        std::mem::take(&mut *queue)
    };
    for patch in queued {
        if let Some(event) = patch() {
            run_callbacks(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::{Slot, SLOTS};
    use std::sync::mpsc;
    use std::thread;

    /// These tests change the process-wide mode and hold the runtime's locks: one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn original() -> u32 {
        1
    }
    fn replacement() -> u32 {
        2
    }

    /// A slot of this test binary's own (the runtime's unit tests have no `#[hotreload]`).
    static SLOT: Slot = Slot::new(original as *const ());
    #[linkme::distributed_slice(SLOTS)]
    static ENTRY: SlotEntry = SlotEntry::new(&SLOT, original as *const (), PATH, 0x7e57);
    const PATH: &str = "hotreload::patching::tests::original";

    /// An update pointing the test slot at `target`.
    fn to(target: fn() -> u32) -> SlotUpdate {
        SlotUpdate {
            slot: SLOT.address() as u64,
            fingerprint: ENTRY.fingerprint,
            target: target as usize as u64,
        }
    }

    /// Generations of the test slot's patches that the callback after the panicking one saw.
    static SEEN: Mutex<Vec<u64>> = Mutex::new(Vec::new());

    /// Registers (once) a callback that panics on every patch of the test slot, then one that
    /// records it: the second still runs.
    fn panicking_callbacks() {
        static REGISTERED: Once = Once::new();
        REGISTERED.call_once(|| {
            on_patch(|event| {
                if event.rewired.contains(&PATH) {
                    panic!("callback failure for generation {}", event.generation);
                }
            });
            on_patch(|event| {
                if event.rewired.contains(&PATH) {
                    SEEN.lock().unwrap().push(event.generation);
                }
            });
        });
    }

    fn seen(generation: u64) -> bool {
        SEEN.lock().unwrap().contains(&generation)
    }

    fn current() -> u32 {
        // SAFETY: the slot only ever holds `original` or `replacement`, both `fn() -> u32`.
        let function = unsafe { SLOT.get(original as fn() -> u32) };
        function()
    }

    #[test]
    fn a_panicking_callback_leaves_the_patch_applied_and_the_next_one_working() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        panicking_callbacks();

        // Called directly: the patch counts, the next apply works.
        let first = apply(&[to(replacement)]).expect("applied despite the callback");
        assert_eq!(current(), 2);
        assert!(seen(first));
        let second = apply(&[to(original)]).expect("the next patch too");
        assert_eq!(current(), 1);
        assert!(second > first && seen(second));

        // As the agent does it in immediate mode: the callbacks are left for after the answer.
        let (applied, event) = publish(&[to(replacement)], &[], &[]).unwrap();
        assert_eq!(current(), 2);
        assert!(!seen(applied.generation), "not yet: after the answer");
        run_callbacks(&event);
        assert!(seen(applied.generation));

        // Safe-point mode: two queued patches, both applied by one safe point, in order,
        // although every callback of theirs panics.
        let (answers, answered) = mpsc::channel();
        for target in [original, replacement] {
            let answers = answers.clone();
            queue_for_safe_point(Box::new(move || {
                let (applied, event) = publish(&[to(target)], &[], &[]).ok()?;
                answers.send(applied.generation).unwrap();
                Some(event)
            }));
        }
        assert!(
            answered.try_recv().is_err(),
            "nothing applied before the safe point"
        );
        safe_point();
        let generations: Vec<u64> = answered.try_iter().collect();
        assert_eq!(generations.len(), 2);
        assert!(generations.iter().all(|&generation| seen(generation)));
        assert_eq!(current(), 2, "the later of the two is the one in place");
        apply(&[to(original)]).unwrap();
    }

    #[test]
    fn a_forked_child_never_waits_for_a_lock_its_parent_held() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        forget_locks_in_forked_children();
        let update = [to(replacement)];
        // Another thread holds what the agent holds while it applies a patch and queues the
        // next for a safe point, at the moment this thread forks.
        let (locked, wait_locked) = mpsc::channel();
        let (release, wait_release) = mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            let _apply = APPLY_LOCK.lock().unwrap();
            let _queue = QUEUED.lock().unwrap();
            let _callbacks = CALLBACKS.lock().unwrap();
            PENDING.store(true, Ordering::Release);
            locked.send(()).unwrap();
            wait_release.recv().unwrap();
        });
        wait_locked.recv().unwrap();
        // SAFETY: the child runs only what is safe in a child of a multithreaded process:
        // atomics, calls that return before allocating or locking, `alarm` and `_exit`.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: async-signal-safe calls; SIGALRM ends a child that deadlocks, which the
            // parent sees as a signal instead of an exit.
            unsafe { libc::alarm(60) };
            safe_point();
            on_patch(|_| {});
            let refused = apply(&update) == Err(ApplyError::ForkedChild);
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(if refused { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
        release.send(()).unwrap();
        holder.join().unwrap();
        safe_point(); // the parent's own: takes the (empty) queue, clears PENDING
        let mut status = 0;
        // SAFETY: `child` is our child; `status` is a valid out-pointer.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child blocked or applied a patch (wait status {status:#x})"
        );
        assert!(!FORKED_CHILD.load(Ordering::Relaxed), "only in the child");
        assert_eq!(current(), 1, "the child's apply was the child's alone");
    }
}
