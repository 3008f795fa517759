//! The example programs of `examples/`, run as a user would: a copy of the package (the tests
//! edit it) under `hotpatch run`, in the target directory the fixtures share.

use crate::live::LiveSession;
use std::path::Path;
use std::time::Duration;
use testkit::checkout::checkout_dir;
use testkit::fixture::FixtureCrate;

/// How long the first build may take: the first test to run an example compiles its
/// dependencies (bevy_ecs: about a minute on two busy cores).
const FIRST_BUILD: Duration = Duration::from_secs(600);

/// Starts a copy of `examples/<name>` (whose package is `name` too) under `base`, with
/// `program_args`; waits for its first line.
pub fn start_example(base: &Path, name: &str, program_args: &[&str]) -> LiveSession {
    let source = checkout_dir().join("examples").join(name);
    let fixture = FixtureCrate::copy_package(base, name, &source);
    LiveSession::start_first_build(fixture, program_args, FIRST_BUILD)
}
