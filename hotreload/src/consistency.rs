//! Making a patch's changes while no other thread runs the code they replace: the consistency
//! model of kpatch and Linux livepatch, with a conservative stack scan instead of an unwinder.
//!
//! `switch` (what [`crate::apply_patch`] and [`crate::set_entries`] go through) stops the
//! other threads ([`crate::stop_world`]) and checks each one before anything changes:
//! - its instruction pointer must not be inside the first [`JMP_LEN`](crate::JMP_LEN) bytes
//!   of an entry about to be rewritten (it would resume in the middle of the new `jmp`): a
//!   hard rule;
//! - no version of a function the patch replaces may be running on it: its instruction pointer
//!   is not in `[start, end)` of an old range, and no 8-byte word of its stack, from its stack
//!   pointer to the end of the mapping holding it, lies in `(start, end]` (a return address
//!   into the function; the entry itself is left out, which a return address never is and a
//!   stored function pointer usually is, and the end is in, where a call that never returns
//!   ends a function). The scan is conservative: a stale word in an unwritten stack slot, or a
//!   pointer into the function kept on a stack as data, counts too.
//!
//! If a thread fails a check, everyone is released and the stop is tried again a little later
//! (1 ms, doubling up to 16 ms: the waits happen with nobody stopped). A thread inside an
//! entry's bytes on [`MAX_ATTEMPTS`] attempts refuses the patch. A thread still running old
//! code after [`OLD_CODE_PATIENCE`] (one that never returns from it, or is inside it at every
//! attempt) does not: the first stop after that makes the change, and the ranges still in use
//! are reported, so the caller can say that this thread finishes its call in the old version.
//!
//! Limits: the calling thread is not checked (the agent runs no patched code; a safe point is
//! where its caller accepts the switch). A thread running on an alternate signal stack is
//! scanned there only. A thread whose stack was not in the list (started after it was read)
//! or could not be read blocks the stop until the patience ends, and is not reported then.
//!
//! Everything done while the others are stopped is allocation-free and lock-free: the stacks'
//! mappings are read from `/proc/self/maps` before each stop, and stacks are read with
//! `pread` from `/proc/self/mem` into a buffer on this thread's stack (a mapping gone since is
//! an error, not a fault).

use crate::mappings::writable_ranges;
use crate::protocol::OLD_CODE_PATIENCE;
use crate::redirect::{entry_containing, RedirectError, MAX_ATTEMPTS};
use crate::stop_world::{with_other_threads_stopped, StoppedThread};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// The first pause between two stops; each next one doubles, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(1);
const LONGEST_PAUSE: Duration = Duration::from_millis(16);

/// What [`switch`] did.
#[derive(Debug)]
pub(crate) struct Switched<T> {
    /// What the change returned.
    pub value: T,
    /// How long the threads were stopped, over every attempt.
    pub stopped_for: Duration,
    /// Stops needed.
    pub attempts: u32,
    /// Starts of the `old_code` ranges some thread was still running when the change was made.
    pub old_code_running: Vec<u64>,
}

/// Why one stop could not make the change.
enum Blocked {
    /// This thread is inside the first bytes of this entry.
    Entry { entry: u64, tid: i32 },
    /// Some thread runs old code (or its stack could not be read).
    OldCode,
}

/// Runs `change` once, with every other thread stopped, at a stop where none is inside the
/// first [`JMP_LEN`](crate::JMP_LEN) bytes of `entries` and, within [`OLD_CODE_PATIENCE`], none runs code in
/// `old_code` (see the module's doc). `change` must not allocate, lock or print.
pub(crate) fn switch<T>(
    entries: &[u64],
    old_code: &[Range<u64>],
    mut change: impl FnMut() -> T,
) -> Result<Switched<T>, RedirectError> {
    let memory = if old_code.is_empty() {
        None
    } else {
        Some(File::open("/proc/self/mem").map_err(RedirectError::Stacks)?)
    };
    let mut in_use = vec![false; old_code.len()];
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let (mut attempts, mut entry_attempts) = (0, 0);
    let mut stopped_for = Duration::ZERO;
    loop {
        attempts += 1;
        let last_chance = started.elapsed() >= OLD_CODE_PATIENCE;
        let stacks = match memory {
            Some(_) => writable_ranges(),
            None => Vec::new(),
        };
        in_use.fill(false);
        let (outcome, held) = with_other_threads_stopped(|stopped| {
            for thread in stopped.iter() {
                if let Some(entry) = entry_containing(thread.ip, entries.iter().copied()) {
                    return Err(Blocked::Entry {
                        entry,
                        tid: thread.tid,
                    });
                }
            }
            if let Some(memory) = &memory {
                let mut unreadable = false;
                for thread in stopped.iter() {
                    unreadable |= !mark_old_code(thread, &stacks, memory, old_code, &mut in_use);
                }
                if (unreadable || in_use.contains(&true)) && !last_chance {
                    return Err(Blocked::OldCode);
                }
            }
            Ok(change())
        })?;
        stopped_for += held;
        match outcome {
            Ok(value) => {
                let old_code_running = old_code
                    .iter()
                    .zip(&in_use)
                    .filter(|(_, &used)| used)
                    .map(|(range, _)| range.start)
                    .collect();
                return Ok(Switched {
                    value,
                    stopped_for,
                    attempts,
                    old_code_running,
                });
            }
            Err(Blocked::Entry { entry, tid }) => {
                entry_attempts += 1;
                if entry_attempts >= MAX_ATTEMPTS {
                    return Err(RedirectError::Busy {
                        entry,
                        tid,
                        attempts: entry_attempts,
                    });
                }
            }
            Err(Blocked::OldCode) => {}
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// Sets `in_use[i]` when `thread` runs `old_code[i]`: its instruction pointer is inside, or a
/// word of its stack could return into it. False when its stack is not among `stacks` or
/// can't be read (a thread started after they were listed): then it was not fully checked.
/// Allocation-free: runs while the other threads are stopped.
fn mark_old_code(
    thread: StoppedThread,
    stacks: &[Range<u64>],
    memory: &File,
    old_code: &[Range<u64>],
    in_use: &mut [bool],
) -> bool {
    for (range, used) in old_code.iter().zip(in_use.iter_mut()) {
        *used |= range.contains(&thread.ip);
    }
    let Some(stack) = stacks.iter().find(|stack| stack.contains(&thread.sp)) else {
        return false;
    };
    let mut buffer = [0u8; 4096];
    let mut at = thread.sp & !7;
    while at < stack.end {
        let len = buffer.len().min((stack.end - at) as usize);
        let read = match memory.read_at(&mut buffer[..len], at) {
            Ok(read) if read >= 8 => read & !7,
            _ => return false,
        };
        for word in buffer[..read].chunks_exact(8) {
            let word = u64::from_ne_bytes(word.try_into().unwrap_or_default());
            for (range, used) in old_code.iter().zip(in_use.iter_mut()) {
                *used |= range.start < word && word <= range.end;
            }
        }
        at += read as u64;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls `check` with where this thread is, as the stop handler would record it: the frames
    /// above `sp` are this function's and its callers'.
    #[inline(never)]
    fn stopped_here(check: &dyn Fn(StoppedThread)) {
        let sp: u64;
        // SAFETY: copies the stack pointer into a register; touches no memory.
        unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp) };
        check(StoppedThread {
            tid: 0,
            ip: stopped_here as *const () as u64 + 1,
            sp,
        });
    }

    #[test]
    fn finds_the_code_a_stack_returns_into() {
        let memory = File::open("/proc/self/mem").unwrap();
        let stacks = writable_ranges();
        stopped_here(&|thread| {
            // Computed below `sp`, so only the stack above it can hold these values: the
            // return address into this test, and nothing in the vsyscall page.
            let caller = finds_the_code_a_stack_returns_into as *const () as u64;
            let old_code = [
                caller..caller + 4096,
                0xffff_ffff_ff60_0000..0xffff_ffff_ff60_1000,
            ];
            let mut in_use = [false; 2];
            let elsewhere = StoppedThread { ip: 0, ..thread };
            assert!(mark_old_code(
                elsewhere,
                &stacks,
                &memory,
                &old_code,
                &mut in_use
            ));
            assert_eq!(in_use, [true, false]);

            let unknown_stack = StoppedThread { sp: 8, ..thread };
            let mut in_use = [false; 1];
            let running = [Range {
                start: thread.ip - 1,
                end: thread.ip + 1,
            }];
            assert!(!mark_old_code(
                unknown_stack,
                &stacks,
                &memory,
                &running,
                &mut in_use
            ));
            assert_eq!(in_use, [true], "the instruction pointer alone");
        });
    }
}
