//! `hotpatch-bench`: edit-to-running latency of `hotpatch run` against the compiler floor and
//! against cargo build + restart, on generated programs; see `--help`.

use clap::Parser;
use patcher::bench::{run, BenchArgs};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    match run(&args) {
        Ok(report) if args.json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("reports serialise")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hotpatch-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
