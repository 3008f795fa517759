//! A binary crate that does not depend on `hotreload`, patched under a real `hotpatch run`:
//! hotpatch preloads the runtime, whose agent connects like a linked one. Its children inherit
//! neither the preload nor the socket, a program that links the runtime gets no preload, and a
//! registry crate copied unchanged into a local crate is patched.

use std::path::Path;
use std::process::Command;
use testkit::checkout::registry_package_dir;
use testkit::fixture::FixtureCrate;
use tests::live::{field, number, LiveSession};

const NO_DEPENDENCY: &str = include_str!("../fixtures/no_dependency.rs");
const THIRD_PARTY: &str = include_str!("../fixtures/third_party.rs");

fn start(fixture: FixtureCrate) -> LiveSession {
    LiveSession::start(fixture, &[])
}

fn base() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

/// The next frame line on which both threads have stepped through the current code.
fn frame(session: &mut LiveSession, version: &str) -> String {
    session.drain_lines();
    let prefix = format!("{version}/");
    session.line_where(|line| {
        line.starts_with("frames=")
            && field(line, "main").starts_with(&prefix)
            && field(line, "worker").starts_with(&prefix)
    })
}

/// This thread's step count in a `main=` or `worker=` field (`v1/17` → 17).
fn steps(line: &str, thread: &str) -> u64 {
    let (_, steps) = field(line, thread).split_once('/').expect("version/steps");
    steps.parse().expect("a step count")
}

/// The mappings of `pid` from hotpatch's agent library (`<target>/hotpatch/agent-<hash>.so`).
fn preloaded_agent(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .expect("the program's memory map")
        .lines()
        .filter(|line| line.contains("/hotpatch/agent-"))
        .map(str::to_owned)
        .collect()
}

/// How many threads of `pid` are a runtime's agent (both the linked and the preloaded one name
/// their thread so).
fn agent_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the program's threads")
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|name| name.trim() == "hotreload-agent")
        })
        .count()
}

#[test]
fn a_crate_without_the_dependency_is_patched_with_its_state_kept() {
    let fixture = FixtureCrate::create(base(), "no-dependency", NO_DEPENDENCY);
    let mut session = start(fixture);
    assert!(!preloaded_agent(session.pid).is_empty(), "agent preloaded");
    assert_eq!(agent_threads(session.pid), 1);
    let before = frame(&mut session, "v1");
    assert_eq!(field(&before, "pointer"), "2");
    assert_eq!(field(&before, "risky"), "2");

    session
        .fixture
        .replace("format!(\"v1/{steps}\")", "format!(\"v2/{steps}\")");
    session.fixture.replace("    x + 1\n", "    x + 100\n");
    // A panic in patched code unwinds through the jump into the original `catch_unwind`: the
    // preloaded runtime registered the image's unwind info with the program's unwinder.
    session.fixture.replace(
        "    n + 1\n",
        "    assert!(n == 0, \"patched code panics\");\n    n + 1\n",
    );
    session.event("patch-applied");
    let after = frame(&mut session, "v2");
    assert_eq!(field(&after, "pointer"), "101", "{after}");
    assert_eq!(field(&after, "risky"), "0", "{after}");
    // The static and each thread's thread-local kept counting through the patch.
    assert!(
        number(&after, "frames") > number(&before, "frames"),
        "{after}"
    );
    assert!(steps(&after, "main") > steps(&before, "main"), "{after}");
    assert!(
        steps(&after, "worker") > steps(&before, "worker"),
        "{after}"
    );
    assert!(steps(&before, "main") > 1 && steps(&before, "worker") > 1);
}

#[test]
fn children_inherit_neither_the_preload_nor_the_socket() {
    let fixture = FixtureCrate::create(base(), "no-dependency-child", NO_DEPENDENCY);
    let mut session = start(fixture);
    let child = session.line_where(|line| line.starts_with("child "));
    assert_eq!(child, "child preload=[] socket=[]");
}

#[test]
fn a_program_linking_the_runtime_gets_no_preload() {
    let linked = NO_DEPENDENCY.replace(
        "    let handlers = Handlers",
        "    let _ = hotreload::generation(); // links the runtime\n    let handlers = Handlers",
    );
    let fixture = FixtureCrate::create_hot(base(), "no-dependency-linked", &linked);
    let mut session = start(fixture);
    assert_eq!(preloaded_agent(session.pid), Vec::<String>::new());
    assert_eq!(agent_threads(session.pid), 1, "exactly one agent");
    session.edit("    x + 1\n", "    x + 100\n");
    assert_eq!(field(&frame(&mut session, "v1"), "pointer"), "101");
}

#[test]
fn a_crates_io_crate_copied_unchanged_is_patched() {
    let heck = base().join("fixtures").join("third-party-heck");
    let _ = std::fs::remove_dir_all(&heck);
    let source = registry_package_dir("heck").unwrap_or_else(|error| panic!("{error}"));
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&source)
        .arg(&heck)
        .status()
        .expect("run cp");
    assert!(copied.success(), "copy {}", source.display());
    let dependency = format!("heck = {{ path = {:?} }}\n", heck.display().to_string());
    let fixture =
        FixtureCrate::create_with_dependencies(base(), "third-party", THIRD_PARTY, &dependency);
    let mut session = start(fixture);
    assert!(!preloaded_agent(session.pid).is_empty(), "agent preloaded");
    let line = session.line_where(|line| line.starts_with("frame="));
    assert_eq!(field(&line, "camel"), "HelloHotWorld");

    // heck's own `capitalize` (upper camel case): its first letter in lower case from now on.
    session.fixture.replace_in(
        &heck.join("src/lib.rs").display().to_string(),
        "char_indices.next() {\n        write!(f, \"{}\", c.to_uppercase())?;",
        "char_indices.next() {\n        write!(f, \"{}\", c.to_lowercase())?;",
    );
    session.event("patch-applied");
    session.drain_lines();
    let line = session.line_where(|line| line.starts_with("frame="));
    assert_eq!(field(&line, "camel"), "hellohotworld", "{line}");
}
