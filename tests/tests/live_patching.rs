//! Patching a running program end to end: a real `hotpatch run` builds a fixture program,
//! starts it, and each test edits its source and asserts what the *same* process prints
//! next — new behaviour, with statics, module-private statics and thread-locals intact.

use hotreload::protocol::{receive, send, Reply, Request, SlotUpdate, SOCKET_ENV};
use object::{Object, ObjectSymbol};
use std::io::BufReader;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, number, LiveSession};

/// The program under test: two threads print a line every 20 ms through `#[hotreload]`
/// functions, with a public static, a module-private static and a thread-local counter.
const PROGRAM: &str = include_str!("../fixtures/live_patching.rs");

fn start(name: &str) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    LiveSession::start(FixtureCrate::create_hot(base, name, PROGRAM), &[])
}

fn on(thread: &'static str) -> impl Fn(&str) -> bool {
    move |line: &str| line.starts_with(&format!("thread={thread} "))
}

#[test]
fn edited_body_runs_and_statics_keep_counting() {
    let mut session = start("live-statics");
    let before = session.line_where(on("main"));
    assert_eq!(field(&before, "word"), "alpha");
    let patch = session.edit("word=alpha", "word=beta");
    let Event::PatchApplied { changed, ms, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert_eq!(changed, &["live_statics::frame::__hotreload_impl"]);
    let timings = [
        ("total", ms.total),
        ("rustc", ms.rustc),
        ("diff", ms.diff),
        ("link", ms.link),
        ("load", ms.load),
    ];
    for (key, value) in timings {
        // What a JSON number can hold (NaN and infinities are written as null).
        assert!(value.is_finite(), "timing `{key}` in {patch:?}");
    }
    let after = session.line_where(on("main"));
    assert_eq!(
        field(&after, "word"),
        "beta",
        "the running process runs the new code"
    );
    for counter in ["frames", "private"] {
        assert!(
            number(&after, counter) > number(&before, counter),
            "`{counter}` continued: before {before:?}, after {after:?}"
        );
    }
}

#[test]
fn thread_locals_keep_each_threads_value() {
    let mut session = start("live-tls");
    let main_before = number(&session.line_where(on("main")), "tls");
    let worker_before = number(&session.line_where(on("worker")), "tls");
    assert!(main_before >= 1 && worker_before >= 1);
    session.edit("word=alpha", "word=gamma");
    let main_after = session.line_where(|l| on("main")(l) && field(l, "word") == "gamma");
    let worker_after = session.line_where(|l| on("worker")(l) && field(l, "word") == "gamma");
    assert!(
        number(&main_after, "tls") > main_before,
        "main's TLS continued: {main_after}"
    );
    assert!(
        number(&worker_after, "tls") > worker_before,
        "worker's TLS continued: {worker_after}"
    );
}

#[test]
fn unchanged_hotreload_caller_picks_up_a_changed_plain_function() {
    let mut session = start("live-callee");
    assert_eq!(field(&session.line_where(on("main")), "shade"), "1");
    let patch = session.edit(
        "fn shade() -> u32 {\n    1\n}",
        "fn shade() -> u32 {\n    2\n}",
    );
    let Event::PatchApplied { changed, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert_eq!(changed, &["live_callee::shade"]);
    assert_eq!(field(&session.line_where(on("main")), "shade"), "2");
    assert_eq!(field(&session.line_where(on("worker")), "shade"), "2");
}

#[test]
fn new_helper_closure_and_string_literal() {
    let mut session = start("live-additions");
    session.line_where(on("main"));
    session.fixture.replace(
        "fn shade() -> u32 {\n    1\n}",
        "fn shade() -> u32 {\n    brand_new(3)\n}\n\nfn brand_new(x: u32) -> u32 {\n    let scale = |v: u32| v * 10 + x;\n    scale(x) + \"fresh text\".len() as u32\n}",
    );
    let patch = session.event("patch-applied");
    let Event::PatchApplied { added, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert!(
        added.iter().any(|name| name.contains("brand_new")),
        "{patch:?}"
    );
    session.drain_lines();
    // 3 * 10 + 3 + len("fresh text") = 43
    assert_eq!(field(&session.line_where(on("main")), "shade"), "43");
}

#[test]
fn ten_edits_in_a_row_each_cumulative_against_the_base() {
    let mut session = start("live-ten");
    let mut word = "alpha".to_string();
    let mut frames = number(&session.line_where(on("main")), "frames");
    for round in 1..=10 {
        let next = format!("round{round}");
        session.edit(&format!("word={word}"), &format!("word={next}"));
        let line = session.line_where(on("main"));
        assert_eq!(field(&line, "word"), next, "edit {round} is visible");
        assert!(
            number(&line, "frames") > frames,
            "frames keep counting across edit {round}"
        );
        frames = number(&line, "frames");
        word = next;
    }
    let images: Vec<_> = session
        .events_seen()
        .filter(|e| matches!(e, Event::PatchApplied { .. }))
        .collect();
    assert_eq!(images.len(), 10);
    assert!(
        images
            .iter()
            .all(|e| matches!(e, Event::PatchApplied { changed, .. } if changed == &["live_ten::frame::__hotreload_impl"])),
        "each patch is against the base: one changed function, never a chain"
    );
}

#[test]
fn a_second_edit_names_only_what_it_changed() {
    let mut session = start("live-second");
    session.line_where(on("main"));
    session.edit("word=alpha", "word=first");
    let second = session.edit(
        "fn shade() -> u32 {\n    1\n}",
        "fn shade() -> u32 {\n    2\n}",
    );
    let Event::PatchApplied {
        changed,
        changed_since_start,
        ..
    } = &second
    else {
        panic!("not patch-applied: {second:?}")
    };
    assert_eq!(changed, &["live_second::shade"], "{second:?}");
    assert_eq!(
        changed_since_start,
        &["live_second::frame::__hotreload_impl", "live_second::shade"],
        "{second:?}"
    );
    let line = session.line_where(on("main"));
    assert_eq!(
        (field(&line, "word"), field(&line, "shade")),
        ("first", "2")
    );
}

#[test]
fn panic_in_patched_code_is_caught_by_the_original_caller() {
    let mut session = start("live-panic");
    assert_eq!(session.line_where(|l| l.starts_with("risky=")), "risky=8");
    session.edit(
        "    n + 1\n",
        "    if n == 7 {\n        panic!(\"boom from the patch\");\n    }\n    n + 1\n",
    );
    assert_eq!(
        session.line_where(|l| l.starts_with("risky=")),
        "risky=panicked"
    );
    // And the program keeps running, through patched code.
    let line = session.line_where(on("main"));
    assert_eq!(field(&line, "word"), "alpha");
    assert_eq!(
        session.line_where(|l| l.starts_with("risky=")),
        "risky=panicked"
    );
}

#[test]
fn one_image_serves_two_running_instances() {
    let mut session = start("live-shared");
    let patch = session.edit("word=alpha", "word=shared");
    let Event::PatchApplied { image, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    let image_path = image
        .as_ref()
        .expect("the patch has an image")
        .display()
        .to_string();
    let exe = session
        .fixture
        .target_dir
        .join("hotpatch/cargo/debug/live-shared");

    // A second instance of the same executable, at another load address, fed by this test.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("second.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let mut second = Command::new(&exe)
        .env(SOCKET_ENV, &socket)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (stream, _) = listener.accept().unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    let mut requests = stream;
    let Some(Reply::Hello(hello)) = receive::<Reply>(&mut replies).unwrap() else {
        panic!("no hello")
    };
    assert_ne!(hello.pid, session.pid);

    let image_bytes = std::fs::read(&image_path).unwrap();
    let image = object::File::parse(&*image_bytes).unwrap();
    let root = image
        .symbols()
        .find(|s| {
            s.name()
                .is_ok_and(|n| n.contains("5frame16__hotreload_impl"))
        })
        .expect("root in the image");
    let slot = hello
        .slots
        .iter()
        .find(|s| s.path == "live_shared::frame")
        .expect("frame's slot");
    let update = SlotUpdate {
        slot: slot.slot,
        fingerprint: slot.fingerprint,
        target: hello.load_bias.wrapping_add(root.address()),
    };
    let image_request = hotreload::protocol::PatchImage {
        path: image_path.clone(),
        build_id: hello.build_id.clone(),
        checksum: hotreload::protocol::checksum(&image_bytes),
    };
    send(
        &mut requests,
        &Request::Apply {
            id: 1,
            image: Some(image_request),
            updates: vec![update],
            entries: Vec::new(),
            old_code: Vec::new(),
        },
    )
    .unwrap();
    assert!(matches!(
        receive::<Reply>(&mut replies).unwrap(),
        Some(Reply::Applied { .. })
    ));

    let mut lines = std::io::BufRead::lines(BufReader::new(second.stdout.take().unwrap()));
    let patched = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("word=shared")))
        .expect("the second instance runs the patch");
    assert!(patched.unwrap().starts_with("thread="));
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(
        field(&session.line_where(on("main")), "word"),
        "shared",
        "the first instance too"
    );
}
