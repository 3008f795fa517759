//! The demo as a newcomer meets it: under `hotpatch run`, the line its README names is edited
//! and the running animation changes colour while its counters keep counting. Runs on a copy
//! of `demo-app`, so the repository's sources are never touched.

use std::path::Path;
use testkit::fixture::{hotreload_dependency, FixtureCrate};
use testkit::session::Event;
use tests::live::{field, number, LiveSession};

const README_LINE: &str = "(255, 80, 0) // <- try changing this";

fn demo_copy() -> FixtureCrate {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo-app");
    let readme = std::fs::read_to_string(demo.join("README.md")).expect("demo README");
    assert!(
        readme.contains(README_LINE),
        "the demo README names the line this test edits"
    );
    let main = std::fs::read_to_string(demo.join("src/main.rs")).expect("demo main.rs");
    let dependencies = format!("{}libc = \"0.2\"\n", hotreload_dependency());
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let copy = FixtureCrate::create_with_dependencies(base, "demo-copy", &main, &dependencies);
    for entry in std::fs::read_dir(demo.join("src")).expect("demo sources") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, copy.dir.join("src").join(path.file_name().unwrap())).expect("copy");
    }
    copy
}

#[test]
fn editing_the_readme_line_recolours_the_running_demo() {
    let mut session = LiveSession::start(demo_copy(), &["--fps", "60"]);
    let before = session.line_where(|l| l.starts_with("frame="));
    assert_eq!(field(&before, "colour"), "255,80,0");
    assert_eq!(field(&before, "generation"), "0");

    let patch = session.edit_file("src/colour.rs", "(255, 80, 0)", "(0, 160, 255)");
    let Event::PatchApplied { changed, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    assert_eq!(
        changed,
        &["demo_copy::colour::ball_colour::__hotreload_impl"]
    );

    let after = session.line_where(|l| l.starts_with("frame=") && field(l, "generation") == "1");
    assert_eq!(field(&after, "colour"), "0,160,255");
    for counter in ["frame", "ticks"] {
        assert!(
            number(&after, counter) > number(&before, counter),
            "{counter} kept counting: {before} → {after}"
        );
    }
    assert!(number(&after, "bounces") >= number(&before, "bounces"));
}
