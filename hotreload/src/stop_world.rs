//! Stopping every other thread of this process, from inside it, so code can be rewritten.
//!
//! [`with_other_threads_stopped`] lists `/proc/self/task`, sends each other thread
//! [`STOP_SIGNAL`] with `tgkill`, and waits until every one has acknowledged from the signal
//! handler. The handler records where the thread was interrupted (its RIP and RSP),
//! acknowledges and waits (a short `pause` spin, then a futex wait so stopped threads give the
//! CPUs back) until released; before returning it executes `cpuid`, a serialising instruction,
//! so a resumed thread fetches the code as it is *after* the closure's writes (Intel SDM
//! vol. 3 §8.1.3, cross-modifying code). No helper thread is used, and nothing in the handler
//! allocates or locks: it only touches the preallocated [`MAX_THREADS`] slots through atomics.
//!
//! What it guarantees: while the closure runs, every other thread of the process is held in
//! the handler (threads started meanwhile are found by the rescans and held too), so what the
//! closure writes reaches all of them at once, when they are released. Whether the moment is
//! a good one is not its business: [`crate::consistency`] reads the recorded RIPs and RSPs.
//!
//! While the others are stopped the calling thread must not allocate, lock, print or panic:
//! a stopped thread may hold the allocator's or stdout's lock. The enumeration below uses
//! raw syscalls into stack buffers for that reason.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// The real-time signal that stops threads: 60, i.e. `SIGRTMAX - 4` with glibc on Linux.
/// glibc keeps the two signals *below* `SIGRTMIN()` (32, 33) for cancellation and `setxid`;
/// programs that use real-time signals usually count up from `SIGRTMIN()`, so one near the
/// top is the least likely to collide. If the program handles it anyway, stopping refuses
/// ([`StopError::SignalInUse`]) instead of stealing it.
pub const STOP_SIGNAL: c_int = 60;

/// Most threads one stop can track (the handler's slots are preallocated).
pub const MAX_THREADS: usize = 4096;

/// How long a signalled thread may take to acknowledge before stopping gives up. A thread
/// handles the signal only once the scheduler runs it: a low-priority thread on a machine
/// whose cores are busy (a compiler building the next patch) can wait hundreds of ms.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// `pause` iterations a stopped thread spins before it sleeps on the futex.
const SPINS_BEFORE_SLEEP: u32 = 2_000;

const MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE: c_int = 1 << 5;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE: c_int = 1 << 6;

/// One other thread's state during a stop. Written by the controller (tid, gone) and by the
/// thread's own handler (rip and rsp, then ack).
struct Slot {
    tid: AtomicI32,
    /// The session the thread acknowledged last (0: none).
    ack: AtomicU32,
    rip: AtomicU64,
    rsp: AtomicU64,
    /// The thread exited (or is a zombie) before acknowledging: nothing to wait for.
    gone: AtomicBool,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            tid: AtomicI32::new(0),
            ack: AtomicU32::new(0),
            rip: AtomicU64::new(0),
            rsp: AtomicU64::new(0),
            gone: AtomicBool::new(false),
        }
    }
}

static SLOTS: [Slot; MAX_THREADS] = [const { Slot::new() }; MAX_THREADS];
/// Slots in use by the current session.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// The stop in progress (0: none). Stopped threads wait while it equals their session; a
/// futex word, hence 32 bits.
static SESSION: AtomicU32 = AtomicU32::new(0);
static LAST_SESSION: AtomicU32 = AtomicU32::new(0);
/// One stop at a time, process-wide.
static STOP_LOCK: Mutex<()> = Mutex::new(());
/// Thread id holding [`STOP_LOCK`], to refuse a nested call instead of deadlocking.
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Whether `membarrier` sync-core is registered for this process.
static MEMBARRIER: OnceLock<bool> = OnceLock::new();

/// A thread held in the stop handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoppedThread {
    /// Its kernel thread id.
    pub tid: i32,
    /// The instruction it will execute next when released.
    pub ip: u64,
    /// Its stack pointer when interrupted: the frames it will return through lie above it.
    pub sp: u64,
}

/// The threads stopped for the closure of [`with_other_threads_stopped`].
pub struct StoppedThreads {
    count: usize,
    session: u32,
}

impl StoppedThreads {
    /// Every stopped thread with its instruction and stack pointers. Reads preallocated slots: no
    /// allocation, so it may be used while the others are stopped.
    pub fn iter(&self) -> impl Iterator<Item = StoppedThread> + '_ {
        SLOTS[..self.count]
            .iter()
            .filter(|slot| {
                !slot.gone.load(Ordering::Relaxed)
                    && slot.ack.load(Ordering::Acquire) == self.session
            })
            .map(|slot| StoppedThread {
                tid: slot.tid.load(Ordering::Relaxed),
                ip: slot.rip.load(Ordering::Relaxed),
                sp: slot.rsp.load(Ordering::Relaxed),
            })
    }

    /// How many threads are stopped.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True when this is the only thread of the process.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why the other threads could not be stopped. Every thread that was stopped is running again.
#[derive(Debug)]
pub enum StopError {
    /// The program already handles (or ignores) [`STOP_SIGNAL`]; it is not taken from it.
    SignalInUse { signal: c_int },
    /// [`STOP_SIGNAL`] is not a real-time signal on this system.
    SignalUnavailable { signal: c_int },
    /// Called from inside the closure of another stop on this thread.
    Reentrant,
    /// This thread did not acknowledge within [`ACK_TIMEOUT`] (it may block the signal).
    NotAcknowledged { tid: i32, waited: Duration },
    /// More than [`MAX_THREADS`] other threads.
    TooManyThreads { limit: usize },
    /// A system call failed.
    Os {
        action: &'static str,
        error: io::Error,
    },
}

impl fmt::Display for StopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopError::SignalInUse { signal } => write!(
                f,
                "signal {signal} is already handled by the program; hot patching needs it to stop threads"
            ),
            StopError::SignalUnavailable { signal } => {
                write!(f, "signal {signal} is not a real-time signal on this system")
            }
            StopError::Reentrant => {
                write!(f, "threads are already stopped by this thread (nested stop)")
            }
            StopError::NotAcknowledged { tid, waited } => write!(
                f,
                "thread {tid} did not stop within {} ms (does it block signal {STOP_SIGNAL}?)",
                waited.as_millis()
            ),
            StopError::TooManyThreads { limit } => {
                write!(f, "more than {limit} threads: cannot stop them all")
            }
            StopError::Os { action, error } => write!(f, "{action} failed: {error}"),
        }
    }
}

impl std::error::Error for StopError {}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The stop handler: record RIP and RSP, acknowledge, wait for release, serialise.
extern "C" fn on_stop_signal(_signal: c_int, _info: *mut libc::siginfo_t, context: *mut c_void) {
    let session = SESSION.load(Ordering::Acquire);
    if session == 0 {
        return; // a late signal from a stop that already gave up
    }
    let tid = gettid();
    let count = COUNT.load(Ordering::Acquire).min(MAX_THREADS);
    let Some(slot) = SLOTS[..count]
        .iter()
        .find(|slot| slot.tid.load(Ordering::Relaxed) == tid)
    else {
        return;
    };
    // SAFETY: with SA_SIGINFO the kernel passes a valid `ucontext_t` as the third argument,
    // alive for the handler's duration; we only read it.
    let registers = unsafe { (*(context as *const libc::ucontext_t)).uc_mcontext.gregs };
    slot.rip
        .store(registers[libc::REG_RIP as usize] as u64, Ordering::Relaxed);
    slot.rsp
        .store(registers[libc::REG_RSP as usize] as u64, Ordering::Relaxed);
    slot.ack.store(session, Ordering::Release);
    // SAFETY: errno is this thread's own; the interrupted code may be about to read it, and
    // the futex wait below can overwrite it (EAGAIN, EINTR), so it is put back.
    let errno = unsafe { *libc::__errno_location() };
    wait_for_release(session);
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    // SAFETY: cpuid exists on every x86_64 processor. It is serialising: instructions
    // fetched after it see the code as written before the release. (`unsafe` until Rust 1.87.)
    #[allow(unused_unsafe)]
    let _ = unsafe { core::arch::x86_64::__cpuid(0) };
}

/// Spins briefly, then sleeps on the futex, while `session` is the current stop.
fn wait_for_release(session: u32) {
    for _ in 0..SPINS_BEFORE_SLEEP {
        if SESSION.load(Ordering::Acquire) != session {
            return;
        }
        std::hint::spin_loop();
    }
    while SESSION.load(Ordering::Acquire) == session {
        // SAFETY: FUTEX_WAIT on a live static u32; returns at once if it no longer holds
        // `session`, and on wake-up or interruption, after which the loop re-checks.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                SESSION.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                session,
                std::ptr::null::<libc::timespec>(),
            )
        };
    }
}

/// Installs the handler, or checks it is still ours; refuses a signal the program uses.
fn ensure_handler() -> Result<(), StopError> {
    if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&STOP_SIGNAL) {
        return Err(StopError::SignalUnavailable {
            signal: STOP_SIGNAL,
        });
    }
    let ours = on_stop_signal as extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void)
        as libc::sighandler_t;
    // SAFETY: sigaction is plain data; all-zero is a valid (empty) value.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null `act` only queries the current disposition into `current`.
    if unsafe { libc::sigaction(STOP_SIGNAL, std::ptr::null(), &mut current) } != 0 {
        return Err(os_error("sigaction (query)"));
    }
    if current.sa_sigaction == ours {
        return Ok(());
    }
    if current.sa_sigaction != libc::SIG_DFL {
        return Err(StopError::SignalInUse {
            signal: STOP_SIGNAL,
        });
    }
    // SAFETY: as above, a zeroed sigaction is valid; every field is set below.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = ours;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
    // SAFETY: `sa_mask` is a valid sigset_t to fill. Blocking every signal in the handler
    // keeps other handlers from running code on a stopped thread.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    // SAFETY: installs an async-signal-safe handler (atomics, gettid, futex, cpuid only).
    if unsafe { libc::sigaction(STOP_SIGNAL, &action, std::ptr::null_mut()) } != 0 {
        return Err(os_error("sigaction (install)"));
    }
    Ok(())
}

fn os_error(action: &'static str) -> StopError {
    StopError::Os {
        action,
        error: io::Error::last_os_error(),
    }
}

/// Registers for `membarrier` sync-core once. False when the kernel lacks it (before 4.16):
/// then the `cpuid` each stopped thread executes before resuming is the only serialisation.
fn membarrier_registered() -> bool {
    *MEMBARRIER.get_or_init(|| {
        // SAFETY: membarrier registration takes (cmd, flags, cpu_id) and touches no memory.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            ) == 0
        }
    })
}

/// Makes every core running a thread of this process serialise its instruction fetch.
fn sync_cores() {
    if membarrier_registered() {
        // SAFETY: as in `membarrier_registered`; registration succeeded, so this command
        // is allowed. Failure would leave only the per-thread cpuid, which still suffices.
        unsafe {
            libc::syscall(
                libc::SYS_membarrier,
                MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE,
                0,
                0,
            )
        };
    }
}

/// Calls `each` with the id of every thread in `/proc/self/task`, without allocating.
fn for_each_task(mut each: impl FnMut(i32) -> Result<(), StopError>) -> Result<(), StopError> {
    // SAFETY: opens a NUL-terminated constant path read-only.
    let fd = unsafe {
        libc::open(
            c"/proc/self/task".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(os_error("open /proc/self/task"));
    }
    let mut buffer = [0u64; 512]; // 8-byte aligned, as linux_dirent64 wants
    let result = loop {
        // SAFETY: getdents64 writes at most `len` bytes into our buffer.
        let read = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd,
                buffer.as_mut_ptr(),
                std::mem::size_of_val(&buffer),
            )
        };
        if read < 0 {
            break Err(os_error("getdents64 /proc/self/task"));
        }
        if read == 0 {
            break Ok(());
        }
        // SAFETY: the kernel initialised the first `read` bytes of the buffer.
        let bytes =
            unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), read as usize) };
        let mut offset = 0;
        let mut failed = None;
        while offset + 19 <= bytes.len() {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[].
            let record = u16::from_ne_bytes([bytes[offset + 16], bytes[offset + 17]]) as usize;
            let name = &bytes[offset + 19..offset + record];
            if let Some(tid) = parse_tid(name) {
                if let Err(error) = each(tid) {
                    failed = Some(error);
                    break;
                }
            }
            offset += record.max(1);
        }
        if let Some(error) = failed {
            break Err(error);
        }
    };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    result
}

/// A NUL-terminated decimal name, or None ("." and "..").
fn parse_tid(name: &[u8]) -> Option<i32> {
    let digits = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0i32, |n, d| {
        n.checked_mul(10)?.checked_add((d - b'0') as i32)
    })
}

/// True when `tid` has exited or is a zombie (an exited thread-group leader stays listed).
fn thread_gone(tid: i32) -> bool {
    // SAFETY: signal 0 only checks that the thread exists.
    if unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) } != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let mut path = [0u8; 48];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut at = prefix.len() + write_decimal(&mut path[prefix.len()..], tid as u32);
    path[at..at + 5].copy_from_slice(b"/stat");
    at += 5;
    path[at] = 0;
    // SAFETY: `path` is NUL-terminated (at < 48: 16 + 10 digits + 5 + 1).
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return true;
    }
    let mut stat = [0u8; 512];
    // SAFETY: reads at most `stat.len()` bytes into the stack buffer.
    let read = unsafe { libc::read(fd, stat.as_mut_ptr().cast(), stat.len()) };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    let stat = &stat[..read.max(0) as usize];
    // "tid (comm) S ...": the state follows the last ')'.
    match stat.iter().rposition(|&b| b == b')') {
        Some(paren) => matches!(stat.get(paren + 2), Some(b'Z' | b'X')),
        None => false,
    }
}

fn write_decimal(out: &mut [u8], mut n: u32) -> usize {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}

/// Ends the session on every exit path (errors and panics included): wakes the stopped
/// threads, and measures how long they were held.
struct Release {
    started: Option<Instant>,
}

impl Release {
    fn release(&mut self) -> Duration {
        sync_cores();
        SESSION.store(0, Ordering::Release);
        // SAFETY: FUTEX_WAKE on a live static u32 wakes every waiter; touches no memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                SESSION.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                i32::MAX,
            )
        };
        OWNER.store(0, Ordering::Release);
        self.started.take().map(|t| t.elapsed()).unwrap_or_default()
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if SESSION.load(Ordering::Relaxed) != 0 {
            self.release();
        }
    }
}

/// Stops every other thread of the process, runs `closure` with their instruction and stack
/// pointers, then releases them. Returns the closure's value and how long the threads were held.
///
/// After the closure, before release, instruction fetch is serialised on every core with
/// `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE)` where the kernel has it (4.16+);
/// each released thread also executes `cpuid`, which alone satisfies the cross-modifying-code
/// rule on older kernels. Only one stop runs at a time (callers queue on a global mutex).
///
/// The closure runs while other threads may hold any lock, the allocator's included: it must
/// not allocate, lock, print or panic. (A panic still releases everyone while unwinding, but
/// the panic machinery allocates first and may block on a stopped thread's lock.)
pub fn with_other_threads_stopped<R>(
    closure: impl FnOnce(&StoppedThreads) -> R,
) -> Result<(R, Duration), StopError> {
    let me = gettid();
    if OWNER.load(Ordering::Acquire) == me {
        return Err(StopError::Reentrant);
    }
    let _serial = STOP_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    ensure_handler()?;
    membarrier_registered();
    OWNER.store(me, Ordering::Release);

    let mut session = LAST_SESSION.load(Ordering::Relaxed).wrapping_add(1);
    if session == 0 {
        session = 1;
    }
    LAST_SESSION.store(session, Ordering::Relaxed);
    COUNT.store(0, Ordering::Release);
    let mut release = Release {
        started: Some(Instant::now()),
    };
    SESSION.store(session, Ordering::Release);
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };

    let mut count = 0usize;
    loop {
        let before = count;
        for_each_task(|tid| {
            if tid == me
                || SLOTS[..count]
                    .iter()
                    .any(|slot| slot.tid.load(Ordering::Relaxed) == tid)
            {
                return Ok(());
            }
            if count == MAX_THREADS {
                return Err(StopError::TooManyThreads { limit: MAX_THREADS });
            }
            let slot = &SLOTS[count];
            slot.tid.store(tid, Ordering::Relaxed);
            slot.ack.store(0, Ordering::Relaxed);
            slot.gone.store(false, Ordering::Relaxed);
            count += 1;
            COUNT.store(count, Ordering::Release);
            // SAFETY: tgkill sends our signal to one thread of this process; the handler
            // is installed and finds the slot published just above.
            if unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, STOP_SIGNAL) } != 0 {
                let error = io::Error::last_os_error();
                if error.raw_os_error() != Some(libc::ESRCH) {
                    return Err(StopError::Os {
                        action: "tgkill",
                        error,
                    });
                }
                slot.gone.store(true, Ordering::Relaxed); // exited meanwhile
            }
            Ok(())
        })?;
        if count == before {
            break; // a full scan found no thread we had not stopped
        }
        wait_for_acks(&SLOTS[before..count], session)?;
    }
    let stopped = StoppedThreads { count, session };
    let value = closure(&stopped);
    let held = release.release();
    Ok((value, held))
}

/// Waits until each slot acknowledged `session` or its thread is gone.
fn wait_for_acks(slots: &[Slot], session: u32) -> Result<(), StopError> {
    let signalled = Instant::now();
    let mut last_liveness_check = signalled;
    let mut rounds = 0u32;
    loop {
        let pending = || {
            slots.iter().filter(|slot| {
                !slot.gone.load(Ordering::Relaxed) && slot.ack.load(Ordering::Acquire) != session
            })
        };
        if pending().next().is_none() {
            return Ok(());
        }
        let now = Instant::now();
        if now.duration_since(last_liveness_check) >= Duration::from_millis(1) {
            last_liveness_check = now;
            for slot in pending() {
                if thread_gone(slot.tid.load(Ordering::Relaxed)) {
                    slot.gone.store(true, Ordering::Relaxed);
                }
            }
        }
        let waited = now.duration_since(signalled);
        if waited >= ACK_TIMEOUT {
            if let Some(slot) = pending().next() {
                return Err(StopError::NotAcknowledged {
                    tid: slot.tid.load(Ordering::Relaxed),
                    waited,
                });
            }
        }
        rounds += 1;
        if rounds < 100 {
            std::thread::yield_now();
        } else {
            // Give the signalled threads the CPU: they may be runnable on this core.
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_task_names() {
        assert_eq!(parse_tid(b"1234\0"), Some(1234));
        assert_eq!(parse_tid(b".\0"), None);
        assert_eq!(parse_tid(b"..\0"), None);
        assert_eq!(parse_tid(b"\0"), None);
        assert_eq!(parse_tid(b"99999999999\0"), None);
    }

    #[test]
    fn writes_decimals() {
        let mut out = [0u8; 10];
        let len = write_decimal(&mut out, 40213);
        assert_eq!(&out[..len], b"40213");
        assert_eq!(write_decimal(&mut out, 0), 1);
        assert_eq!(out[0], b'0');
    }

    #[test]
    fn this_thread_is_alive() {
        assert!(!thread_gone(gettid()));
        assert!(thread_gone(i32::MAX));
    }
}
