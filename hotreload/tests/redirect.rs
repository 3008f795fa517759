//! Entry redirects on this test's own functions: real code, real threads, no mocks.
//!
//! Each test redirects its own pair of functions; `SERIAL` keeps their stops (and timings)
//! from overlapping.

use hotreload::{redirects, set_entries, EntryChange, RedirectError, JMP_LEN, MAX_ATTEMPTS};
use object::{Object, ObjectSymbol};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

type Function = fn(u64) -> u64;

fn address(function: Function) -> u64 {
    function as usize as u64
}

fn entry_bytes(entry: u64) -> [u8; 5] {
    // SAFETY: `entry` is one of this test's functions: mapped, readable code.
    unsafe { std::ptr::read_volatile(entry as *const [u8; 5]) }
}

/// Checks in the executable's symbol table that the function at `entry` is at least 5 bytes
/// long, so a jump over its entry stays inside it.
fn assert_room_for_a_jump(entry: u64) {
    let bias = hotreload::identity::executable().load_bias;
    let exe = std::fs::read("/proc/self/exe").unwrap();
    let file = object::File::parse(&*exe).unwrap();
    let symbol = file
        .symbols()
        .find(|s| s.address() + bias == entry && s.size() > 0)
        .unwrap_or_else(|| panic!("no sized symbol at {entry:#x}"));
    assert!(
        symbol.size() >= JMP_LEN,
        "{} is only {} bytes",
        symbol.name().unwrap_or("?"),
        symbol.size()
    );
}

fn redirect(entry: u64, target: u64) -> EntryChange {
    EntryChange {
        entry,
        target: Some(target),
    }
}

fn restore(entry: u64) -> EntryChange {
    EntryChange {
        entry,
        target: None,
    }
}

#[inline(never)]
fn basic_old(x: u64) -> u64 {
    black_box(x).wrapping_mul(3).wrapping_add(black_box(1))
}

#[inline(never)]
fn basic_new(x: u64) -> u64 {
    black_box(x).wrapping_mul(5).wrapping_add(black_box(2))
}

static BASIC_OLD: Function = basic_old;

#[test]
fn direct_calls_and_pointers_reach_the_new_function_until_restored() {
    let _serial = serial();
    let (old, new) = (address(basic_old), address(basic_new));
    assert_room_for_a_jump(old);
    let original = entry_bytes(old);
    assert_eq!((basic_old(10), black_box(BASIC_OLD)(10)), (31, 31));

    let report = set_entries(&[redirect(old, new)]).unwrap();
    assert_eq!(report.changed, 1);
    assert_eq!(entry_bytes(old)[0], 0xe9);
    assert_eq!((basic_old(10), black_box(BASIC_OLD)(10)), (52, 52));
    let table = redirects();
    let entry = table.iter().find(|r| r.entry == old).unwrap();
    assert_eq!((entry.target, entry.original), (new, original));

    // Redirecting again to the same place writes nothing.
    assert_eq!(set_entries(&[redirect(old, new)]).unwrap().changed, 0);

    let report = set_entries(&[restore(old)]).unwrap();
    assert_eq!(report.changed, 1);
    assert_eq!(entry_bytes(old), original);
    assert_eq!((basic_old(10), black_box(BASIC_OLD)(10)), (31, 31));
    assert!(!redirects().iter().any(|r| r.entry == old));
    // Restoring what is not redirected is a no-op.
    assert_eq!(set_entries(&[restore(old)]).unwrap().changed, 0);
}

#[inline(never)]
fn stress_old(x: u64) -> u64 {
    black_box(x).wrapping_mul(3).wrapping_add(black_box(1))
}

#[inline(never)]
fn stress_new(x: u64) -> u64 {
    black_box(x).wrapping_mul(5).wrapping_add(black_box(2))
}

static STRESS_OLD: Function = stress_old;

#[test]
fn eight_busy_threads_survive_200_redirect_restore_alternations() {
    let _serial = serial();
    let (old, new) = (address(stress_old), address(stress_new));
    assert_room_for_a_jump(old);
    let original = entry_bytes(old);
    let stop = Arc::new(AtomicBool::new(false));
    let (seen_old, seen_new, wrong, calls) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let workers: Vec<_> = (0..8)
        .map(|n| {
            let (stop, seen_old, seen_new, wrong, calls) = (
                stop.clone(),
                seen_old.clone(),
                seen_new.clone(),
                wrong.clone(),
                calls.clone(),
            );
            thread::spawn(move || {
                let mut x = n as u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_add(1) & 0xffff;
                    // Mostly through the stored pointer, every 16th call directly.
                    let result = if x & 15 == 0 {
                        stress_old(x)
                    } else {
                        black_box(STRESS_OLD)(x)
                    };
                    if result == x * 3 + 1 {
                        seen_old.fetch_add(1, Ordering::Relaxed);
                    } else if result == x * 5 + 2 {
                        seen_new.fetch_add(1, Ordering::Relaxed);
                    } else {
                        wrong.fetch_add(1, Ordering::Relaxed);
                    }
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    while calls.load(Ordering::Relaxed) < 10_000 {
        thread::yield_now();
    }

    let mut stops = Vec::new();
    let mut attempts = 0;
    let started = Instant::now();
    for round in 0..200 {
        let change = if round % 2 == 0 {
            redirect(old, new)
        } else {
            restore(old)
        };
        let report = set_entries(&[change]).unwrap();
        assert_eq!(report.changed, 1);
        stops.push(report.stopped_for);
        attempts += report.attempts;
        thread::sleep(Duration::from_micros(200)); // let the workers call the new state
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.join().expect("a worker crashed");
    }

    stops.sort();
    println!(
        "stress: 200 alternations with 8 busy threads in {elapsed:?}: stop median {:?}, max {:?}, min {:?}; {attempts} stops (retries: {}); calls {} (old {}, new {}), wrong {}",
        stops[stops.len() / 2],
        stops[stops.len() - 1],
        stops[0],
        attempts - 200,
        calls.load(Ordering::Relaxed),
        seen_old.load(Ordering::Relaxed),
        seen_new.load(Ordering::Relaxed),
        wrong.load(Ordering::Relaxed),
    );
    assert_eq!(wrong.load(Ordering::Relaxed), 0);
    assert!(seen_old.load(Ordering::Relaxed) > 0);
    assert!(seen_new.load(Ordering::Relaxed) > 0);
    assert_eq!(entry_bytes(old), original);
}

#[inline(never)]
fn panicky_old(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

#[inline(never)]
fn panicky_new(x: u64) -> u64 {
    if black_box(x) != u64::MAX {
        panic!("the new version panics on {x}");
    }
    x
}

static PANICKY_OLD: Function = panicky_old;

#[test]
fn a_panic_in_the_new_function_unwinds_through_the_jump_into_the_caller() {
    let _serial = serial();
    let (old, new) = (address(panicky_old), address(panicky_new));
    assert_room_for_a_jump(old);
    set_entries(&[redirect(old, new)]).unwrap();
    let through_pointer = std::panic::catch_unwind(|| black_box(PANICKY_OLD)(7));
    let direct = std::panic::catch_unwind(|| panicky_old(8));
    set_entries(&[restore(old)]).unwrap();
    let message = |payload: Box<dyn std::any::Any + Send>| {
        payload.downcast::<String>().map(|s| *s).unwrap_or_default()
    };
    assert_eq!(
        message(through_pointer.unwrap_err()),
        "the new version panics on 7"
    );
    assert_eq!(message(direct.unwrap_err()), "the new version panics on 8");
    assert_eq!(panicky_old(7), 8);
}

// A function whose thread spins at entry + 2, inside the bytes a jump would replace, and
// leaves only when the test moves its instruction pointer to `redirect_test_spin_exit`.
std::arch::global_asm!(
    ".text",
    ".p2align 4",
    ".globl redirect_test_spin_at_entry",
    ".type redirect_test_spin_at_entry, @function",
    "redirect_test_spin_at_entry:",
    "    nop",
    "    nop",
    "2:  jmp 2b",
    ".globl redirect_test_spin_exit",
    "redirect_test_spin_exit:",
    "    ret",
    "    int3",
    "    int3",
    "    int3",
    ".size redirect_test_spin_at_entry, . - redirect_test_spin_at_entry",
);

extern "C" {
    fn redirect_test_spin_at_entry();
    fn redirect_test_spin_exit();
}

/// Sends the interrupted thread to `redirect_test_spin_exit` (a `ret`).
extern "C" fn leave_spin(_: libc::c_int, _: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: SA_SIGINFO handlers get the interrupted thread's ucontext_t, which the kernel
    // restores on return; pointing RIP at a `ret` makes the spinning function return.
    unsafe {
        (*(context as *mut libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] =
            redirect_test_spin_exit as *const () as i64;
    }
}

#[inline(never)]
fn beside_old(x: u64) -> u64 {
    black_box(x).wrapping_add(100)
}

#[inline(never)]
fn beside_new(x: u64) -> u64 {
    black_box(x).wrapping_add(200)
}

#[test]
fn a_thread_inside_the_first_five_bytes_is_never_written_over() {
    let _serial = serial();
    let spin = redirect_test_spin_at_entry as *const () as u64;
    assert_eq!(entry_bytes(spin), [0x90, 0x90, 0xeb, 0xfe, 0xc3]);
    let leave_signal = libc::SIGRTMIN() + 3;
    // SAFETY: zeroed sigaction is valid; installs an SA_SIGINFO handler for a signal this
    // test binary uses for nothing else.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = leave_spin as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        assert_eq!(
            libc::sigaction(leave_signal, &action, std::ptr::null_mut()),
            0
        );
    }
    let spinner_tid = Arc::new(AtomicI32::new(0));
    let spinner = {
        let tid = spinner_tid.clone();
        thread::spawn(move || {
            // SAFETY: gettid cannot fail.
            tid.store(
                unsafe { libc::syscall(libc::SYS_gettid) } as i32,
                Ordering::Release,
            );
            // SAFETY: the function spins until the test sends `leave_signal`, then returns.
            unsafe { redirect_test_spin_at_entry() };
        })
    };
    while spinner_tid.load(Ordering::Acquire) == 0 {
        thread::yield_now();
    }
    thread::sleep(Duration::from_millis(10)); // it is spinning at entry + 2 now

    let refused = set_entries(&[redirect(spin, address(basic_new))]);
    match refused {
        Err(RedirectError::Busy {
            entry,
            tid,
            attempts,
        }) => {
            assert_eq!(entry, spin);
            assert_eq!(tid, spinner_tid.load(Ordering::Acquire));
            assert_eq!(attempts, MAX_ATTEMPTS);
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    assert_eq!(entry_bytes(spin), [0x90, 0x90, 0xeb, 0xfe, 0xc3]);
    assert!(!redirects().iter().any(|r| r.entry == spin));

    // A thread inside another function's entry does not hold up this one.
    let (old, new) = (address(beside_old), address(beside_new));
    let report = set_entries(&[redirect(old, new)]).unwrap();
    assert_eq!(report.attempts, 1);
    assert_eq!(beside_old(1), 201);
    set_entries(&[restore(old)]).unwrap();

    // SAFETY: the spinner is alive (it cannot leave without this signal).
    let sent = unsafe {
        use std::os::unix::thread::JoinHandleExt;
        libc::pthread_kill(spinner.as_pthread_t(), leave_signal)
    };
    assert_eq!(sent, 0);
    spinner.join().unwrap();
}

#[inline(never)]
fn refusal_old(x: u64) -> u64 {
    black_box(x).wrapping_mul(9)
}

#[inline(never)]
fn refusal_new(x: u64) -> u64 {
    black_box(x).wrapping_mul(10)
}

static NOT_CODE: AtomicU64 = AtomicU64::new(0);

#[test]
fn invalid_tables_are_refused_whole_and_nothing_is_written() {
    let _serial = serial();
    let (old, new) = (address(refusal_old), address(refusal_new));
    let original = entry_bytes(old);
    let data = &NOT_CODE as *const AtomicU64 as u64;

    // An executable page far away (mmap places it among the libraries, the test binary is
    // elsewhere): out of rel32 reach.
    // SAFETY: a fresh anonymous mapping, read+execute, never executed.
    let far = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(far, libc::MAP_FAILED);
    let far = far as u64;
    assert!(
        far.abs_diff(old) > 1 << 32,
        "the test needs a far page: {far:#x} vs {old:#x}"
    );

    let cases: Vec<(&str, Vec<EntryChange>)> = vec![
        ("out of reach", vec![redirect(old, far)]),
        ("entry not code", vec![redirect(data, new)]),
        ("target not code", vec![redirect(old, data)]),
        (
            "duplicate",
            vec![redirect(old, new), redirect(old, address(basic_new))],
        ),
        (
            "one bad change spoils the table",
            vec![redirect(old, new), redirect(data, new)],
        ),
        ("into its own entry", vec![redirect(old, old + 1)]),
    ];
    for (what, changes) in cases {
        let error = set_entries(&changes).expect_err(what);
        println!("{what}: {error}");
        let expected = match what {
            "out of reach" => {
                matches!(error, RedirectError::OutOfReach { entry, target } if entry == old && target == far)
            }
            "entry not code" | "one bad change spoils the table" => {
                matches!(error, RedirectError::EntryNotExecutable { entry } if entry == data)
            }
            "target not code" => {
                matches!(error, RedirectError::TargetNotExecutable { target, .. } if target == data)
            }
            "duplicate" => matches!(error, RedirectError::DuplicateEntry { entry } if entry == old),
            _ => matches!(error, RedirectError::TargetInsideEntry { .. }),
        };
        assert!(expected, "{what}: unexpected {error:?}");
        assert_eq!(entry_bytes(old), original, "{what}: bytes written");
        assert!(!redirects().iter().any(|r| r.entry == old), "{what}");
        assert_eq!(refusal_old(2), 18);
    }
    // SAFETY: unmaps the page mapped above; nothing points into it.
    unsafe { libc::munmap(far as *mut libc::c_void, 4096) };
}

#[test]
fn a_redirect_cycle_is_refused() {
    let _serial = serial();
    let (a, b) = (address(cycle_a), address(cycle_b));
    set_entries(&[redirect(a, b)]).unwrap();
    let refused = set_entries(&[redirect(b, a)]);
    assert!(
        matches!(refused, Err(RedirectError::Cycle { .. })),
        "{refused:?}"
    );
    assert_eq!(cycle_b(1), 3);
    set_entries(&[restore(a)]).unwrap();
    assert_eq!(cycle_a(1), 2);
}

#[inline(never)]
fn cycle_a(x: u64) -> u64 {
    black_box(x).wrapping_add(1)
}

#[inline(never)]
fn cycle_b(x: u64) -> u64 {
    black_box(x).wrapping_add(2)
}
