//! The example programs of `examples/`, run as a user would: a copy of the package (the tests
//! edit it) under `hotpatch run`, in the target directory the fixtures share.

use crate::live::LiveSession;
use std::path::Path;
use testkit::checkout::checkout_dir;
use testkit::fixture::FixtureCrate;

/// Starts a copy of `examples/<name>` (whose package is `name` too) under `base`, with
/// `program_args`; waits for its first line. Compiling it may take minutes the first time.
pub fn start_example(base: &Path, name: &str, program_args: &[&str]) -> LiveSession {
    let source = checkout_dir().join("examples").join(name);
    LiveSession::start(
        FixtureCrate::copy_package(base, name, &source),
        program_args,
    )
}
