//! Entry patching under a real `hotpatch run`: a program with no `#[hotreload]` at all keeps
//! functions as a fn pointer in a struct, a trait object and a boxed closure, and calls them
//! directly too. After an edit every caller runs only the new code; pointers taken into
//! earlier patches reach the newest; undo walks back to the original bytes; a panic unwinds
//! through the jump; and 8 threads calling through a stored pointer never see garbage.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{alternating_edit, field, lower_priority, number, LiveSession};

const EVERY_CALLER: &str = include_str!("../fixtures/every_caller.rs");
const ENTRY_STRESS: &str = include_str!("../fixtures/entry_stress.rs");
const TINY_ENTRY: &str = include_str!("../fixtures/tiny_entry.rs");

fn start(name: &str, program: &str, args: &[&str]) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let session = LiveSession::start(FixtureCrate::create_hot(base, name, program), args);
    lower_priority(session.pid);
    session
}

fn next_frame(session: &mut LiveSession) -> String {
    session.drain_lines();
    session.line_where(|l| l.starts_with("frames="))
}

fn redirected(event: &Event) -> &[String] {
    match event {
        Event::PatchApplied { redirected, .. } => redirected,
        other => panic!("not patch-applied: {other:?}"),
    }
}

#[test]
fn pointers_trait_objects_closures_and_direct_calls_all_run_the_new_code() {
    let mut session = start("every-caller", EVERY_CALLER, &[]);
    let before = next_frame(&mut session);
    assert_eq!(field(&before, "pointer"), "2");
    assert_eq!(field(&before, "direct"), "2");
    assert_eq!(field(&before, "plugin"), "v1");
    assert_eq!(field(&before, "closure"), "6");

    session.fixture.replace("    x + 1\n", "    x + 100\n");
    session
        .fixture
        .replace("\"v1\".to_string()", "\"v2\".to_string()");
    session
        .fixture
        .replace("Box::new(|x| x * 2)", "Box::new(|x| x * 3)");
    let patch = session.event("patch-applied");
    let names = redirected(&patch);
    for function in [
        "every_caller::pointed",
        "<every_caller::Greeter as every_caller::Plugin>::label",
        "every_caller::main::{{closure}}",
    ] {
        assert!(
            names.iter().any(|name| name == function),
            "`{function}` redirected: {patch:?}"
        );
    }
    let after = next_frame(&mut session);
    assert_eq!(field(&after, "pointer"), "101", "{after}");
    assert_eq!(field(&after, "direct"), "101", "{after}");
    assert_eq!(field(&after, "plugin"), "v2", "{after}");
    assert_eq!(field(&after, "closure"), "9", "{after}");
    assert!(number(&after, "frames") > number(&before, "frames"));
    // The stored pointer and the direct call agree on every line from now on: no two
    // versions of `pointed` run at once.
    for _ in 0..20 {
        let line = session.line_where(|l| l.starts_with("frames="));
        assert_eq!(field(&line, "pointer"), field(&line, "direct"), "{line}");
    }
}

#[test]
fn an_edit_of_main_says_it_takes_effect_at_the_next_start() {
    let mut session = start("every-caller-main", EVERY_CALLER, &[]);
    let patch = session.edit("risky={risky} main=v1", "risky={risky} main=v2");
    let Event::PatchApplied { notes, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert!(
        notes
            .iter()
            .any(|note| note.contains("`every_caller_main::main` changed")
                && note.contains("next start")),
        "{patch:?}"
    );
    let line = next_frame(&mut session);
    assert_eq!(
        field(&line, "main"),
        "v1",
        "main's running loop keeps its body"
    );
    // Everything `main` calls is still patched.
    session.edit("    frame % 10\n", "    frame % 10 + 10\n");
    assert_eq!(field(&next_frame(&mut session), "update"), "false");
}

#[test]
fn a_pointer_into_the_first_patch_reaches_the_third_and_undo_walks_back() {
    let mut session = start("every-caller-chain", EVERY_CALLER, &[]);
    // Patch 1: `stash` keeps a pointer to the `pointed` of this patch (a copy in its image).
    session.fixture.replace(
        "fn stash() {}",
        "fn stash() {\n    let _ = STASHED.compare_exchange(0, pointed as usize, Ordering::Relaxed, Ordering::Relaxed);\n}",
    );
    session.fixture.replace("    x + 1\n", "    x + 2\n");
    session.event("patch-applied");
    let first = next_frame(&mut session);
    assert_eq!(field(&first, "stashed"), "3", "{first}");
    for (from, to, expected) in [("x + 2", "x + 3", "4"), ("x + 3", "x + 4", "5")] {
        session.edit(&format!("    {from}\n"), &format!("    {to}\n"));
        let line = next_frame(&mut session);
        assert_eq!(field(&line, "stashed"), expected, "{line}");
        assert_eq!(field(&line, "pointer"), expected, "{line}");
    }
    for expected in ["4", "3", "2"] {
        session.signal_hotpatch(libc::SIGUSR2);
        session.event("rolled-back");
        let line = next_frame(&mut session);
        assert_eq!(field(&line, "pointer"), expected, "{line}");
        assert_eq!(field(&line, "direct"), expected, "{line}");
    }
    // Back at the original code: the stashed pointer into patch 1 reaches it too.
    let line = next_frame(&mut session);
    assert_eq!(field(&line, "stashed"), "2", "{line}");
}

#[test]
fn a_panic_in_a_redirected_function_unwinds_into_the_callers_catch_unwind() {
    let mut session = start("every-caller-panic", EVERY_CALLER, &[]);
    assert_eq!(field(&next_frame(&mut session), "risky"), "2");
    session.edit(
        "    n + 1\n",
        "    if n > 0 {\n        panic!(\"boom\");\n    }\n    n\n",
    );
    let after = next_frame(&mut session);
    assert_eq!(field(&after, "risky"), "0", "caught: {after}");
    let later = next_frame(&mut session);
    assert!(
        number(&later, "frames") > number(&after, "frames"),
        "still running"
    );
}

#[test]
fn a_function_too_small_for_a_jump_is_reached_through_its_redirected_caller() {
    let mut session = start("tiny-entry", TINY_ENTRY, &[]);
    assert_eq!(field(&next_frame(&mut session), "tiny"), "1");
    let patch = session.edit("    \"    mov al, 1\",", "    \"    mov al, 2\",");
    let Event::PatchApplied {
        changed,
        redirected,
        ..
    } = &patch
    else {
        panic!("not patch-applied: {patch:?}")
    };
    assert_eq!(changed, &["tiny_value"], "{patch:?}");
    assert_eq!(redirected, &["tiny_entry::frame"], "{patch:?}");
    let line = next_frame(&mut session);
    assert_eq!(field(&line, "tiny"), "2", "{line}");
    assert_eq!(
        field(&line, "neighbour"),
        "9",
        "the next function is intact: {line}"
    );
}

/// Applies `patches` edits alternating `x * 2` and `x * 3` and returns the last status line.
fn alternate(session: &mut LiveSession, patches: u64) -> String {
    for patch in 1..=patches {
        let (from, to) = alternating_edit(patch);
        session.edit(from, to);
    }
    session.line_where(|l| l.starts_with("generation=") && number(l, "generation") >= patches)
}

/// Stop times of the patches that wrote entries, for the log.
fn stop_times(session: &LiveSession) -> Vec<f64> {
    session
        .events_seen()
        .filter_map(|event| match event {
            Event::PatchApplied { ms, .. } => Some(ms.stopped),
            _ => None,
        })
        .collect()
}

#[test]
fn eight_threads_calling_through_a_stored_pointer_over_two_hundred_patches() {
    let mut session = start("entry-stress", ENTRY_STRESS, &[]);
    let last = alternate(&mut session, 200);
    assert_eq!(number(&last, "bad"), 0, "a call returned garbage: {last}");
    assert!(
        number(&last, "old") > 0 && number(&last, "new") > 0,
        "both versions ran: {last}"
    );
    let mut stopped = stop_times(&session);
    stopped.sort_by(f64::total_cmp);
    eprintln!(
        "threads stopped per patch: median {:.2} ms, max {:.2} ms over {} patches",
        stopped[stopped.len() / 2],
        stopped[stopped.len() - 1],
        stopped.len()
    );
}

#[test]
fn in_safe_point_mode_entries_change_only_at_safe_points() {
    let mut session = start("entry-stress-safe-points", ENTRY_STRESS, &["--safe-points"]);
    let last = alternate(&mut session, 20);
    assert_eq!(
        number(&last, "moved"),
        0,
        "an entry changed between safe points: {last}"
    );
    assert_eq!(number(&last, "bad"), 0, "{last}");
    assert!(number(&last, "new") > 0, "{last}");
}
