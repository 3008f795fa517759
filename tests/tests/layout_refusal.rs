//! A struct passed to a `#[hotreload]` function grows while the program runs: under a real
//! `hotpatch run`, the patch is refused naming the type and the change, the program keeps
//! running its old code on its old data, and the next compatible edit patches normally.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, number, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/layout_refusal.rs");

#[test]
fn a_grown_struct_is_refused_and_the_program_keeps_its_old_code() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::create_hot(base, "live-layout", PROGRAM);
    let mut session = LiveSession::start(fixture, &[]);
    let before = session.line_where(|line| line.starts_with("x="));

    // One save: the struct, its constructor and the function using the new field.
    let grown = PROGRAM
        .replace("    pub y: u32,\n}", "    pub y: u32,\n    pub z: u32,\n}")
        .replace("Ball { x: 0, y: 7 }", "Ball { x: 0, y: 7, z: 1 }")
        .replace("ball.x += 1;", "ball.x += ball.z;");
    session.fixture.write_main(&grown);
    let refused = session.event("patch-refused");
    let Event::PatchRefused { reason, .. } = &refused else {
        panic!("not patch-refused: {refused:?}")
    };
    for expected in [
        "`live_layout::Ball` (src/main.rs:5) changed layout",
        "size 8 → 12",
        "new field `z` (`u32` at offset 8)",
        "argument `ball` of `live_layout::step`",
        "restart to apply this edit",
    ] {
        assert!(reason.contains(expected), "`{expected}` in: {reason}");
    }

    // Still the old code, still counting on the same value.
    session.drain_lines();
    let after_refusal = session.line_where(|line| line.starts_with("x="));
    assert_eq!(field(&after_refusal, "word"), "alpha");
    assert_eq!(field(&after_refusal, "y"), "7");
    assert!(number(&after_refusal, "x") > number(&before, "x"));

    // Back to the running layout, with a body edit: patched as usual.
    session
        .fixture
        .write_main(&PROGRAM.replace("word=alpha", "word=beta"));
    session.event("patch-applied");
    session.drain_lines();
    let patched = session.line_where(|line| field(line, "word") == "beta");
    assert_eq!(field(&patched, "y"), "7");
    assert!(number(&patched, "x") > number(&after_refusal, "x"));
}
