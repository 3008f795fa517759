//! Refusals, recovery and faults under a real `hotpatch run`: every edit that can't be
//! applied is refused with a reason while the program keeps running its old code; compile
//! errors, undo, restart, crashes and a killed hotpatch leave the user in control.

use hotreload_abi::events::{Event, RefusalKind};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use testkit::fixture::FixtureCrate;
use tests::live::{field, session_dirs, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/recovery.rs");

fn start(name: &str) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    LiveSession::start(FixtureCrate::create_hot(base, name, PROGRAM), &[])
}

fn word(session: &mut LiveSession) -> String {
    field(&session.line_where(|l| l.starts_with("frames=")), "word").to_string()
}

/// What a refusal must say: its kind, a word of one of its items, a part of its reason.
struct Expected {
    kind: RefusalKind,
    item: &'static str,
    reason: &'static str,
}

/// Applies an edit that must be refused as `expected`, checks the program still runs the old
/// code, then undoes the edit.
fn refused(session: &mut LiveSession, from: &str, to: &str, expected: Expected) {
    session.fixture.replace(from, to);
    let refusal = session.event_skipping("patch-refused");
    let Event::PatchRefused {
        kind,
        items,
        reason: why,
    } = &refusal
    else {
        panic!("not a patch-refused event: {refusal:?}");
    };
    assert_eq!(*kind, expected.kind, "{refusal:?}");
    assert!(
        items.iter().any(|item| item.contains(expected.item)),
        "expected `{}` in the items: {refusal:?}",
        expected.item
    );
    let reason = expected.reason;
    assert!(why.contains(reason), "expected `{reason}` in: {why}");
    assert!(
        why.contains("src/main.rs"),
        "the reason names the edited file: {why}"
    );
    session.drain_lines();
    assert_eq!(
        word(session),
        "alpha",
        "the program keeps running its old code"
    );
    session.fixture.replace(to, from);
    session.event_skipping("no-change");
}

/// The `message` of a `warning` event.
fn message_of(warning: &Event) -> &str {
    match warning {
        Event::Warning { message } => message,
        other => panic!("not a warning: {other:?}"),
    }
}

/// The `signal` of an `app-exited` event.
fn signal_of(exited: &Event) -> Option<i32> {
    match exited {
        Event::AppExited { signal, .. } => *signal,
        other => panic!("not app-exited: {other:?}"),
    }
}

#[test]
fn unpatchable_edits_are_refused_and_the_old_code_keeps_running() {
    let mut session = start("recovery-refusals");
    assert_eq!(word(&mut session), "alpha");
    refused(
        &mut session,
        "FRAMES: AtomicU64 = AtomicU64::new(0)",
        "FRAMES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0)",
        Expected {
            kind: RefusalKind::DataLayout,
            item: "FRAMES",
            reason: "FRAMES",
        },
    );
    refused(
        &mut session,
        "fn risky(n: u64) -> u64 {\n    n + 1",
        "fn risky(n: u64) -> u64 {\n    thread_local! { static EXTRA: std::cell::Cell<u64> = const { std::cell::Cell::new(0) }; }\n    EXTRA.with(|e| e.set(e.get() + 1));\n    n + EXTRA.with(|e| e.get())",
        Expected {
            kind: RefusalKind::NewThreadLocal,
            item: "EXTRA",
            reason: "thread-local",
        },
    );
    refused(
        &mut session,
        "fn risky(n: u64) -> u64 {",
        "fn risky(n: u64) -> u128 {\n    n as u128 + 1\n}\nfn unused(n: u64) -> u64 {",
        Expected {
            kind: RefusalKind::Signature,
            item: "recovery_refusals::risky",
            reason: "signature of `recovery_refusals::risky` changed",
        },
    );
    // `main` is redirected like any function, but it is running and never returns: the
    // patch says so and the program keeps running its loop.
    let patch = session.edit("print(\"hello=one\");", "print(\"hello=two\");");
    let Event::PatchApplied { notes, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert!(
        notes
            .iter()
            .any(|note| note.contains("`recovery_refusals::main` changed")
                && note.contains("takes effect at the next start")),
        "{patch:?}"
    );
    session.drain_lines();
    assert_eq!(word(&mut session), "alpha", "the loop keeps running");
    // After all that, a good edit still patches.
    session.edit("word=alpha", "word=beta");
    assert_eq!(word(&mut session), "beta");
}

#[test]
fn compile_errors_keep_the_old_code_and_the_next_good_save_patches() {
    let mut session = start("recovery-compile");
    session.fixture.replace("word=alpha\")", "word=alpha\") +");
    let error = session.event_skipping("compile-error");
    let Event::CompileError { rendered } = &error else {
        panic!("not compile-error: {error:?}")
    };
    assert!(rendered.contains("error"), "{error:?}");
    session.drain_lines();
    assert_eq!(word(&mut session), "alpha");
    session.fixture.replace("word=alpha\") +", "word=fixed\")");
    session.event("patch-applied");
    // Waited for, not taken as the next line: a line printed before the patch may still be
    // on its way through the pipe when the event arrives.
    session.line_where(|line| line.contains("word=fixed"));
}

#[test]
fn undo_points_the_slots_back_one_patch_at_a_time() {
    let mut session = start("recovery-undo");
    session.edit("word=alpha", "word=beta");
    session.edit("word=beta", "word=gamma");
    assert_eq!(word(&mut session), "gamma");
    for expected in ["beta", "alpha"] {
        session.signal_hotpatch(libc::SIGUSR2);
        session.event("rolled-back");
        session.drain_lines();
        assert_eq!(word(&mut session), expected);
    }
    session.signal_hotpatch(libc::SIGUSR2);
    let warning = session.event_skipping("warning");
    assert!(
        message_of(&warning).contains("nothing to undo"),
        "{warning:?}"
    );
    // Editing after an undo patches against the running build as usual.
    session.edit("word=gamma", "word=delta");
    assert_eq!(word(&mut session), "delta");
}

#[test]
fn restart_runs_the_current_source_in_a_new_process() {
    let mut session = start("recovery-restart");
    let first_pid = session.pid;
    session
        .fixture
        .replace("print(\"hello=one\");", "print(\"hello=two\");");
    session.event_skipping("patch-applied"); // main runs its loop: takes effect at the next start
    session.signal_hotpatch(libc::SIGUSR1);
    session.event_skipping("app-exited");
    session.restarted();
    assert_ne!(session.pid, first_pid);
    assert_eq!(session.line_where(|l| l.starts_with("hello=")), "hello=two");
    assert!(
        !Path::new(&format!("/proc/{first_pid}")).exists(),
        "the old program is gone"
    );
    // And the new program is patched like the first one.
    session.edit("word=alpha", "word=after-restart");
    assert_eq!(word(&mut session), "after-restart");
}

#[test]
fn a_crash_is_reported_and_a_restart_brings_the_program_back() {
    let mut session = start("recovery-crash");
    session.fixture.replace(
        "    n + 1\n",
        "    if n == 7 {\n        std::process::abort();\n    }\n    n + 1\n",
    );
    let exited = session.event_skipping("app-exited");
    assert_eq!(signal_of(&exited), Some(libc::SIGABRT), "{exited:?}");
    let warning = session.event("warning");
    assert!(message_of(&warning).contains("restart"), "{warning:?}");
    session
        .fixture
        .replace("        std::process::abort();\n", "        return 100;\n");
    session.signal_hotpatch(libc::SIGUSR1);
    session.restarted();
    session.line_where(|l| l.starts_with("hello=")); // the new program's first line
    assert_eq!(session.line_where(|l| l.starts_with("risky=")), "risky=100");
}

#[test]
fn quitting_stops_the_program_and_hotpatch() {
    let mut session = start("recovery-quit");
    let pid = session.pid;
    session.signal_hotpatch(libc::SIGTERM);
    let exited = session.event_skipping("app-exited");
    assert_eq!(signal_of(&exited), Some(libc::SIGTERM), "{exited:?}");
    assert_eq!(session.wait_hotpatch_exit(), Some(128 + libc::SIGTERM));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn killing_hotpatch_leaves_the_program_running() {
    let mut session = start("recovery-orphan");
    session.signal_hotpatch(libc::SIGKILL);
    session.wait_hotpatch_exit();
    session.drain_lines();
    for _ in 0..5 {
        assert_eq!(
            word(&mut session),
            "alpha",
            "the program keeps running without hotpatch"
        );
    }
}

#[test]
fn the_socket_is_private_and_sessions_do_not_share_it() {
    let first = start("recovery-socket-a");
    let second = start("recovery-socket-b");
    let socket_of = |pid: u32| {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let entry = environ
            .split(|&b| b == 0)
            .find_map(|e| e.strip_prefix(b"HOTPATCH_SOCKET="))
            .expect("HOTPATCH_SOCKET");
        std::path::PathBuf::from(String::from_utf8(entry.to_vec()).unwrap())
    };
    let (a, b) = (socket_of(first.pid), socket_of(second.pid));
    assert_ne!(a, b);
    for socket in [&a, &b] {
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(socket), 0o600, "{}", socket.display());
        assert_eq!(
            mode(socket.parent().unwrap()),
            0o700,
            "{}",
            socket.display()
        );
    }
}

#[test]
fn a_session_leaves_nothing_behind_when_it_quits_or_is_killed() {
    let mut session = start("recovery-cleanup");
    session.edit("word=alpha", "word=beta");
    let (hotpatch, program) = (session.hotpatch_pid(), session.pid);
    assert_eq!(
        session_dirs(&session, hotpatch, program).len(),
        4,
        "two socket directories (the program's, the commands'), an image directory and the session's entry while it runs"
    );
    session.signal_hotpatch(libc::SIGTERM);
    session.wait_hotpatch_exit();
    assert_eq!(
        session_dirs(&session, hotpatch, program),
        Vec::<std::path::PathBuf>::new(),
        "quitting removes them"
    );

    // Killed outright, a session can't clean up: the next one does.
    let mut killed = start("recovery-cleanup-killed");
    killed.edit("word=alpha", "word=beta");
    let (hotpatch, program) = (killed.hotpatch_pid(), killed.pid);
    assert_eq!(session_dirs(&killed, hotpatch, program).len(), 4);
    killed.signal_hotpatch(libc::SIGKILL);
    killed.wait_hotpatch_exit();
    // SAFETY: kill(2) on the program this test started through hotpatch, now orphaned.
    unsafe { libc::kill(program as i32, libc::SIGKILL) };
    while Path::new(&format!("/proc/{program}/exe")).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Not asserted here: they are left, but a session another test starts meanwhile may
    // already have removed them.
    let mut next = LiveSession::start(killed.fixture.clone(), &[]);
    next.edit("word=beta", "word=gamma");
    assert_eq!(
        session_dirs(&killed, hotpatch, program),
        Vec::<std::path::PathBuf>::new(),
        "the next session removed what the killed one left"
    );
}

#[test]
fn a_user_whose_umask_lets_the_group_write_still_gets_patches() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::create_hot(base, "recovery-umask", PROGRAM);
    let mut session = LiveSession::start_with_umask(fixture, &[], Some(0o002));
    session.edit("word=alpha", "word=beta");
    assert_eq!(word(&mut session), "beta");
}
