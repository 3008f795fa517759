//! `hotpatch build`: build through cargo and record the link as a revision.

use super::args::CargoArgs;
use crate::capture::build::build;
use crate::capture::wrapper::current_exe;
use crate::output::events::{Event, Reporter};
use linker_shim::Result;
use std::process::ExitCode;

pub fn execute(args: &CargoArgs) -> Result<ExitCode> {
    let outcome = build(args, &current_exe()?)?;
    let reporter = Reporter::for_build(args.output.message_format, outcome.target.name.clone());
    reporter.emit(Event::BuildFinished { outcome: &outcome });
    Ok(ExitCode::SUCCESS)
}
