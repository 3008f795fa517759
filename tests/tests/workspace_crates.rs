//! Patching code in every local crate of a workspace: libraries the binary links (members and
//! path dependencies outside the workspace root), with their statics and thread-locals kept,
//! generic and `#[inline]` functions the binary instantiates, `#[hotreload]` functions of a
//! library; only the crates an edit touches are recompiled; edits to how the program is built
//! are refused.

use std::path::Path;
use testkit::fixture::{FixtureCrate, Member};
use testkit::session::Event;
use tests::live::{field, number, LiveSession};

const APP: &str = include_str!("../fixtures/workspace/app.rs");
const GAME: &str = include_str!("../fixtures/workspace/game.rs");
const GAME_LIB: &str = "../game/src/lib.rs";

/// `app` (bin) calling `game` (lib) every frame on two threads.
fn start_game(name: &str) -> LiveSession {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let members = [
        Member {
            name: "app",
            dir: None,
            files: &[("src/main.rs", APP)],
            dependencies: &["game"],
        },
        Member {
            name: "game",
            dir: None,
            files: &[("src/lib.rs", GAME)],
            dependencies: &[],
        },
    ];
    LiveSession::start(FixtureCrate::create_workspace(base, name, &members), &[])
}

fn on(thread: &'static str) -> impl Fn(&str) -> bool {
    move |line: &str| line.starts_with(&format!("thread={thread} "))
}

fn calls(line: &str) -> bool {
    line.starts_with("calls ")
}

/// The names and compiler times of the crates a `patch-applied` says were compiled.
fn crates_compiled(patch: &Event) -> Vec<(String, f64)> {
    let Event::PatchApplied { crates, .. } = patch else {
        panic!("not patch-applied: {patch:?}")
    };
    crates.iter().map(|c| (c.name.clone(), c.ms)).collect()
}

fn crate_names(patch: &Event) -> Vec<String> {
    crates_compiled(patch)
        .into_iter()
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn library_edit_runs_and_its_statics_and_thread_locals_keep_counting() {
    let mut session = start_game("ws-state");
    let main_before = session.line_where(on("main"));
    let worker_before = session.line_where(on("worker"));
    let patch = session.edit_file(GAME_LIB, "word=alpha", "word=beta");
    assert_eq!(crate_names(&patch), ["ws_state_game", "ws_state_app"]);
    eprintln!("library edit patched: {patch:?}");
    let main_after = session.line_where(|l| on("main")(l) && field(l, "word") == "beta");
    let worker_after = session.line_where(|l| on("worker")(l) && field(l, "word") == "beta");
    for counter in ["frames", "private"] {
        assert!(
            number(&main_after, counter) > number(&main_before, counter),
            "`{counter}` continued: before {main_before:?}, after {main_after:?}"
        );
    }
    assert!(number(&main_after, "tls") > number(&main_before, "tls"));
    assert!(number(&worker_after, "tls") > number(&worker_before, "tls"));

    // A second library edit is against the base too, and the first one is kept.
    let patch = session.edit_file(GAME_LIB, "word=beta", "word=gamma");
    eprintln!("second library edit patched: {patch:?}");
    let line = session.line_where(|l| on("main")(l) && field(l, "word") == "gamma");
    assert!(number(&line, "frames") > number(&main_after, "frames"));
}

#[test]
fn generic_and_inline_library_functions_change_where_the_binary_uses_them() {
    let mut session = start_game("ws-generic");
    let before = session.line_where(calls);
    assert_eq!(
        (field(&before, "a"), field(&before, "b")),
        ("<7>", "<\"s\">")
    );
    assert_eq!(field(&before, "scaled"), "6");
    session.edit_file(
        GAME_LIB,
        "format!(\"<{value:?}>\")",
        "format!(\"[{value:?}]\")",
    );
    let after = session.line_where(|l| calls(l) && field(l, "a") == "[7]");
    assert_eq!(field(&after, "b"), "[\"s\"]", "both instances changed");

    session.edit_file(GAME_LIB, "x * 2", "x * 5");
    session.line_where(|l| calls(l) && field(l, "scaled") == "15");
}

#[test]
fn hotreload_function_of_the_library() {
    let mut session = start_game("ws-hot");
    assert_eq!(field(&session.line_where(calls), "bonus"), "10");
    let patch = session.edit_file(GAME_LIB, "    10\n", "    42\n");
    let Event::PatchApplied { changed, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert_eq!(changed, &["ws_hot_game::bonus::__hotreload_impl"]);
    session.line_where(|l| calls(l) && field(l, "bonus") == "42");
}

#[test]
fn an_edit_recompiles_its_crate_and_the_dependents_only() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let members = [
        Member {
            name: "app",
            dir: None,
            files: &[(
                "src/main.rs",
                include_str!("../fixtures/workspace/chain_app.rs"),
            )],
            dependencies: &["mid", "side"],
        },
        Member {
            name: "mid",
            dir: None,
            files: &[(
                "src/lib.rs",
                include_str!("../fixtures/workspace/chain_mid.rs"),
            )],
            dependencies: &["corelib"],
        },
        Member {
            name: "corelib",
            dir: None,
            files: &[(
                "src/lib.rs",
                include_str!("../fixtures/workspace/chain_core.rs"),
            )],
            dependencies: &[],
        },
        Member {
            name: "side",
            dir: None,
            files: &[(
                "src/lib.rs",
                include_str!("../fixtures/workspace/chain_side.rs"),
            )],
            dependencies: &[],
        },
    ];
    let fixture = FixtureCrate::create_workspace(base, "ws-chain", &members);
    let mut session = LiveSession::start(fixture, &[]);
    assert_eq!(session.line_where(|_| true), "mid=101 side=7");
    let patch = session.edit_file("../corelib/src/lib.rs", "    1\n", "    2\n");
    assert_eq!(
        crate_names(&patch),
        ["ws_chain_corelib", "ws_chain_mid", "ws_chain_app"],
        "`side` does not depend on `corelib`"
    );
    session.line_where(|l| l == "mid=102 side=7");

    let patch = session.edit_file("../side/src/lib.rs", "    7\n", "    8\n");
    assert_eq!(crate_names(&patch), ["ws_chain_side", "ws_chain_app"]);
    session.line_where(|l| l == "mid=102 side=8");
}

#[test]
fn path_dependency_outside_the_workspace_and_included_files() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let members = [
        Member {
            name: "app",
            dir: None,
            files: &[(
                "src/main.rs",
                include_str!("../fixtures/workspace/outside_app.rs"),
            )],
            dependencies: &["extra"],
        },
        Member {
            name: "extra",
            dir: Some("../ws-outside-extra"),
            files: &[
                (
                    "src/lib.rs",
                    include_str!("../fixtures/workspace/outside_extra.rs"),
                ),
                (
                    "src/greeting.txt",
                    include_str!("../fixtures/workspace/greeting.txt"),
                ),
            ],
            dependencies: &[],
        },
    ];
    let fixture = FixtureCrate::create_workspace(base, "ws-outside", &members);
    let mut session = LiveSession::start(fixture, &[]);
    assert_eq!(session.line_where(|_| true), "greeting=hello number=1");
    let extra = "../../ws-outside-extra/src";
    session.edit_file(&format!("{extra}/lib.rs"), "    1\n", "    2\n");
    session.line_where(|l| l == "greeting=hello number=2");
    session.edit_file(&format!("{extra}/greeting.txt"), "hello", "bonjour");
    session.line_where(|l| l == "greeting=bonjour number=2");
}

#[test]
fn layout_changes_and_manifest_edits_are_refused_and_the_program_keeps_running() {
    let mut session = start_game("ws-refusals");
    session.line_where(calls);
    let player = "    pub health: u32,\n}\n\nimpl Player {\n    pub fn new() -> Player {\n        Player { health: 0 }";
    let grown = "    pub health: u32,\n    pub armor: u64,\n}\n\nimpl Player {\n    pub fn new() -> Player {\n        Player { health: 0, armor: 1 }";
    session.fixture.replace_in(GAME_LIB, player, grown);
    let refused = session.event("patch-refused");
    let Event::PatchRefused { kind, items, .. } = &refused else {
        panic!("not patch-refused: {refused:?}")
    };
    assert_eq!(serde_json::to_value(kind).unwrap(), "type-layout");
    assert!(
        items
            .iter()
            .any(|item| item.contains("ws_refusals_game::Player")),
        "{refused:?}"
    );
    session.fixture.replace_in(GAME_LIB, grown, player);
    session.drain_lines();

    let manifest = session.fixture.dir.join("../game/Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    testkit::fixture::write_atomically(&manifest, &format!("{text}\n# edited\n")).unwrap();
    let refused = session.event_skipping("patch-refused");
    let Event::PatchRefused { kind, .. } = &refused else {
        panic!("not patch-refused: {refused:?}")
    };
    assert_eq!(serde_json::to_value(kind).unwrap(), "needs-restart");
    let line = session.line_where(calls);
    assert!(number(&line, "health") > 0, "still running: {line}");
}
