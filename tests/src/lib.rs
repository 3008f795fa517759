//! What only the end-to-end tests need; the session driver and fixture crates are `testkit`'s.
pub mod examples;
#[cfg(test)]
// Each fixture is a whole program: its `main` and helpers are dead code as a module.
#[allow(dead_code)]
mod fixture_programs;
pub mod http;
pub mod image;
pub mod live;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The `hotpatch` binary of this checkout, built on first use.
pub fn hotpatch_exe() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        testkit::checkout::build_hotpatch(false, None).unwrap_or_else(|error| panic!("{error}"))
    })
}
