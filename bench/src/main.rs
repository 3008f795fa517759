//! `hotpatch-bench`: how long an edit takes to run in a live program, against the compiler
//! floor and against rebuild + restart, measured in one run on generated programs of several
//! sizes; hotpatch's own cost per step, memory, the call overhead of slots and entry redirects,
//! and how long a patch stops a busy program's threads.
//!
//! - [`generator`] writes the programs (one scratch cargo workspace);
//! - [`measure`] drives a real `hotpatch run` over each (`testkit`'s session; [`readings`] of
//!   the programs' timestamps and memory), and after every patch times
//!   the compiler floor ([`floor`]) and `cargo build` + restart ([`rebuild`]) on the same edit;
//! - [`call_overhead`] times a slot call and a redirected call against a direct call;
//! - [`stop_time`] patches a program of busy threads and reads how long each patch stopped them;
//! - [`soak`] (`--soak`, on its own) patches one program thousands of times, a new image each;
//! - [`report`] turns samples into medians, ratios, target checks and tables.

mod call_overhead;
mod floor;
mod generator;
mod measure;
mod readings;
mod rebuild;
mod report;
mod soak;
mod stop_time;

use clap::Parser;
use generator::{ProgramSpec, CALL_OVERHEAD_PACKAGE};
use linker_shim::{Context, Error, Result};
use measure::{FirstEdit, Setup};
use rebuild::CargoBuild;
use report::{Report, RunInfo, RunKind};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use testkit::checkout::{build_hotpatch, cargo, checkout_dir};

fn main() -> ExitCode {
    let started = Instant::now();
    let args = BenchArgs::parse();
    if let Some(patches) = args.soak {
        return match run_soak(&args, patches) {
            Ok(soak) if args.json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&soak).expect("reports serialise")
                );
                ExitCode::SUCCESS
            }
            Ok(soak) => {
                print!("{}", soak.render());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hotpatch-bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args, started) {
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

/// Options of `hotpatch-bench`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "hotpatch-bench",
    about = "Measure edit-to-running under `hotpatch run` against the compiler floor and against cargo build + restart.",
    long_about = "Measure edit-to-running under `hotpatch run` against the compiler floor and against cargo build + restart.\n\n\
        Generates programs (binary crates of about 1k, 10k and 50k lines; a 1k one that depends on a chain \
        of three workspace-local library crates; and `deps`, a 1k one whose every frame uses serde (derive) + \
        serde_json and regex and runs as a task of a current-thread tokio runtime, so its executable links \
        them as real programs do) into a scratch cargo workspace, runs each under `hotpatch run \
        --message-format json` (dev profile), and rewrites one line of a function its #[hotreload] frame \
        function calls, --repeats times: in the binary crate, or for `crates-lib` in the deepest library \
        (every other library depends on it, and the frame reaches it through each). Per edit it measures:\n\n\
        - edit → running: from just before the file write to the program's own timestamp of the first call of \
        the new version (CLOCK_REALTIME on both sides), with hotpatch's breakdown (rustc, diff, link, load);\n\
        - the compiler floor: the rustc invocations of the edited crate and of every local crate depending on \
        it, dependencies first, exactly as hotpatch recorded them, with `-C linker=/bin/true` (objects, no link), \
        each dependent's --extern on the rlib just built, their own copy of the incremental cache one edit \
        behind, same edit;\n\
        - cargo build + restart: plain `cargo build` of the edit, then the new executable until its first frame.\n\n\
        Each program is built by `hotpatch build` first (the floor's caches are copied from that build, so its \
        compiles never compete with the session), then its session is started fresh, and its first edit is the \
        session's first patch, written once the session says `warmed-up` (hotpatch's background build of the \
        unchanged sources, indexed: the first edit is then compared with it), or with --edit-during-warm-up as \
        soon as the program ran a frame (the first patch stops the warm-up and pays for it). The first patch is reported \
        on its own (edit → running, its rustc and diff + link + load, how long after `watching` it was \
        written) against the median of the later ones; every other \
        column and table is the median of the later edits (--repeats − 1). Per program also: the session's \
        start (from hotpatch's `app-started` event to its `watching` event, as the lines arrive: program \
        started → ready to patch), hotpatch's RSS and peak, the program's RSS growth per patch, patch image \
        sizes and link times with how the edits reached the program (entry redirects or slots), and each \
        crate's rustc time when an edit compiles several. Then the ns a #[hotreload] call and a call of a \
        redirected function add over a direct call, and entry patching's pause: a program whose 8 threads call \
        a function through a stored fn pointer without pause is patched --stop-patches times (two bodies \
        alternating), and the time the runtime stopped its threads to write each entry jump is read from \
        hotpatch's events (median, max).\n\n\
        Targets, each printed as met or MISSED with its numbers (per program in a table; a target whose program \
        was not run is listed as not measured): diff + link + load ≤ 25 ms at 1k, 10k and 50k, and flat (50k ≤ \
        1.5 × 1k); edit → running ≤ 1.15 × the floor and hotpatch's rustc ≤ 1.03 × the floor on every program; \
        edit → running below cargo build + restart on every program and ≤ 0.5 × on `deps`; the first patch ≤ \
        1.2 × the median of the later ones; hotpatch's peak RSS ≤ 150 MiB at 50k; a #[hotreload] call adds < \
        1 ns; threads stopped < 1 ms per patch; and the run's wall time, printed at the end: < 15 min for the \
        full default run from a clean checkout, < 3 min for --quick. --json for tools.\n\n\
        The first run builds the runtime's dependencies, serde, serde_json, regex and tokio, and every program \
        twice (through hotpatch and plainly). Measured on two cores, with the bench itself already built and \
        an empty scratch directory: the full default run 6 min 43 s, --quick 1 min 10 s (23 s once built; a \
        plain `cargo build` of the deps program from an empty target directory takes 18 s, of the 1k one 11 s).",
    after_help = "Examples:\n  \
        cargo run --release -p hotpatch-bench\n  \
        cargo run --release -p hotpatch-bench -- --sizes 1k,10k --repeats 3\n  \
        cargo run --release -p hotpatch-bench -- --quick   (1k and deps, 6 edits each, 10 stop-time patches)\n  \
        cargo run --release -p hotpatch-bench -- --json > bench.json\n  \
        cargo run --release -p hotpatch-bench -- --soak          (only the soak: 2000 patches)\n  \
        cargo run --release -p hotpatch-bench -- --soak 300"
)]
struct BenchArgs {
    /// Programs to measure: sizes of the binary crate (`1k`, `10k`, `50k`, any `<N>k`),
    /// `crates` (1k lines plus a chain of three workspace-local library crates, edited in the
    /// binary crate), `crates-lib` (the same program, edited in its deepest library) and `deps`
    /// (1k lines whose frames use serde + serde_json, regex and tokio)
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SIZES)]
    sizes: Vec<ProgramSpec>,

    /// Edits per program, each session's first included: the first patch is reported on its
    /// own, the tables show medians of the others
    #[arg(long, default_value_t = DEFAULT_REPEATS, value_parser = clap::value_parser!(u32).range(2..))]
    repeats: u32,

    /// Patches of the busy-threads program whose thread-stop times give the median and max
    #[arg(long, value_name = "N", default_value_t = DEFAULT_STOP_PATCHES, value_parser = clap::value_parser!(u32).range(1..))]
    stop_patches: u32,

    /// Write each program's first edit as soon as the program has run a frame, while
    /// hotpatch's background warm-up may still run (the first patch then stops it and pays
    /// for it: the worst case), instead of once the session says `warmed-up`
    #[arg(long)]
    edit_during_warm_up: bool,

    /// A quick run: `--sizes 1k,deps --repeats 6 --stop-patches 10` (on two cores 23 s once
    /// the dependencies are built, 1 min 10 s from an empty scratch directory; its wall-time
    /// target is 3 minutes)
    #[arg(long, conflicts_with_all = ["sizes", "repeats", "stop_patches", "soak"])]
    quick: bool,

    /// Measure only a long session instead: PATCHES edits of one small program, each new code
    /// (a new image every time); reports patches/s, hotpatch's RSS and open descriptors at the
    /// start and the end, and the program's RSS growth against the pages its images map
    #[arg(long, value_name = "PATCHES", num_args = 0..=1, default_missing_value = "2000",
          value_parser = clap::value_parser!(u32).range(1..))]
    soak: Option<u32>,

    /// Print the report as one JSON object (medians, targets and every sample) on stdout;
    /// progress still goes to stderr
    #[arg(long)]
    json: bool,

    /// Scratch directory for the generated programs and their builds
    /// [default: <hotpatch checkout>/target/hotpatch-bench]
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
}

/// The programs, edits and stop-time patches of the full default run.
const DEFAULT_SIZES: &str = "1k,10k,50k,crates,crates-lib,deps";
const DEFAULT_REPEATS: u32 = 7;
const DEFAULT_STOP_PATCHES: u32 = 20;

/// Those of `--quick`: the demo-sized program and the one with registry dependencies, enough
/// edits for a first patch and a median of five later ones.
const QUICK_SIZES: &str = "1k,deps";
const QUICK_REPEATS: u32 = 6;
const QUICK_STOP_PATCHES: u32 = 10;

/// What a run measures, once `--quick` is resolved.
#[derive(Debug, PartialEq)]
struct Plan {
    sizes: Vec<ProgramSpec>,
    repeats: u32,
    stop_patches: u32,
    kind: RunKind,
}

impl BenchArgs {
    fn plan(&self) -> Plan {
        if self.quick {
            return Plan {
                sizes: programs(QUICK_SIZES),
                repeats: QUICK_REPEATS,
                stop_patches: QUICK_STOP_PATCHES,
                kind: RunKind::Quick,
            };
        }
        let full_default = self.sizes == programs(DEFAULT_SIZES)
            && self.repeats == DEFAULT_REPEATS
            && self.stop_patches == DEFAULT_STOP_PATCHES;
        Plan {
            sizes: self.sizes.clone(),
            repeats: self.repeats,
            stop_patches: self.stop_patches,
            kind: if full_default {
                RunKind::FullDefault
            } else {
                RunKind::Custom
            },
        }
    }
}

/// The programs of a comma-separated list this file spells out.
fn programs(list: &str) -> Vec<ProgramSpec> {
    list.split(',')
        .map(|label| label.parse().expect("the presets name programs"))
        .collect()
}

/// Runs the whole bench (which began at `started`); progress lines go to stderr.
fn run(args: &BenchArgs, started: Instant) -> Result<Report> {
    let plan = args.plan();
    let (setup, workspace) = prepare(args, &plan.sizes)?;
    let cargo = setup.cargo.clone();
    eprintln!("hotpatch-bench: call overhead (builds the runtime's dependencies on a first run)");
    let call_overhead = call_overhead::measure(&CargoBuild {
        cargo,
        manifest_path: setup.manifest_path.clone(),
        package: CALL_OVERHEAD_PACKAGE.into(),
        target_dir: setup.target_dir.clone(),
    })?;
    eprintln!(
        "hotpatch-bench: threads stopped per patch ({} busy threads, {} patches)",
        generator::BUSY_THREADS,
        plan.stop_patches
    );
    let stop_time = stop_time::measure(
        &setup,
        &workspace.stop_time,
        plan.stop_patches,
        &|step: &str| eprintln!("hotpatch-bench: {}: {step}", generator::STOP_TIME_PACKAGE),
    )?;
    let mut measurements = Vec::new();
    for program in &workspace.programs {
        let progress = |step: &str| eprintln!("hotpatch-bench: {}: {step}", program.spec.label());
        measurements.push(measure::measure(
            &setup,
            program,
            plan.repeats,
            if args.edit_during_warm_up {
                FirstEdit::AtOnce
            } else {
                FirstEdit::AfterWarmUp
            },
            &progress,
        )?);
    }
    let run = RunInfo {
        commit: describe_commit(checkout_dir()),
        repeats: plan.repeats,
        kind: plan.kind,
        wall_time_s: started.elapsed().as_secs_f64(),
    };
    Ok(Report::new(run, measurements, call_overhead, stop_time))
}

/// Builds hotpatch and generates the programs of `sizes` (and the fixed packages).
fn prepare(args: &BenchArgs, sizes: &[ProgramSpec]) -> Result<(Setup, generator::BenchWorkspace)> {
    let checkout = checkout_dir();
    let scratch = args
        .scratch
        .clone()
        .unwrap_or_else(|| checkout.join("target/hotpatch-bench"));
    eprintln!("hotpatch-bench: building hotpatch");
    let hotpatch_exe = build_hotpatch_like_this_bench()?;
    let workspace = generator::generate(
        &scratch.join("programs"),
        sizes,
        &checkout.join("hotreload"),
        &checkout.join("Cargo.lock"),
    )?;
    let setup = Setup {
        hotpatch_exe,
        cargo: cargo(),
        manifest_path: workspace.manifest_path.clone(),
        target_dir: scratch.join("target"),
        scratch,
    };
    Ok((setup, workspace))
}

/// Runs only the soak (`--soak`); progress lines go to stderr.
fn run_soak(args: &BenchArgs, patches: u32) -> Result<soak::Soak> {
    let (setup, workspace) = prepare(args, &[])?;
    eprintln!("hotpatch-bench: soak: {patches} patches, each a new image");
    soak::measure(&setup, &workspace.soak, patches, &|step: &str| {
        eprintln!("hotpatch-bench: soak: {step}")
    })
}

/// CLOCK_REALTIME in nanoseconds, the clock the generated programs print.
pub fn realtime_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos())
}

/// Builds (or finds up to date) the `hotpatch` binary of the bench's own profile and target
/// directory, so the bench measures the hotpatch it was built with.
fn build_hotpatch_like_this_bench() -> Result<PathBuf> {
    let bench = std::env::current_exe().context(|| "could not locate hotpatch-bench".into())?;
    let profile_dir = bench
        .parent()
        .ok_or_else(|| Error::new("hotpatch-bench has no directory"))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| Error::new("hotpatch-bench is not in a cargo target directory"))?;
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    build_hotpatch(release, Some(target_dir))
}

/// `git describe --always --dirty`, or `unknown` outside a git checkout.
fn describe_commit(checkout: &Path) -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(checkout)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map_or("unknown".into(), |output| {
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(args: &[&str]) -> Plan {
        BenchArgs::try_parse_from(["hotpatch-bench"].iter().chain(args))
            .unwrap()
            .plan()
    }

    #[test]
    fn quick_is_a_preset_and_only_the_defaults_are_the_full_run() {
        let quick = plan_of(&["--quick"]);
        assert_eq!(quick.sizes, programs("1k,deps"));
        assert_eq!((quick.repeats, quick.stop_patches), (6, 10));
        assert_eq!(quick.kind, RunKind::Quick);
        let full = plan_of(&[]);
        assert_eq!(full.kind, RunKind::FullDefault);
        assert_eq!(full.sizes.last(), Some(&ProgramSpec::WithDependencies));
        assert_eq!(plan_of(&["--repeats", "3"]).kind, RunKind::Custom);
        assert_eq!(plan_of(&["--sizes", "1k"]).kind, RunKind::Custom);
        let flags = ["--quick", "--sizes", "1k"].iter();
        assert!(BenchArgs::try_parse_from(["hotpatch-bench"].iter().chain(flags)).is_err());
        assert_eq!(
            plan_of(&["--edit-during-warm-up"]).kind,
            RunKind::FullDefault,
            "the same programs and edits"
        );
        let one_edit = ["hotpatch-bench", "--repeats", "1"];
        assert!(
            BenchArgs::try_parse_from(one_edit).is_err(),
            "no later patch"
        );
    }
}
