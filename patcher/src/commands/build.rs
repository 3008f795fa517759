//! `hotpatch build`: build through cargo and record the link as a revision.

use super::args::{CargoArgs, MessageFormat};
use crate::capture::build::build;
use crate::capture::wrapper::current_exe;
use crate::output::report;
use linker_shim::Result;
use std::process::ExitCode;

pub fn execute(args: &CargoArgs) -> Result<ExitCode> {
    let outcome = build(args, &current_exe()?)?;
    match args.output.message_format {
        MessageFormat::Human => eprint!("{}", report::build_human(&outcome)),
        MessageFormat::Json => println!("{}", report::build_json(&outcome)),
    }
    Ok(ExitCode::SUCCESS)
}
