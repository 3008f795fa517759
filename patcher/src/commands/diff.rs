//! `hotpatch diff`: which functions and data changed between two revisions.

use super::args::{MessageFormat, OutputArgs, TargetSelection};
use super::revision_spec::RevisionSpec;
use super::store_and_target;
use crate::output::report;
use crate::pipeline::diff::diff;
use clap::Args;
use linker_shim::Result;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Args)]
pub struct DiffArgs {
    /// Older revision
    #[arg(long, value_name = "REV", default_value = "latest~1")]
    from: RevisionSpec,
    /// Newer revision
    #[arg(long, value_name = "REV", default_value = "latest")]
    to: RevisionSpec,
    #[command(flatten)]
    selection: TargetSelection,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn execute(args: &DiffArgs) -> Result<ExitCode> {
    let (store, target) = store_and_target(&args.selection)?;
    let from = args.from.resolve(&store, &target)?;
    let to = args.to.resolve(&store, &target)?;
    let started = Instant::now();
    let diff = diff(&from, &to)?;
    let elapsed = started.elapsed();
    match args.output.message_format {
        MessageFormat::Human => print!("{}", report::diff_human(&diff, &from, &to, elapsed)),
        MessageFormat::Json => println!("{}", report::diff_json(&diff, &from, &to, elapsed)),
    }
    Ok(ExitCode::SUCCESS)
}
