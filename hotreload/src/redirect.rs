//! Entry redirects: a 5-byte `jmp rel32` written over a function's first bytes, so every
//! caller (direct calls, function pointers, vtables, closures) reaches the new version.
//!
//! [`set_entries`] applies a whole table or nothing. Everything that can be refused is
//! checked first, from `/proc/self/maps`, while the program runs. Then the other threads are
//! stopped ([`crate::stop_world`]); if one of them was interrupted inside the first 5 bytes
//! of an entry about to change, it would resume in the middle of the new instruction, so
//! the threads are released and the stop is retried a little later (never written over).
//! The bytes are written through `/proc/self/mem`, which the kernel lets a process do to its
//! own read-only pages (as a debugger does): the pages' protections never change, so no page
//! is ever writable and executable. Then instruction fetch is serialised on every core and
//! the threads are released. The stop and its retries are [`crate::consistency::switch`]'s,
//! which also waits for threads running code a patch replaces.
//!
//! A 5-byte store is not atomic for instruction fetch (a core may fetch the old first bytes
//! and the new last ones, and an entry need not be 8-byte aligned), hence stopping everyone
//! rather than writing in place while they run.

use crate::consistency::switch;
use crate::mappings::executable_ranges;
use crate::stop_world::StopError;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Bytes a redirect overwrites: `e9` + a 32-bit displacement.
pub const JMP_LEN: u64 = 5;

/// Stops tried before giving up because a thread sits inside an entry's first bytes.
pub const MAX_ATTEMPTS: u32 = 50;

pub use hotreload_abi::protocol::EntryChange;

/// What one [`set_entries`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectReport {
    /// Entries whose bytes changed (a change to what is already there is not counted).
    pub changed: usize,
    /// How long the other threads were stopped, over every attempt (zero when nobody was).
    pub stopped_for: Duration,
    /// Stops needed (more than one when a thread sat inside an entry or ran old code).
    pub attempts: u32,
    /// Starts of the `old_code` ranges of [`set_entries_with`] some thread was still running
    /// when the change was made anyway (empty when none was).
    pub old_code_running: Vec<u64>,
}

/// An entry currently redirected, as the process-wide table remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirect {
    /// The redirected function's first byte.
    pub entry: u64,
    /// Where its `jmp` goes.
    pub target: u64,
    /// The entry's bytes before its first redirect, written back by a `None` change.
    pub original: [u8; JMP_LEN as usize],
}

/// Why a table was refused. Nothing was written.
#[derive(Debug)]
pub enum RedirectError {
    /// The same entry appears twice.
    DuplicateEntry { entry: u64 },
    /// The entry is not in executable memory.
    EntryNotExecutable { entry: u64 },
    /// The 5 bytes from the entry run out of executable memory.
    EntryTooShort { entry: u64 },
    /// The target is not in executable memory.
    TargetNotExecutable { entry: u64, target: u64 },
    /// The target lies farther than a `jmp rel32` reaches (±2 GiB from entry + 5).
    OutOfReach { entry: u64, target: u64 },
    /// The target lies inside the bytes the jump would replace.
    TargetInsideEntry { entry: u64, target: u64 },
    /// Following the redirects from this entry comes back to it: calls would loop forever.
    Cycle { entry: u64 },
    /// A thread stayed inside this entry's first bytes on every attempt.
    Busy { entry: u64, tid: i32, attempts: u32 },
    /// The other threads could not be stopped.
    Stop(StopError),
    /// Writing the code failed (what was written in this call was put back).
    Write { entry: u64, error: io::Error },
    /// `/proc/self/mem`, through which the threads' stacks are checked, could not be opened.
    Stacks(io::Error),
}

impl fmt::Display for RedirectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RedirectError::DuplicateEntry { entry } => {
                write!(f, "entry {entry:#x} appears twice")
            }
            RedirectError::EntryNotExecutable { entry } => {
                write!(f, "entry {entry:#x} is not in executable memory")
            }
            RedirectError::EntryTooShort { entry } => write!(
                f,
                "entry {entry:#x}: the {JMP_LEN} bytes a jump needs leave executable memory"
            ),
            RedirectError::TargetNotExecutable { entry, target } => write!(
                f,
                "target {target:#x} of entry {entry:#x} is not in executable memory"
            ),
            RedirectError::OutOfReach { entry, target } => write!(
                f,
                "target {target:#x} is out of jmp rel32 reach (±2 GiB) of entry {entry:#x}"
            ),
            RedirectError::TargetInsideEntry { entry, target } => write!(
                f,
                "target {target:#x} lies inside the first {JMP_LEN} bytes of entry {entry:#x}"
            ),
            RedirectError::Cycle { entry } => {
                write!(f, "redirects starting at {entry:#x} loop back to it")
            }
            RedirectError::Busy {
                entry,
                tid,
                attempts,
            } => write!(
                f,
                "thread {tid} was inside the first {JMP_LEN} bytes of entry {entry:#x} at each of {attempts} attempts"
            ),
            RedirectError::Stop(error) => write!(f, "could not stop the other threads: {error}"),
            RedirectError::Write { entry, error } => {
                write!(f, "writing entry {entry:#x} failed: {error}")
            }
            RedirectError::Stacks(error) => {
                write!(f, "could not open /proc/self/mem to check the threads' stacks: {error}")
            }
        }
    }
}

impl std::error::Error for RedirectError {}

impl From<StopError> for RedirectError {
    fn from(error: StopError) -> Self {
        RedirectError::Stop(error)
    }
}

/// Redirected entries, by entry address. Its lock also serialises [`set_entries`].
static TABLE: Mutex<BTreeMap<u64, Redirect>> = Mutex::new(BTreeMap::new());

/// Every entry redirected now, by address: what a re-attaching patcher needs to know.
pub fn redirects() -> Vec<Redirect> {
    TABLE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .copied()
        .collect()
}

/// The `jmp rel32` at `entry` that lands on `target`, or None when out of reach.
pub fn jmp_rel32(entry: u64, target: u64) -> Option<[u8; JMP_LEN as usize]> {
    let displacement = i32::try_from(target as i64 - entry.wrapping_add(JMP_LEN) as i64).ok()?;
    let [a, b, c, d] = displacement.to_le_bytes();
    Some([0xe9, a, b, c, d])
}

/// The first entry whose first 5 bytes contain `ip`. A thread there would resume in the
/// middle of the rewritten instruction. (At `ip == entry` it would actually be safe, at an
/// instruction boundary both before and after; it is refused too, to stay conservative.)
pub fn entry_containing(ip: u64, entries: impl IntoIterator<Item = u64>) -> Option<u64> {
    entries
        .into_iter()
        .find(|&entry| ip.wrapping_sub(entry) < JMP_LEN)
}

/// Redirects or restores every entry of `changes`, all together, or refuses them all.
///
/// Checks the whole table first (see [`RedirectError`]), then stops the other threads,
/// makes sure none is inside the bytes to write (retrying up to [`MAX_ATTEMPTS`] times, see
/// [`crate::consistency`]), writes, serialises instruction fetch and releases them. Restoring
/// an entry that is not redirected changes nothing (and stops no thread). Threads already
/// running an old function finish it there; only new calls take the jump.
pub fn set_entries(changes: &[EntryChange]) -> Result<RedirectReport, RedirectError> {
    write_entries(changes, &[], None::<fn()>)
}

/// [`set_entries`] as one step of a patch: the other threads are stopped even when no entry
/// needs writing, and `together` runs in that stop, right after the entries are written, so
/// what it changes (slot stores of the same patch) becomes visible to them at the same moment.
/// `together` must not allocate, lock or print (a stopped thread may hold that lock).
///
/// `old_code` is the code the patch replaces (`[start, end)` of each running version): the
/// stop is retried until no thread runs it, for up to
/// [`OLD_CODE_PATIENCE`](crate::protocol::OLD_CODE_PATIENCE); past that the patch is
/// applied anyway and [`RedirectReport::old_code_running`] names the ranges still in use.
pub fn set_entries_with(
    changes: &[EntryChange],
    old_code: &[Range<u64>],
    together: impl FnOnce(),
) -> Result<RedirectReport, RedirectError> {
    write_entries(changes, old_code, Some(together))
}

/// Plans `changes`, then writes them and runs `together` in one stop; without `together` and
/// with nothing to write, stops nobody.
fn write_entries(
    changes: &[EntryChange],
    old_code: &[Range<u64>],
    together: Option<impl FnOnce()>,
) -> Result<RedirectReport, RedirectError> {
    let mut table = TABLE.lock().unwrap_or_else(PoisonError::into_inner);
    let writes = plan(changes, &table, &executable_ranges())?;
    if writes.is_empty() && together.is_none() {
        return Ok(RedirectReport::default());
    }
    let memory = match writes.first() {
        Some(first) => Some(
            File::options()
                .read(true)
                .write(true)
                .open("/proc/self/mem")
                .map_err(|error| RedirectError::Write {
                    entry: first.entry,
                    error,
                })?,
        ),
        None => None,
    };
    let entries: Vec<u64> = writes.iter().map(|write| write.entry).collect();
    let mut together = together;
    let switched = switch(&entries, old_code, || -> Result<(), RedirectError> {
        if let Some(memory) = &memory {
            write_all(memory, &writes)?;
        }
        if let Some(together) = together.take() {
            together();
        }
        Ok(())
    })?;
    switched.value?;

    for write in &writes {
        match write.target {
            Some(target) => {
                table
                    .entry(write.entry)
                    .or_insert(Redirect {
                        entry: write.entry,
                        target,
                        original: write.before,
                    })
                    .target = target;
            }
            None => {
                table.remove(&write.entry);
            }
        }
    }
    Ok(RedirectReport {
        changed: writes.len(),
        stopped_for: switched.stopped_for,
        attempts: switched.attempts,
        old_code_running: switched.old_code_running,
    })
}

/// One entry's bytes to change.
struct Write {
    entry: u64,
    target: Option<u64>,
    before: [u8; JMP_LEN as usize],
    after: [u8; JMP_LEN as usize],
}

/// Validates `changes` against the table and the memory map; returns the bytes to write.
fn plan(
    changes: &[EntryChange],
    table: &BTreeMap<u64, Redirect>,
    executable: &[Range<u64>],
) -> Result<Vec<Write>, RedirectError> {
    let is_executable = |address: u64| executable.iter().any(|range| range.contains(&address));
    let mut writes = Vec::new();
    let mut after_table: BTreeMap<u64, u64> = table.values().map(|r| (r.entry, r.target)).collect();
    for (index, change) in changes.iter().enumerate() {
        let entry = change.entry;
        if changes[..index].iter().any(|c| c.entry == entry) {
            return Err(RedirectError::DuplicateEntry { entry });
        }
        if !is_executable(entry) {
            return Err(RedirectError::EntryNotExecutable { entry });
        }
        if !(entry..entry.saturating_add(JMP_LEN)).all(is_executable) {
            return Err(RedirectError::EntryTooShort { entry });
        }
        // SAFETY: the 5 bytes lie in executable mappings, which are readable on x86_64
        // (execute implies read), and only `set_entries`, holding the table lock, writes them.
        let before = unsafe { std::ptr::read_volatile(entry as *const [u8; JMP_LEN as usize]) };
        let after = match change.target {
            Some(target) => {
                if !is_executable(target) {
                    return Err(RedirectError::TargetNotExecutable { entry, target });
                }
                if (entry..entry + JMP_LEN).contains(&target) {
                    return Err(RedirectError::TargetInsideEntry { entry, target });
                }
                after_table.insert(entry, target);
                jmp_rel32(entry, target).ok_or(RedirectError::OutOfReach { entry, target })?
            }
            None => {
                after_table.remove(&entry);
                match table.get(&entry) {
                    Some(redirect) => redirect.original,
                    None => continue, // never redirected: already original
                }
            }
        };
        if before != after {
            writes.push(Write {
                entry,
                target: change.target,
                before,
                after,
            });
        }
    }
    for &entry in after_table.keys() {
        let mut at = entry;
        for _ in 0..=after_table.len() {
            match after_table.get(&at) {
                Some(&next) if next == entry => return Err(RedirectError::Cycle { entry }),
                Some(&next) => at = next,
                None => break,
            }
        }
    }
    Ok(writes)
}

/// Writes every entry; on a failure puts back those already written. Runs with the other
/// threads stopped: `write_at` is one `pwrite64`, no allocation, and errors are OS codes.
fn write_all(memory: &File, writes: &[Write]) -> Result<(), RedirectError> {
    for (done, write) in writes.iter().enumerate() {
        if let Err(error) = write_code(memory, write.entry, &write.after) {
            for undo in &writes[..done] {
                // Best effort: the same file accepted these addresses a moment ago.
                let _ = write_code(memory, undo.entry, &undo.before);
            }
            return Err(RedirectError::Write {
                entry: write.entry,
                error,
            });
        }
    }
    Ok(())
}

fn write_code(memory: &File, entry: u64, bytes: &[u8; JMP_LEN as usize]) -> io::Result<()> {
    match memory.write_at(bytes, entry)? {
        n if n == bytes.len() => Ok(()),
        _ => Err(io::Error::from(io::ErrorKind::WriteZero)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_jumps_forward_and_back() {
        assert_eq!(jmp_rel32(0x1000, 0x1005), Some([0xe9, 0, 0, 0, 0]));
        assert_eq!(
            jmp_rel32(0x1000, 0x1000),
            Some([0xe9, 0xfb, 0xff, 0xff, 0xff])
        );
        assert_eq!(
            jmp_rel32(0x1000, 0x1005 + 0x7fff_ffff),
            Some([0xe9, 0xff, 0xff, 0xff, 0x7f])
        );
        assert_eq!(jmp_rel32(0x1000, 0x1005 + 0x8000_0000), None);
        assert_eq!(
            jmp_rel32(0x9000_0000, 0x9000_0005 - 0x8000_0000),
            Some([0xe9, 0, 0, 0, 0x80])
        );
        assert_eq!(jmp_rel32(0x9000_0000, 0x9000_0004 - 0x8000_0000), None);
    }

    #[test]
    fn finds_threads_inside_the_first_five_bytes() {
        let entries = [0x1000, 0x2000];
        assert_eq!(entry_containing(0xfff, entries), None);
        for ip in 0x1000..0x1005 {
            assert_eq!(entry_containing(ip, entries), Some(0x1000));
        }
        assert_eq!(entry_containing(0x1005, entries), None);
        assert_eq!(entry_containing(0x2004, entries), Some(0x2000));
        assert_eq!(entry_containing(0x2005, entries), None);
        assert_eq!(
            entry_containing(u64::MAX, [u64::MAX - 1]),
            Some(u64::MAX - 1)
        );
    }

    fn redirect(entry: u64, target: u64) -> (u64, Redirect) {
        let original = [0; 5];
        (
            entry,
            Redirect {
                entry,
                target,
                original,
            },
        )
    }

    #[test]
    fn refuses_cycles_through_the_table() {
        let code = plan as *const () as u64; // any executable address
        let executable = [code - 0x1000..code, code..code + 0x1000];
        let table: BTreeMap<u64, Redirect> = [redirect(code, code + 0x40)].into();
        let loop_back = [EntryChange {
            entry: code + 0x40,
            target: Some(code),
        }];
        assert!(matches!(
            plan(&loop_back, &table, &executable),
            Err(RedirectError::Cycle { .. })
        ));
        let itself = [EntryChange {
            entry: code + 0x80,
            target: Some(code + 0x82),
        }];
        assert!(matches!(
            plan(&itself, &table, &executable),
            Err(RedirectError::TargetInsideEntry { .. })
        ));
    }
}
