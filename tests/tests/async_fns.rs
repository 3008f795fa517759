//! Async fns under a real `hotpatch run` on a tokio runtime, with no `#[hotreload]`: an edit
//! inside `step` reaches the futures already suspended at its `.await` (they resume into the
//! new code) and the new ones; an edit that changes what lives across an `.await` is refused,
//! naming the async fn, and the program keeps its code; an axum server answers every request
//! while its route handler is patched.

use hotreload_abi::events::RefusalKind;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use testkit::fixture::{hotreload_dependency, FixtureCrate};
use testkit::session::Event;
use tests::http::{free_port, get};
use tests::live::{number, LiveSession};

const ASYNC_FNS: &str = include_str!("../fixtures/async_fns.rs");
const TOKIO: &str = "tokio = { version = \"1\", default-features = false, features = [\"rt\", \"rt-multi-thread\", \"time\", \"macros\", \"net\", \"io-util\"] }\n";
/// The same features as the `tests` crate's dev-dependency (which compiles the fixture as a
/// module): just HTTP/1 over tokio.
const AXUM: &str =
    "axum = { version = \"0.8\", default-features = false, features = [\"http1\", \"tokio\"] }\n";

fn start(name: &str, args: &[&str]) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dependencies = format!("{}{TOKIO}{AXUM}", hotreload_dependency());
    let fixture = FixtureCrate::create_with_dependencies(base, name, ASYNC_FNS, &dependencies);
    LiveSession::start(fixture, args)
}

/// The next line of task `id` printed after the first patch was applied.
fn patched_line(session: &mut LiveSession, id: u64) -> String {
    session.line_where(|line| {
        line.starts_with("task=") && number(line, "task") == id && number(line, "generation") >= 1
    })
}

fn applied_ms(event: &Event) -> f64 {
    match event {
        Event::PatchApplied { ms, .. } => ms.total,
        other => panic!("not patch-applied: {other:?}"),
    }
}

fn refusal(session: &mut LiveSession) -> (RefusalKind, String) {
    match session.event("patch-refused") {
        Event::PatchRefused { kind, reason, .. } => (kind, reason),
        other => panic!("not patch-refused: {other:?}"),
    }
}

#[test]
fn a_suspended_task_resumes_into_the_edited_async_fn() {
    let mut session = start("async-current", &["current"]);
    let before = session.line_where(|line| line.starts_with("task=0"));
    let patch = session.edit("    base + 1\n", "    base + 2\n");
    let Event::PatchApplied { redirected, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert!(
        redirected
            .iter()
            .any(|name| name == "async_current::step::{{closure}}"),
        "the poll function of `step`'s future is redirected: {patch:?}"
    );
    eprintln!("async edit applied in {} ms", applied_ms(&patch));
    // The task's loop (and its counter) goes on: the future suspended in `step` during the
    // patch, and every one after it, computes with the new code.
    for _ in 0..3 {
        let line = patched_line(&mut session, 0);
        let n = number(&line, "n");
        assert!(n > number(&before, "n"), "{line} continues {before}");
        assert_eq!(number(&line, "v"), n * 10 + 2, "{line}");
    }
}

#[test]
fn tasks_on_four_threads_suspended_during_the_patch_all_resume_into_the_new_code() {
    let mut session = start("async-threads", &["threads"]);
    for id in 0..4 {
        session.line_where(|line| line.starts_with(&format!("task={id} ")));
    }
    session.edit("    base + 1\n", "    base + 2\n");
    for id in 0..4 {
        // Each task sleeps in `step` nearly all the time: its first line after the patch
        // comes from a future that was suspended at the `.await` when the jump was written.
        let first = patched_line(&mut session, id);
        let second = patched_line(&mut session, id);
        for line in [&first, &second] {
            assert_eq!(number(line, "v"), number(line, "n") * 10 + 2, "{line}");
        }
        assert_eq!(number(&second, "n"), number(&first, "n") + 1, "{second}");
    }
}

#[test]
fn changing_what_lives_across_an_await_is_refused_naming_the_async_fn() {
    let mut session = start("async-layout", &["current"]);
    session.line_where(|line| line.starts_with("task=0"));
    // A local that lives across the `.await`: the suspended future has no room for it.
    session.fixture.replace(
        "    let base = n * 10;\n",
        "    let base = n * 10;\n    let label = n.to_string();\n",
    );
    session.fixture.replace(
        "    base + 1\n",
        "    base + 2 + u64::from(label.is_empty())\n",
    );
    let (kind, reason) = refusal(&mut session);
    assert_eq!(kind, RefusalKind::TypeLayout, "{reason}");
    for expected in [
        "async fn `async_layout::step` (src/main.rs:11)",
        "new local `label` lives across the .await at line 14",
        "suspended in the running program would resume in the new code",
        "restart to apply this edit",
    ] {
        assert!(reason.contains(expected), "`{expected}` in: {reason}");
    }
    assert!(!reason.contains("{async_fn_env"), "{reason}");
    session.drain_lines();
    let line = session.line_where(|line| line.starts_with("task=0"));
    assert_eq!(
        number(&line, "v"),
        number(&line, "n") * 10 + 1,
        "keeps its code: {line}"
    );

    // Without the local the layout is the running one again: patched.
    session
        .fixture
        .replace("    let label = n.to_string();\n", "");
    session.edit(
        "    base + 2 + u64::from(label.is_empty())\n",
        "    base + 3\n",
    );
    let line = patched_line(&mut session, 0);
    assert_eq!(number(&line, "v"), number(&line, "n") * 10 + 3, "{line}");

    // A second `.await` is a new state of the future: refused.
    session.fixture.replace(
        "    base + 3\n",
        "    tokio::task::yield_now().await;\n    base + 4\n",
    );
    let (kind, reason) = refusal(&mut session);
    assert_eq!(kind, RefusalKind::TypeLayout, "{reason}");
    for expected in [
        "async fn `async_layout::step`",
        "an .await was added at line 14",
    ] {
        assert!(reason.contains(expected), "`{expected}` in: {reason}");
    }
    session.drain_lines();
    let line = session.line_where(|line| line.starts_with("task=0"));
    assert_eq!(number(&line, "v"), number(&line, "n") * 10 + 3, "{line}");
}

#[test]
fn an_http_handler_is_patched_while_a_client_keeps_sending_requests() {
    // The session's first line, which `start` waits for, is the server's.
    let port = free_port();
    let mut session = start("async-http", &["http", &port.to_string()]);

    let stop = Arc::new(AtomicBool::new(false));
    let patched = Arc::new(AtomicBool::new(false));
    // Per body: how many answers, and how many of the requests sent after the patch event.
    let answers: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let client = {
        let (stop, patched, answers) = (stop.clone(), patched.clone(), answers.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let after_patch = patched.load(Ordering::Relaxed);
                let body = get(port).unwrap_or_else(|error| format!("failed: {error}"));
                let mut answers = answers.lock().unwrap();
                let counts = answers.entry(body).or_default();
                counts.0 += 1;
                counts.1 += u64::from(after_patch);
            }
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let patch = session.edit("\"hello v1\"", "\"hello v2\"");
    patched.store(true, Ordering::Relaxed);
    let Event::PatchApplied { ms, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    eprintln!(
        "axum handler patched in {} ms (rustc {}, diff {}, link {}, load {}, threads stopped {})",
        ms.total, ms.rustc, ms.diff, ms.link, ms.load, ms.stopped
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    client.join().expect("the client");

    let answers = answers.lock().unwrap();
    let bodies: Vec<&String> = answers.keys().collect();
    assert_eq!(
        bodies,
        ["hello v1", "hello v2"],
        "only answers: {answers:?}"
    );
    assert!(answers["hello v1"].0 > 0, "requests before: {answers:?}");
    assert_eq!(answers["hello v1"].1, 0, "after the patch: {answers:?}");
    assert!(answers["hello v2"].1 > 0, "requests after: {answers:?}");
}
