//! `hotpatch revisions`: the revision store of the selected target.

use super::args::{MessageFormat, OutputArgs, TargetSelection};
use super::store_and_target;
use crate::output::report;
use clap::Args;
use linker_shim::Result;
use std::process::ExitCode;

#[derive(Args)]
pub struct RevisionsArgs {
    #[command(flatten)]
    selection: TargetSelection,
    #[command(flatten)]
    output: OutputArgs,
}

pub fn execute(args: &RevisionsArgs) -> Result<ExitCode> {
    let (store, target) = store_and_target(&args.selection)?;
    let pinned = store.pinned()?;
    for revision in store.list_for(&target)? {
        let is_pinned = pinned.contains(&revision.id);
        match args.output.message_format {
            MessageFormat::Human => println!("{}", report::revision_line(&revision, is_pinned)),
            MessageFormat::Json => println!("{}", report::revision_json(&revision, is_pinned)),
        }
    }
    Ok(ExitCode::SUCCESS)
}
