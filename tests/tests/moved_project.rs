//! A project moved, then copied, together with its target directory: each time `hotpatch run`
//! builds and patches it where it is now, never from revisions whose paths name the old place.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use tests::live::{field, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/moved.rs");

/// `fixture` with its own target directory inside it, as a project usually has.
fn with_own_target(fixture: FixtureCrate) -> FixtureCrate {
    FixtureCrate {
        target_dir: fixture.dir.join("target"),
        ..fixture
    }
}

/// The same project at `dir` (moved or copied there, its target directory with it).
fn at(fixture: &FixtureCrate, dir: &Path) -> FixtureCrate {
    with_own_target(FixtureCrate {
        dir: dir.to_path_buf(),
        ..fixture.clone()
    })
}

/// Starts hotpatch on `fixture`, checks that it runs `word`, edits it to `next` and checks
/// the program runs that; then restarts it, so the target directory holds a build of the
/// sources as they are (which cargo then finds fresh wherever the project goes), and quits.
fn patched(fixture: FixtureCrate, word: &str, next: &str) {
    let mut session = LiveSession::start(fixture, &[]);
    let line = session.line_where(|line| line.starts_with("frames="));
    assert_eq!(field(&line, "word"), word, "{line}");
    session.edit(&format!("\"{word}\""), &format!("\"{next}\""));
    let needle = format!("word={next}");
    session.line_where(|line| line.ends_with(&needle));
    session.signal_hotpatch(libc::SIGUSR1);
    session.event_skipping("app-exited");
    session.restarted();
}

#[test]
fn a_moved_then_copied_project_is_patched_where_it_is() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fixtures");
    let first = with_own_target(FixtureCrate::create(
        base.parent().unwrap(),
        "moved",
        PROGRAM,
    ));
    patched(first.clone(), "alpha", "beta");

    let moved_dir = base.join("moved-elsewhere");
    let _ = std::fs::remove_dir_all(&moved_dir);
    std::fs::rename(&first.dir, &moved_dir).unwrap();
    let moved = at(&first, &moved_dir);
    patched(moved.clone(), "beta", "gamma");

    let copy_dir = base.join("moved-copy");
    let _ = std::fs::remove_dir_all(&copy_dir);
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&moved_dir)
        .arg(&copy_dir)
        .status()
        .unwrap();
    assert!(copied.success());
    let copy = at(&first, &copy_dir);
    patched(copy, "gamma", "delta");
    // The original, untouched by the copy's patch, still builds and patches from its source.
    patched(moved, "gamma", "epsilon");
}
