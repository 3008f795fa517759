//! All-or-nothing patches under a real `hotpatch run`: while eight threads call `a`, which
//! calls `b`, patch after patch changes both, and no thread ever runs `a` of one version with
//! `b` of another — whether they are plain functions (entry redirects) or `#[hotreload]`
//! functions (slots). A thread that never leaves a replaced function does not block a patch
//! for ever: the patch is applied, and its notes say so.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, lower_priority, number, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/consistency.rs");

/// Patches in a row: without the runtime's stack check, a thread caught inside `a` at one of
/// them is all but certain.
const PATCHES: u64 = 8;

fn start(name: &str, args: &[&str]) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let session = LiveSession::start(FixtureCrate::create_hot(base, name, PROGRAM), args);
    lower_priority(session.pid);
    session
}

fn notes(event: &Event) -> &[String] {
    match event {
        Event::PatchApplied { notes, .. } => notes,
        other => panic!("not patch-applied: {other:?}"),
    }
}

/// Edits `constant` from `first` up `PATCHES` times; after each patch the threads' pairs come
/// from the new version, and none was ever mixed.
fn no_thread_mixes_two_versions(name: &str, args: &[&str], constant: &str, first: u64) {
    let mut session = start(name, args);
    for patch in 1..=PATCHES {
        let (from, to) = (first + patch - 1, first + patch);
        let applied = session.edit(
            &format!("const {constant}: u64 = {from};"),
            &format!("const {constant}: u64 = {to};"),
        );
        assert!(
            matches!(applied, Event::PatchApplied { generation, .. } if generation == patch),
            "{applied:?}"
        );
        let line = session.line_where(|line| {
            testkit::session::field(line, "version") == Some(to.to_string().as_str())
        });
        assert_eq!(field(&line, "mixed"), "0", "after patch {patch}: {line}");
    }
    let line = session.line_where(|_| true);
    assert_eq!(field(&line, "mixed"), "0", "{line}");
    assert!(number(&line, "calls") > 0);
}

#[test]
fn plain_functions_a_and_b_change_together() {
    no_thread_mixes_two_versions("consistency-plain", &[], "PLAIN", 1);
}

#[test]
fn hotreload_functions_a_and_b_change_together() {
    no_thread_mixes_two_versions("consistency-slots", &["--slots"], "SLOTTED", 101);
}

#[test]
fn a_thread_that_never_leaves_the_old_code_is_named_in_the_notes() {
    let mut session = start("consistency-stuck", &["--stuck"]);
    let applied = session.edit("const STUCK: u64 = 1;", "const STUCK: u64 = 2;");
    assert!(
        notes(&applied)
            .iter()
            .any(|note| note.contains("still running")
                && note.contains("`consistency_stuck::stuck`")),
        "{applied:?}"
    );
    // Applied anyway; the stuck thread keeps the version it started with.
    let line = session.line_where(|_| true);
    assert_eq!(field(&line, "stuck"), "1", "{line}");
}
