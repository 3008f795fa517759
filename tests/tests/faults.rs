//! Faults at every step of a patch: a late answer (safe-point mode), hotpatch killed or quit
//! while a patch is pending, while rustc runs or while the linker does, rustc killed, a full
//! disk. Each time the
//! program runs one consistent version (both halves of every line from the same edit), what
//! hotpatch reports agrees with what it runs (its own generation counter), and the next save,
//! run or attach carries on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, number, LiveSession, PATIENCE};

const PROGRAM: &str = include_str!("../fixtures/late_answer.rs");

/// A short answer timeout, so a patch held back to the next safe point is late at once.
const QUICK_TIMEOUT: [(&str, &str); 1] = [("HOTPATCH_ANSWER_TIMEOUT_MS", "500")];

/// The program's safe points: each [`Gate::open`] lets exactly one happen.
struct Gate(PathBuf);

impl Gate {
    fn new(fixture: &FixtureCrate) -> Gate {
        Gate(fixture.dir.join("safe-point"))
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }

    fn open(&self) {
        std::fs::write(&self.0, b"").unwrap();
    }
}

/// A fixture of its own (each test edits its sources).
fn fixture(name: &str) -> FixtureCrate {
    FixtureCrate::create_hot(Path::new(env!("CARGO_TARGET_TMPDIR")), name, PROGRAM)
}

/// Saves the edit from version `from` to `to`: both functions in one write.
fn edit_version(fixture: &FixtureCrate, from: &str, to: &str) {
    let source = fixture
        .main_rs()
        .replace(&format!("\"{from}\""), &format!("\"{to}\""))
        .replace(&format!("tag={from}"), &format!("tag={to}"));
    fixture.write_main(&source);
}

/// Reads the program's lines until one shows `version`, checking that each shows one version
/// (its two halves agree); returns the program's generation then.
fn until_showing(session: &mut LiveSession, version: &str) -> u64 {
    session.drain_lines();
    loop {
        let line = session.line_where(|line| line.starts_with("frames="));
        assert_eq!(
            field(&line, "word"),
            field(&line, "tag"),
            "half a patch runs: {line}"
        );
        if field(&line, "word") == version {
            return number(&line, "generation");
        }
    }
}

/// The version the program shows now (after lines already printed).
fn showing_now(session: &mut LiveSession) -> String {
    session.drain_lines();
    let line = session.line_where(|line| line.starts_with("frames="));
    assert_eq!(
        field(&line, "word"),
        field(&line, "tag"),
        "half a patch runs: {line}"
    );
    field(&line, "word").to_string()
}

/// Waits for the warning that the patch's answer is late.
fn late_warning(session: &mut LiveSession) {
    let Event::Warning { message } = session.event("warning") else {
        unreachable!()
    };
    assert!(message.contains("hasn't applied the patch"), "{message}");
}

fn applied_generation(event: Event) -> u64 {
    match event {
        Event::PatchApplied { generation, .. } | Event::RolledBack { generation } => generation,
        other => panic!("not a patch: {other:?}"),
    }
}

#[test]
fn a_late_answer_is_reported_late_and_reports_and_program_agree() {
    let fixture = fixture("late_answer");
    let gate = Gate::new(&fixture);
    let mut session = LiveSession::start_with_env(fixture.clone(), &[gate.arg()], &QUICK_TIMEOUT);
    assert_eq!(until_showing(&mut session, "v0"), 0);

    for (generation, (from, to)) in [(1, ("v0", "v1")), (2, ("v1", "v2"))] {
        edit_version(&fixture, from, to);
        late_warning(&mut session);
        assert_eq!(
            showing_now(&mut session),
            from,
            "not applied before its safe point"
        );
        gate.open();
        let applied = session.event("patch-applied");
        assert_eq!(applied_generation(applied), generation);
        assert_eq!(until_showing(&mut session, to), generation);
    }

    // Undo is a patch like the others: late too, and back to v1.
    session.signal_hotpatch(libc::SIGUSR2);
    late_warning(&mut session);
    gate.open();
    assert_eq!(applied_generation(session.event("rolled-back")), 3);
    assert_eq!(until_showing(&mut session, "v1"), 3);
}

#[test]
fn quitting_while_a_patch_is_pending_quits() {
    let fixture = fixture("late_answer_quit");
    let gate = Gate::new(&fixture);
    let mut session = LiveSession::start_with_env(fixture.clone(), &[gate.arg()], &QUICK_TIMEOUT);
    until_showing(&mut session, "v0");
    edit_version(&fixture, "v0", "v1");
    late_warning(&mut session);
    session.signal_hotpatch(libc::SIGTERM);
    session.event("app-exited");
    assert_eq!(session.wait_hotpatch_exit(), Some(128 + libc::SIGTERM));
}

#[test]
fn hotpatch_killed_while_a_patch_is_pending_is_followed_by_an_attach_that_learns_the_truth() {
    let fixture = fixture("late_answer_killed");
    let gate = Gate::new(&fixture);
    let mut first = LiveSession::start_with_env(fixture.clone(), &[gate.arg()], &QUICK_TIMEOUT);
    until_showing(&mut first, "v0");
    edit_version(&fixture, "v0", "v1");
    late_warning(&mut first);
    first.signal_hotpatch(libc::SIGKILL);
    first.wait_hotpatch_exit();
    let pid = first.pid;
    wait_for_attach_socket(pid);
    assert_eq!(showing_now(&mut first), "v0", "still queued");

    // Attached while the patch is still queued: the attach waits for it, then takes over
    // what the program says it runs.
    let mut second = LiveSession::attach_with_env(fixture.clone(), Some(pid), &QUICK_TIMEOUT);
    let Event::Warning { message } = second.event("warning") else {
        unreachable!()
    };
    assert!(
        message.contains("queued for its next safe point"),
        "{message}"
    );
    gate.open();
    assert_eq!(until_showing(&mut first, "v1"), 1);
    let Event::Warning { message } = second.event("warning") else {
        unreachable!()
    };
    assert!(message.contains("resynchronised"), "{message}");
    assert!(message.contains("generation 1"), "{message}");

    // Patching goes on from there.
    edit_version(&fixture, "v1", "v2");
    late_warning(&mut second);
    gate.open();
    assert_eq!(applied_generation(second.event("patch-applied")), 2);
    assert_eq!(until_showing(&mut first, "v2"), 2);
    second.signal_hotpatch(libc::SIGUSR2);
    late_warning(&mut second);
    gate.open();
    assert_eq!(applied_generation(second.event("rolled-back")), 3);
    assert_eq!(until_showing(&mut first, "v1"), 3);
    kill(pid);
}

#[test]
fn a_killed_rustc_fails_the_patch_and_the_next_save_patches() {
    let fixture = fixture("killed_rustc");
    let mut session = LiveSession::start(fixture.clone(), &[]);
    until_showing(&mut session, "v0");
    edit_version(&fixture, "v0", "v1");
    let rustc = child_named(session.hotpatch_pid(), "rustc");
    kill(rustc);
    let failed = session.event_skipping("compile-error");
    assert!(matches!(failed, Event::CompileError { .. }), "{failed:?}");
    assert_eq!(showing_now(&mut session), "v0");

    edit_version(&fixture, "v1", "v2");
    assert_eq!(applied_generation(session.event("patch-applied")), 1);
    assert_eq!(until_showing(&mut session, "v2"), 1);
}

#[test]
fn hotpatch_killed_during_rustc_leaves_the_old_code_and_attach_patches_the_edit() {
    killed_while_its_child_runs("killed_during_rustc", "rustc");
}

#[test]
fn hotpatch_killed_during_the_link_leaves_the_old_code_and_attach_patches_the_edit() {
    // The linker is hotpatch's child for the few milliseconds the link takes (rustc's
    // `gcc-ld/ld.lld` execs `rust-lld` at once); the orphaned linker's image is never used:
    // the attach links its own.
    killed_while_its_child_runs("killed_during_link", "rust-lld");
}

/// Kills hotpatch while its child `child` (the compiler, the linker) works on an edit: the
/// program keeps the old code, and an attach applies the edit.
fn killed_while_its_child_runs(name: &str, child: &str) {
    let fixture = fixture(name);
    let mut first = LiveSession::start(fixture.clone(), &[]);
    until_showing(&mut first, "v0");
    edit_version(&fixture, "v0", "v1");
    child_named(first.hotpatch_pid(), child);
    first.signal_hotpatch(libc::SIGKILL);
    first.wait_hotpatch_exit();
    let pid = first.pid;
    wait_for_attach_socket(pid);
    assert_eq!(showing_now(&mut first), "v0");

    let mut second = LiveSession::attach(fixture.clone(), Some(pid));
    assert_eq!(applied_generation(second.event("patch-applied")), 1);
    assert_eq!(until_showing(&mut first, "v1"), 1);
    kill(pid);
}

#[test]
fn a_full_disk_refuses_the_patch_by_name_and_freed_space_patches_again() {
    let fixture = fixture("full_disk");
    let mut session = LiveSession::start(fixture.clone(), &[]);
    until_showing(&mut session, "v0");
    // Where this session writes its patch images (the target directory is shared with the
    // other tests): from now on, a small disk, then a full one.
    let prefix = format!("{}-", session.pid);
    let images = std::fs::read_dir(fixture.target_dir.join("hotpatch/patches"))
        .unwrap()
        .flatten()
        .find(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .expect("the session's patches directory")
        .path();
    let disk = Tmpfs::mount(&images, "1m");
    let filler = disk.fill();
    edit_version(&fixture, "v0", "v1");
    let refused = session.event_skipping("patch-refused");
    let Event::PatchRefused { reason, .. } = &refused else {
        unreachable!()
    };
    assert!(reason.contains("No space left on device"), "{reason}");
    assert_eq!(showing_now(&mut session), "v0");

    std::fs::remove_file(filler).unwrap();
    edit_version(&fixture, "v1", "v2");
    assert_eq!(applied_generation(session.event("patch-applied")), 1);
    assert_eq!(until_showing(&mut session, "v2"), 1);
}

/// A tmpfs mounted for a test, unmounted when dropped (even by a panic).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }

    /// Fills it up with one file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&block[..512]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Waits for the child of `parent` named `name` (its `comm`) running at normal priority to
/// appear; its pid. Only `parent`'s children are looked at (`/proc/PID/task/TID/children`),
/// so a poll is quick enough to catch a linker that runs for milliseconds.
fn child_named(parent: u32, name: &str) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).unwrap();
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in children.split_whitespace() {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
                    continue;
                };
                // pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
                let Some((head, tail)) = stat.rsplit_once(')') else {
                    continue;
                };
                let comm = head.split_once(" (").map(|(_, comm)| comm);
                // Not niced: the session's warm-up build runs niced, an edit's build doesn't.
                let niceness = tail
                    .split_whitespace()
                    .nth(16)
                    .and_then(|n| n.parse::<i32>().ok());
                if comm == Some(name) && niceness == Some(0) {
                    return child.parse().unwrap();
                }
            }
        }
        assert!(Instant::now() < deadline, "no {name} child of {parent}");
    }
}

fn wait_for_attach_socket(pid: u32) {
    let socket = hotreload::protocol::attach_socket(&std::env::temp_dir(), pid);
    let deadline = Instant::now() + PATIENCE;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn kill(pid: u32) {
    // SAFETY: kill(2) on a process this test started (the program or hotpatch's rustc).
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}
