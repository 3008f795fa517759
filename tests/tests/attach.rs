//! `hotpatch attach`: a program whose `hotpatch run` was killed runs on, and another hotpatch
//! takes over what it runs (patches, images, redirected functions) and patches it further.

use hotreload::protocol::attach_socket;
use std::path::Path;
use std::time::{Duration, Instant};
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/attach.rs");

/// The next line's frame count, word and tag.
fn frame(session: &mut LiveSession) -> (u64, String, String) {
    let line = session.line_where(|l| l.starts_with("frames="));
    (
        field(&line, "frames").parse().unwrap(),
        field(&line, "word").to_string(),
        field(&line, "tag").to_string(),
    )
}

/// The first line showing `word` and `tag`, once stale lines are gone.
fn frame_showing(session: &mut LiveSession, word: &str, tag: &str) -> u64 {
    session.drain_lines();
    let needle = format!("word={word} tag={tag}");
    let line = session.line_where(|l| l.ends_with(&needle));
    field(&line, "frames").parse().unwrap()
}

#[test]
fn a_killed_session_s_program_is_attached_to_and_patched_with_its_state_kept() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::create_hot(base, "attach", PROGRAM);
    let mut first = LiveSession::start(fixture.clone(), &[]);
    assert_eq!(frame(&mut first).1, "alpha");
    // One redirected plain function, one rewired slot.
    first.edit("\"alpha\"", "\"beta\"");
    first.edit("tag=one", "tag=two");
    let before = frame_showing(&mut first, "beta", "two");
    let pid = first.pid;

    first.signal_hotpatch(libc::SIGKILL);
    first.wait_hotpatch_exit();
    let socket = attach_socket(&std::env::temp_dir(), pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the program listens for the next hotpatch at {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Saved while no hotpatch watches: applied on attach.
    fixture.replace_in("src/main.rs", "\"beta\"", "\"gamma\"");

    let mut second = LiveSession::attach(fixture.clone(), Some(pid));
    let attached = second
        .events_seen()
        .find(|event| matches!(event, Event::Attached { .. }))
        .cloned();
    assert_eq!(
        attached,
        Some(Event::Attached {
            pid,
            generation: 2,
            images: 2
        })
    );
    second.event("patch-applied");
    let after = frame_showing(&mut first, "gamma", "two");
    assert!(
        after > before,
        "the same process, its frame counter kept: {before} then {after}"
    );

    // Patched further, and undone back to what attaching found plus the saved edit.
    second.edit("tag=two", "tag=three");
    frame_showing(&mut first, "gamma", "three");
    second.signal_hotpatch(libc::SIGUSR2);
    second.event("rolled-back");
    frame_showing(&mut first, "gamma", "two");

    // Quitting an attached session lets go of the program, which runs on.
    second.signal_hotpatch(libc::SIGTERM);
    second.event("detached");
    assert_eq!(second.wait_hotpatch_exit(), Some(0));
    let running = frame_showing(&mut first, "gamma", "two");

    // Without a pid: the one program of this binary that waits.
    let mut third = LiveSession::attach(fixture.clone(), None);
    assert_eq!(third.pid, pid);
    let saved_while_attached = third
        .events_seen()
        .filter(|event| matches!(event, Event::PatchApplied { .. }))
        .count();
    assert_eq!(saved_while_attached, 0, "nothing was saved while detached");
    third.edit("\"gamma\"", "\"delta\"");
    // A patch applies the sources as saved: the undone `tag=three` is back.
    assert!(frame_showing(&mut first, "delta", "three") > running);

    // The program's end ends the attached session.
    // SAFETY: kill(2) on the program this test started through hotpatch.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    third.event("app-exited");
    assert_eq!(third.wait_hotpatch_exit(), Some(0));
}
