//! The `hotpatch` binary is also the linker and the rustc wrapper of the builds it starts,
//! so `cargo install --path patcher` is the whole tool. Which role a process plays is
//! decided by the environment its parent gave it.

use crate::capture::wrapper::{run_as_rustc_wrapper, WrapRequest};
use linker_shim::{run_as_linker, LinkRequest, RoleRequest};
use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the linker or rustc-wrapper role if this process was started as one; `None` means
/// it is a normal command-line invocation. `args` excludes the program name.
pub fn run_helper_role(args: &[OsString]) -> Option<ExitCode> {
    if let Some(request) = LinkRequest::from_env() {
        return Some(match request {
            Ok(request) => run_as_linker(&request, args),
            Err(error) => report(error),
        });
    }
    WrapRequest::from_env().map(|request| match request {
        Ok(request) => run_as_rustc_wrapper(&request, args),
        Err(error) => report(error),
    })
}

fn report(error: linker_shim::Error) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}
