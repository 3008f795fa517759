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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
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
/// immediate mode, the caller of [`safe_point`] otherwise). Frameworks redraw or rebuild
/// derived state here.
pub fn on_patch(callback: impl Fn(&PatchEvent) + Send + Sync + 'static) {
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
    let callbacks = CALLBACKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    for callback in callbacks {
        callback(&event);
    }
    Ok(Applied {
        generation: event.generation,
        stopped_for: report.stopped_for,
        old_code_running: report.old_code_running,
    })
}

/// A patch waiting for the next safe point, and where to send its outcome.
struct Queued {
    updates: Vec<SlotUpdate>,
    entries: Vec<EntryChange>,
    old_code: Vec<Range<u64>>,
    outcome: mpsc::Sender<Result<Applied, ApplyError>>,
}

static QUEUED: Mutex<Vec<Queued>> = Mutex::new(Vec::new());
/// Lets [`safe_point`] skip the lock when nothing waits: one relaxed load per frame.
static PENDING: AtomicBool = AtomicBool::new(false);

/// Applies `updates` now (immediate mode) or hands them to the next [`safe_point`] and waits
/// for it. Used by the agent.
#[cfg_attr(not(feature = "enabled"), allow(dead_code))] // the agent is its only caller
pub(crate) fn apply_in_mode(
    updates: Vec<SlotUpdate>,
    entries: Vec<EntryChange>,
    old_code: Vec<Range<u64>>,
) -> Result<Applied, ApplyError> {
    if mode() == Mode::Immediate {
        return apply_patch(&updates, &entries, &old_code);
    }
    let (outcome, receiver) = mpsc::channel();
    QUEUED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Queued {
            updates,
            entries,
            old_code,
            outcome,
        });
    PENDING.store(true, Ordering::Release);
    receiver
        .recv()
        .expect("safe_point always answers a queued patch")
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
        // The agent may have gone (socket closed); then nobody wants the outcome.
        let _ = patch
            .outcome
            .send(apply_patch(&patch.updates, &patch.entries, &patch.old_code));
    }
}
