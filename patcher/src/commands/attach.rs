//! `hotpatch attach`: patch a program whose `hotpatch run` is gone (see [`crate::run::attach`]).

use crate::capture::wrapper::current_exe;
pub use crate::run::AttachArgs;
use linker_shim::Result;
use std::process::ExitCode;

/// Attaches and serves until the program exits or the person lets go of it.
pub fn execute(args: &AttachArgs) -> Result<ExitCode> {
    crate::run::attach(args, &current_exe()?)
}
