//! Under load: 8 threads call `#[hotreload]` functions in tight loops while 200 patches,
//! alternating two versions, are applied by a real `hotpatch run`. No call returns garbage,
//! both versions are seen, and memory stays bounded (an edit that recreates earlier code
//! reuses its mapped image). In safe-point mode no slot moves between two safe points.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{alternating_edit, lower_priority, number, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/stress.rs");

fn start(name: &str, args: &[&str]) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let session = LiveSession::start(FixtureCrate::create_hot(base, name, PROGRAM), args);
    lower_priority(session.pid);
    session
}

/// The first status line showing at least `generation` patches.
fn status_after(session: &mut LiveSession, generation: u64) -> String {
    session.line_where(|l| l.starts_with("generation=") && number(l, "generation") >= generation)
}

/// Applies `patches` edits alternating `x * 2` and `x * 3`.
fn alternate(session: &mut LiveSession, patches: u64) -> (String, String) {
    let mut after_first = String::new();
    for patch in 1..=patches {
        let (from, to) = alternating_edit(patch);
        session.edit(from, to);
        if patch == 1 {
            after_first = status_after(session, 1);
        }
    }
    (after_first, status_after(session, patches))
}

#[test]
fn two_hundred_alternating_patches_under_eight_busy_threads() {
    let mut session = start("stress-immediate", &[]);
    let (first, last) = alternate(&mut session, 200);
    assert_eq!(
        number(&last, "bad"),
        0,
        "a call returned neither version: {last}"
    );
    assert!(
        number(&last, "old") > 0 && number(&last, "new") > 0,
        "both versions ran: {last}"
    );
    let images = session
        .events_seen()
        .filter(|e| matches!(e, Event::PatchApplied { image: Some(_), .. }))
        .count();
    assert_eq!(
        images, 1,
        "only the first edit needed a new image; the rest reused it or the base"
    );
    let growth = number(&last, "rss_kb") as i64 - number(&first, "rss_kb") as i64;
    eprintln!(
        "RSS after 1 patch: {} kB, after 200: {} kB ({growth:+} kB)",
        number(&first, "rss_kb"),
        number(&last, "rss_kb")
    );
    assert!(growth < 16 * 1024, "memory stays bounded: {first} → {last}");
}

#[test]
fn in_safe_point_mode_no_slot_moves_between_two_safe_points() {
    let mut session = start("stress-safe-points", &["--safe-points"]);
    let (_, last) = alternate(&mut session, 20);
    assert_eq!(
        number(&last, "moved"),
        0,
        "slots moved between safe points: {last}"
    );
    assert_eq!(number(&last, "bad"), 0, "{last}");
    assert!(number(&last, "generation") >= 20);
}
