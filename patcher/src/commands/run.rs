//! `hotpatch run`: build, start the program, patch it on every save (see [`crate::run`]).

use crate::capture::wrapper::current_exe;
pub use crate::run::RunArgs;
use linker_shim::Result;
use std::process::ExitCode;

/// Runs the session; the exit code is the program's.
pub fn execute(args: &RunArgs) -> Result<ExitCode> {
    crate::run::run(args, &current_exe()?)
}
