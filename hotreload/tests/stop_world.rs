//! Stopping the other threads of this very process: real threads, real signals.
//!
//! Tests take `SERIAL` so one test's odd thread (one that blocks the stop signal, say) does
//! not make another test's stop fail.

use hotreload::stop_world::{
    with_other_threads_stopped, StopError, StoppedThread, ACK_TIMEOUT, STOP_SIGNAL,
};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Threads that count as fast as they can until dropped.
struct Busy {
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tids: Vec<i32>,
    handles: Vec<thread::JoinHandle<()>>,
}

impl Busy {
    fn start(n: usize) -> Busy {
        let counter = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let handles = (0..n)
            .map(|_| {
                let (counter, stop, tx) = (counter.clone(), stop.clone(), tx.clone());
                thread::spawn(move || {
                    tx.send(gettid()).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let tids = (0..n).map(|_| rx.recv().unwrap()).collect();
        Busy {
            counter,
            stop,
            tids,
            handles,
        }
    }

    fn count(&self) -> u64 {
        self.counter.load(Ordering::Relaxed)
    }

    fn assert_running(&self) {
        let before = self.count();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.count() == before {
            assert!(Instant::now() < deadline, "busy threads did not resume");
            thread::yield_now();
        }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// Copies the stopped threads into a fixed array: no allocation while others are stopped.
fn snapshot(stopped: &hotreload::StoppedThreads) -> ([StoppedThread; 64], usize) {
    let mut out = [StoppedThread {
        tid: 0,
        ip: 0,
        sp: 0,
    }; 64];
    let mut n = 0;
    for thread in stopped.iter().take(64) {
        out[n] = thread;
        n += 1;
    }
    (out, n)
}

/// Spins without allocating, to give stopped threads a chance to (wrongly) run.
fn hold(duration: Duration) {
    let start = Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

#[test]
fn stops_every_other_thread_and_reports_where_it_was() {
    let _serial = serial();
    let busy = Busy::start(4);
    busy.assert_running();
    let ((before, after, (threads, n)), held) = with_other_threads_stopped(|stopped| {
        let before = busy.count();
        hold(Duration::from_millis(5));
        (before, busy.count(), snapshot(stopped))
    })
    .unwrap();
    assert_eq!(before, after, "a thread kept counting while stopped");
    let threads = &threads[..n];
    for tid in &busy.tids {
        let thread = threads
            .iter()
            .find(|t| t.tid == *tid)
            .unwrap_or_else(|| panic!("thread {tid} not among the stopped {threads:?}"));
        assert_ne!(thread.ip, 0);
    }
    assert!(!threads.iter().any(|t| t.tid == gettid()));
    assert!(held >= Duration::from_millis(5), "held {held:?}");
    busy.assert_running();
}

#[test]
fn threads_blocked_in_syscalls_stop_and_resume() {
    let _serial = serial();
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fresh descriptors into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: each descriptor was just created and is owned by exactly one File.
    let (mut reader, mut writer) =
        unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let sleeper = thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let start = Instant::now();
        thread::sleep(Duration::from_millis(300));
        start.elapsed()
    });
    let pipe_reader = thread::spawn(move || {
        tx2.send(gettid()).unwrap();
        let mut buffer = [0u8; 5];
        reader.read_exact(&mut buffer).map(|()| buffer)
    });
    let tids = [rx.recv().unwrap(), rx.recv().unwrap()];
    thread::sleep(Duration::from_millis(20)); // both are blocked now
    for _ in 0..20 {
        let ((threads, n), _) = with_other_threads_stopped(snapshot).unwrap();
        for tid in tids {
            assert!(
                threads[..n].iter().any(|t| t.tid == tid),
                "blocked thread {tid} was not stopped"
            );
        }
        thread::sleep(Duration::from_millis(5));
    }
    writer.write_all(b"hello").unwrap();
    assert_eq!(&pipe_reader.join().unwrap().unwrap(), b"hello");
    let slept = sleeper.join().unwrap();
    assert!(slept >= Duration::from_millis(300), "slept only {slept:?}");
}

#[test]
fn a_panicking_closure_releases_the_threads() {
    let _serial = serial();
    let busy = Busy::start(2);
    let outcome = std::panic::catch_unwind(|| {
        with_other_threads_stopped(|_| -> () { panic!("closure panicked on purpose") })
    });
    assert!(outcome.is_err());
    busy.assert_running();
    let (n, _) = with_other_threads_stopped(|stopped| stopped.len()).unwrap();
    assert!(n >= 2);
}

#[test]
fn a_nested_stop_is_refused() {
    let _serial = serial();
    let (inner, _) = with_other_threads_stopped(|_| {
        matches!(
            with_other_threads_stopped(|_| ()),
            Err(StopError::Reentrant)
        )
    })
    .unwrap();
    assert!(inner);
}

#[test]
fn a_thread_that_blocks_the_signal_fails_the_stop_by_name_and_others_resume() {
    let _serial = serial();
    let busy = Busy::start(2);
    let (tid_tx, tid_rx) = mpsc::channel();
    let (quit_tx, quit_rx) = mpsc::channel::<()>();
    let blocker = thread::spawn(move || {
        // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid sigset pointer, valid signal; blocks it for this thread only.
        unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, STOP_SIGNAL);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        tid_tx.send(gettid()).unwrap();
        quit_rx.recv().unwrap();
    });
    let tid = tid_rx.recv().unwrap();
    match with_other_threads_stopped(|_| ()) {
        Err(StopError::NotAcknowledged { tid: named, waited }) => {
            assert_eq!(named, tid);
            assert!(
                waited >= ACK_TIMEOUT,
                "gave up only after the bound: {waited:?}"
            );
        }
        other => panic!("expected NotAcknowledged, got {other:?}"),
    }
    busy.assert_running();
    quit_tx.send(()).unwrap();
    blocker.join().unwrap();
    with_other_threads_stopped(|_| ()).unwrap();
}

#[test]
fn threads_that_come_and_go_while_stopping() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let spawned = Arc::new(AtomicI32::new(0));
    let spawner = {
        let (stop, spawned) = (stop.clone(), spawned.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let children: Vec<_> = (0..4)
                    .map(|_| thread::spawn(|| std::hint::black_box(1 + 1)))
                    .collect();
                for child in children {
                    child.join().unwrap();
                }
                spawned.fetch_add(4, Ordering::Relaxed);
            }
        })
    };
    for _ in 0..200 {
        with_other_threads_stopped(|stopped| stopped.len()).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    spawner.join().unwrap();
    assert!(spawned.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_stopped_thread_finds_its_errno_unchanged() {
    let _serial = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let changed = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, changed) = (stop.clone(), changed.clone());
        thread::spawn(move || {
            // SAFETY: errno is this thread's own variable.
            let errno = || unsafe { libc::__errno_location() };
            // SAFETY: as above.
            unsafe { *errno() = 4242 };
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: as above.
                if unsafe { *errno() } != 4242 {
                    changed.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: as above.
                    unsafe { *errno() = 4242 };
                }
            }
        })
    };
    for _ in 0..100 {
        with_other_threads_stopped(|_| hold(Duration::from_micros(300))).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    assert_eq!(changed.load(Ordering::Relaxed), 0);
}
