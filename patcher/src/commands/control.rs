//! `hotpatch restart`, `undo`, `quit` and `log`: drive a running `hotpatch run` of this
//! project from another terminal, while its program has the first one (see
//! [`crate::run::FoundSession`]).

use super::args::TargetSelection;
use crate::run::{FoundSession, Request};
use clap::Args;
use linker_shim::Result;
use std::process::ExitCode;

/// Which session: the only one running in the project's target directory, or the one of the
/// selected target.
#[derive(Args)]
pub struct ControlArgs {
    #[command(flatten)]
    selection: TargetSelection,
}

#[derive(Args)]
pub struct LogArgs {
    #[command(flatten)]
    selection: TargetSelection,
    /// Keep printing new lines until the session ends
    #[arg(short, long)]
    follow: bool,
}

/// Has the session do `request`.
pub fn execute(args: &ControlArgs, request: Request) -> Result<ExitCode> {
    let session = FoundSession::find(&args.selection)?;
    session.send(request)?;
    eprintln!(
        "{:>12} `{}` to the hotpatch of {} (pid {})",
        "Sent",
        request.word(),
        session.record.target,
        session.record.pid
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the session's log (and follows it).
pub fn log(args: &LogArgs) -> Result<ExitCode> {
    FoundSession::find(&args.selection)?.show_log(args.follow)?;
    Ok(ExitCode::SUCCESS)
}
