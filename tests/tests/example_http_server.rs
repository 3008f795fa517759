//! `examples/http-server` under load: a client thread sends requests without pause while its
//! handler is edited five times. No request fails, the answers switch to each new text and
//! never back, and the request count the server keeps goes on through every patch.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::session::Event;
use tests::examples::start_example;
use tests::http::{free_port, get};
use tests::live::{number, PATIENCE};

const PATCHES: u32 = 5;

/// What the client got, in order: each answer's body, or why the request failed.
type Answers = Arc<Mutex<Vec<Result<String, String>>>>;

#[test]
fn the_handler_is_patched_five_times_while_a_client_sends_requests_without_pause() {
    let port = free_port();
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut session = start_example(base, "http-server", &[&port.to_string()]);
    let program = session.pid;

    let stop = Arc::new(AtomicBool::new(false));
    let answers: Answers = Arc::default();
    let client = {
        let (stop, answers) = (stop.clone(), answers.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = get(port).map_err(|error| error.to_string());
                answers.lock().unwrap().push(answer);
            }
        })
    };
    wait_for_answer(&answers, "hello v1");

    for version in 1..=PATCHES {
        let (from, to) = (
            format!("hello v{version} "),
            format!("hello v{} ", version + 1),
        );
        let saved = Instant::now();
        let patch = session.edit(&from, &to);
        let Event::PatchApplied { ms, .. } = &patch else {
            panic!("not patch-applied: {patch:?}")
        };
        wait_for_answer(&answers, &to);
        eprintln!(
            "patch {version}: applied in {} ms (rustc {}, threads stopped {}), new answers {} ms after the save",
            ms.total,
            ms.rustc,
            ms.stopped,
            saved.elapsed().as_millis()
        );
    }
    stop.store(true, Ordering::Relaxed);
    client.join().expect("the client");
    assert_eq!(session.pid, program, "the same process served throughout");

    let answers = answers.lock().unwrap();
    let failed: Vec<&String> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let bodies: Vec<&str> = answers.iter().flatten().map(|body| body.trim()).collect();
    // One client, one request at a time: the server counted exactly these, in order.
    let counts: Vec<u64> = bodies.iter().map(|body| number(body, "request")).collect();
    let expected: Vec<u64> = (1..=bodies.len() as u64).collect();
    assert!(counts == expected, "the count goes on: {bodies:?}");
    // Each text in turn, never an older one after a newer one.
    let mut versions: Vec<&str> = bodies.iter().map(|body| version(body)).collect();
    versions.dedup();
    let expected: Vec<String> = (1..=PATCHES + 1).map(|v| format!("v{v}")).collect();
    assert_eq!(versions, expected, "the texts, in order");
    eprintln!(
        "{} requests served, 0 failed, across {PATCHES} patches",
        bodies.len()
    );
}

/// `v2` in `hello v2 request=7`.
fn version(body: &str) -> &str {
    body.split_whitespace().nth(1).expect("hello vN request=R")
}

/// Waits (with the tests' patience) until the latest answer starts with `text`.
fn wait_for_answer(answers: &Answers, text: &str) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let latest = answers.lock().unwrap().last().cloned();
        if matches!(&latest, Some(Ok(body)) if body.starts_with(text)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no answer `{text}…` within {PATIENCE:?}");
}
