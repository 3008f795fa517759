//! `hotpatch`: build a program so it can be patched, see what an edit changed, run it with
//! patches applied live. Also the linker and rustc wrapper of the builds it starts.

use clap::Parser;
use patcher::commands::Cli;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let Some(code) = patcher::capture::roles::run_helper_role(&args) {
        return code;
    }
    Cli::parse().execute()
}
