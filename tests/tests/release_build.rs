//! A program built with the default release profile (`hotpatch run --release`) is patched:
//! ThinLTO's `.llvm.<hash>` names, new on every build, are not mistaken for removed and added
//! statics, and an edit of a function inlined across codegen units reaches every caller.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::Event;
use tests::live::{field, number, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/release_build.rs");

#[test]
fn a_release_build_is_patched_twice() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::create_hot(base, "release-twice", PROGRAM);
    let mut session = LiveSession::start_release(fixture, &[]);
    let before = session.line_where(|line| line.starts_with("steps="));
    assert_eq!(field(&before, "word"), "alpha");

    let first = session.edit("word=alpha", "word=beta");
    let Event::PatchApplied { changed, .. } = &first else {
        panic!("not patch-applied: {first:?}")
    };
    assert_eq!(changed, &["release_twice::physics::step::__hotreload_impl"]);
    let after = session.line_where(|line| field(line, "word") == "beta");
    assert!(
        number(&after, "steps") > number(&before, "steps"),
        "the slot's static kept counting: before {before:?}, after {after:?}"
    );
    assert_eq!((field(&after, "gain"), field(&after, "scaled")), ("6", "9"));

    // `gain` is inlined into `step` and into `render::frame`, in another codegen unit: both
    // callers change with it, and both run the new code.
    let second = session.edit("    x * 2\n", "    x * 5\n");
    let Event::PatchApplied { changed, .. } = &second else {
        panic!("not patch-applied: {second:?}")
    };
    assert!(
        changed
            .iter()
            .any(|name| name.starts_with("release_twice::render::")),
        "the caller in the other unit changed too: {second:?}"
    );
    let last = session.line_where(|line| field(line, "gain") == "15");
    assert_eq!(field(&last, "scaled"), "21", "{last}");
    assert_eq!(field(&last, "word"), "beta", "the first edit stays");
    assert!(number(&last, "steps") > number(&after, "steps"));
}
