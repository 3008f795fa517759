//! One program, measured: a live `hotpatch run` session takes the same one-line edit (in the
//! binary crate or in a library) `repeats` times; after each patch the compiler floor and the usual rebuild + restart are
//! measured on the same sources, so all three see the same edit on the same noisy machine.

use super::floor::CompilerFloor;
use super::generator::{crate_name, GeneratedProgram};
use super::readings::{resident_kib, timestamp_ns};
use super::realtime_ns;
use super::rebuild::CargoBuild;
use hotreload_abi::events::CrateMillis;
use linker_shim::{Context, Error, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use testkit::session::{field, hotpatch_command, Event, Launch, Session};

/// The first `hotpatch run` of a program builds it (and, for the first program, the
/// runtime's dependencies) from scratch.
const BUILD_PATIENCE: Duration = Duration::from_secs(600);
/// One patch of the largest program, on two busy cores.
pub const PATCH_PATIENCE: Duration = Duration::from_secs(180);

/// Where and with what the programs are built and patched.
pub struct Setup {
    pub hotpatch_exe: PathBuf,
    pub cargo: PathBuf,
    pub manifest_path: PathBuf,
    /// The generated programs' cargo target directory (hotpatch keeps its own under it).
    pub target_dir: PathBuf,
    /// Scratch space for the floor's caches.
    pub scratch: PathBuf,
}

/// One edit, all measurements, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// From just before the edit is written to the program's first call of the new version.
    pub edit_to_running: f64,
    /// hotpatch's `ms` breakdown of the patch (`total` is detection to applied).
    pub hotpatch_total: f64,
    pub rustc: f64,
    pub diff: f64,
    pub link: f64,
    pub load: f64,
    /// hotpatch's compiler time per crate, in order (patch-applied's `crates`).
    pub crates: Vec<CrateMillis>,
    /// The sum of `floor_crates`.
    pub floor: f64,
    /// The floor's compiler time per crate, in the same order.
    pub floor_crates: Vec<CrateMillis>,
    pub cargo_build: f64,
    pub restart: f64,
    pub image_bytes: u64,
    /// Functions the image defines (changed, added, and callers relinked).
    pub relinked: usize,
}

impl Sample {
    /// diff + link + load: hotpatch's own cost, everything but rustc.
    pub fn patch_overhead(&self) -> f64 {
        self.diff + self.link + self.load
    }
}

/// Resident memory, KiB.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Memory {
    pub hotpatch_rss: u64,
    pub hotpatch_peak: u64,
    pub program_before_first_patch: u64,
    pub program_after_last_patch: u64,
}

/// Everything measured on one program.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramMeasurement {
    /// As `--sizes` spells it.
    pub label: String,
    /// The row's name in the tables.
    pub title: String,
    pub lines: usize,
    pub library_lines: usize,
    /// From `app-started` to `watching` (ms): how long the session took, program started, to
    /// be ready to patch.
    pub session_start_ms: f64,
    /// From `watching` to the first edit's write (ms): the warm-up, or the program's
    /// first frame if that came later (with --edit-during-warm-up the warm-up may still run).
    pub first_edit_after_watching_ms: f64,
    /// In order: the first is the session's first patch.
    pub samples: Vec<Sample>,
    pub memory: Memory,
    /// The functions whose entries the patches redirected (demangled); empty when every
    /// edit reached the program through `#[hotreload]` slots.
    pub redirected: BTreeSet<String>,
}

/// When a session's first edit is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstEdit {
    /// Once the session says `warmed-up`: what a person who starts the program and then edits
    /// gets.
    AfterWarmUp,
    /// As soon as the program has run a frame: the warm-up is stopped, and the first patch
    /// pays for it.
    AtOnce,
}

/// Measures `program` over `repeats` edits, the first written as `first_edit` says;
/// `progress` gets a line per step.
pub fn measure(
    setup: &Setup,
    program: &GeneratedProgram,
    repeats: u32,
    first_edit: FirstEdit,
    progress: &dyn Fn(&str),
) -> Result<ProgramMeasurement> {
    let cargo_build = CargoBuild {
        cargo: setup.cargo.clone(),
        manifest_path: setup.manifest_path.clone(),
        package: program.package.clone(),
        target_dir: setup.target_dir.clone(),
    };
    progress("plain cargo build (untimed: the usual loop then starts from a warm cache)");
    cargo_build.run()?;
    // The floor's caches come from hotpatch's build before the session starts: its compile
    // then never competes with the session's background warm-up build.
    progress("hotpatch build, and the compiler floor's caches from it");
    hotpatch_build(setup, &program.package)?;
    let floor = CompilerFloor::prepare(
        &setup.target_dir,
        &crate_name(&program.package),
        &program.edit.crate_name,
        &setup.scratch.join("floor").join(program.spec.label()),
    )?;
    progress("hotpatch run: start, watch");
    let mut live = start_hotpatch_run(setup, &program.package)?;
    let watching = Instant::now();
    let session_start = live
        .start_to_watching
        .ok_or_else(|| Error::new("the session's start was not waited for"))?;
    progress(&format!(
        "ready to patch {:.0} ms after the program started",
        millis(session_start)
    ));
    live.wait_line(|line| line.starts_with("first-frame "))?;
    live.patience = PATCH_PATIENCE;
    let program_before = resident_kib(live.pid)?.0;
    if first_edit == FirstEdit::AfterWarmUp {
        live.wait_event("warmed-up")?;
        progress(&format!(
            "warmed up {:.0} ms after `watching`",
            millis(watching.elapsed())
        ));
    }
    let first_edit_after_watching = watching.elapsed();
    let mut samples = Vec::new();
    let mut redirected = BTreeSet::new();
    for version in 1..=repeats {
        let written_at = realtime_ns();
        program.write_version(version)?;
        let (patch, first_call) = wait_for_version(&mut live, program.edit.site, version)?;
        let mut sample = patch_sample(&patch, &mut redirected)?;
        sample.edit_to_running = millis_between(written_at, timestamp_ns(&first_call)?);
        sample.floor_crates = floor.compile()?;
        sample.floor = sample.floor_crates.iter().map(|krate| krate.ms).sum();
        let usual = cargo_build.rebuild_and_restart()?;
        (sample.cargo_build, sample.restart) = (millis(usual.build), millis(usual.restart));
        let first = if version == 1 { " (first patch)" } else { "" };
        progress(&format!(
            "edit {version}/{repeats}{first}: running after {:.0} ms (rustc {:.0}); floor {:.0} ms; rebuild + restart {:.0} ms",
            sample.edit_to_running,
            sample.rustc,
            sample.floor,
            sample.cargo_build + sample.restart
        ));
        samples.push(sample);
    }
    let (hotpatch_rss, hotpatch_peak) = resident_kib(live.hotpatch_pid())?;
    let memory = Memory {
        hotpatch_rss,
        hotpatch_peak,
        program_before_first_patch: program_before,
        program_after_last_patch: resident_kib(live.pid)?.0,
    };
    live.stop()?;
    Ok(ProgramMeasurement {
        label: program.spec.label(),
        title: program.spec.title(),
        lines: program.lines,
        library_lines: program.library_lines,
        session_start_ms: millis(session_start),
        first_edit_after_watching_ms: millis(first_edit_after_watching),
        samples,
        memory,
        redirected,
    })
}

/// `hotpatch` on `package` of the bench's workspace, with the patience of a first build.
fn launch<'a>(setup: &'a Setup, package: &'a str) -> Launch<'a> {
    Launch {
        hotpatch_exe: &setup.hotpatch_exe,
        manifest_path: &setup.manifest_path,
        package: Some(package),
        target_dir: &setup.target_dir,
        program_args: &[],
        patience: BUILD_PATIENCE,
        umask: None,
        env: &[],
        release: false,
    }
}

/// Starts `hotpatch run` of `package`, with the patience of a first build.
pub fn start_hotpatch_run(setup: &Setup, package: &str) -> Result<Session> {
    Session::start(&launch(setup, package))
}

/// `hotpatch build` of `package`: the build (and its recorded rustc invocations) that
/// `hotpatch run` then finds up to date.
fn hotpatch_build(setup: &Setup, package: &str) -> Result<()> {
    let output = hotpatch_command(&launch(setup, package), "build")
        .output()
        .context(|| format!("could not run {}", setup.hotpatch_exe.display()))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "hotpatch build -p {package} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// Waits for both the `patch-applied` event and the program's `first-call site=<site>
/// version=<version>` line, whichever comes first.
fn wait_for_version(live: &mut Session, site: &str, version: u32) -> Result<(Event, String)> {
    let version = version.to_string();
    let patch = live.wait_event("patch-applied")?;
    let first_call = live.wait_line(|line| {
        line.starts_with("first-call ")
            && field(line, "site") == Some(site)
            && field(line, "version") == Some(version.as_str())
    })?;
    Ok((patch, first_call))
}

/// hotpatch's timings and the image size from a `patch-applied` event; adds the functions it
/// redirected to `redirected`.
fn patch_sample(event: &Event, redirected: &mut BTreeSet<String>) -> Result<Sample> {
    let Event::PatchApplied {
        ms,
        image,
        relinked,
        redirected: entries,
        crates,
        ..
    } = event
    else {
        return Err(Error::new(format!("not a patch-applied event: {event:?}")));
    };
    let image_bytes = image
        .as_ref()
        .map_or(0, |path| std::fs::metadata(path).map_or(0, |m| m.len()));
    redirected.extend(entries.iter().cloned());
    Ok(Sample {
        hotpatch_total: ms.total,
        rustc: ms.rustc,
        diff: ms.diff,
        link: ms.link,
        load: ms.load,
        crates: crates.clone(),
        image_bytes,
        relinked: *relinked,
        ..Sample::default()
    })
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn millis_between(from_ns: u128, to_ns: u128) -> f64 {
    to_ns.saturating_sub(from_ns) as f64 / 1e6
}
