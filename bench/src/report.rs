//! From samples to what the bench claims: medians per program, the ratios against the two
//! baselines, the session's first patch apart from the later ones, and the targets, checked
//! against the numbers rather than asserted.

use super::call_overhead::CallOverhead;
use super::measure::{ProgramMeasurement, Sample};
use super::stop_time::StopTimes;
use hotreload_abi::events::CrateMillis;
use serde::Serialize;
use std::time::Duration;

/// The sizes whose diff + link + load has a target, smallest first.
pub const SIZED: [&str; 3] = ["1k", "10k", "50k"];
/// The smallest of [`SIZED`]: the largest's diff + link + load should be like its.
pub const SMALLEST: &str = SIZED[0];
/// The largest of [`SIZED`], whose diff + link + load should be like the smallest's, and
/// whose hotpatch memory has a target.
pub const LARGEST: &str = SIZED[2];
/// The program with registry dependencies, as `--sizes` spells it.
pub const WITH_DEPENDENCIES: &str = "deps";
/// Everything but rustc (diff + link + load), milliseconds, at each of [`SIZED`].
pub const OVERHEAD_TARGET_MS: f64 = 25.0;
/// "Flat": the largest program's diff + link + load within this factor of the smallest's.
pub const FLATNESS_TARGET: f64 = 1.5;
/// Edit-to-running may take this many times the compiler floor, on every program.
pub const FLOOR_RATIO_TARGET: f64 = 1.15;
/// hotpatch's rustc time may take this many times the compiler floor, on every program.
pub const RUSTC_RATIO_TARGET: f64 = 1.03;
/// Edit-to-running as a share of cargo build + restart, on every program: below it.
pub const REBUILD_RATIO_TARGET: f64 = 1.0;
/// The same share on the program with registry dependencies, whose rebuild pays their link:
/// at most this much.
pub const DEPENDENCIES_REBUILD_RATIO_TARGET: f64 = 0.5;
/// A session's first patch may take this many times the median of its later ones.
pub const FIRST_PATCH_RATIO_TARGET: f64 = 1.2;
/// hotpatch's peak resident memory on the largest program, MiB.
pub const RSS_TARGET_MIB: f64 = 150.0;
/// What a `#[hotreload]` call may add, nanoseconds.
pub const CALL_TARGET_NS: f64 = 1.0;
/// How long a patch may stop the program's threads (every patch: judged on the max), ms.
pub const STOP_TARGET_MS: f64 = 1.0;

/// The median; the mean of the middle two for an even count, NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One program's medians over the edits after its session's first (milliseconds unless
/// named otherwise), and that first patch apart.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramSummary {
    /// As `--sizes` spells it.
    pub label: String,
    /// The row's name in the tables.
    pub title: String,
    pub lines: usize,
    pub library_lines: usize,
    /// How many edits the medians are of: every edit but the session's first.
    pub later_edits: usize,
    pub edit_to_running: f64,
    pub floor: f64,
    pub rebuild_restart: f64,
    pub cargo_build: f64,
    pub restart: f64,
    pub rustc: f64,
    pub diff: f64,
    pub link: f64,
    pub load: f64,
    /// diff + link + load: hotpatch's own cost, everything but rustc.
    pub patch_overhead: f64,
    /// Edit-to-running minus hotpatch's `total`: the watcher (its debounce), the file write,
    /// and the wait for the program's next frame.
    pub outside_patch: f64,
    pub ratio_to_floor: f64,
    /// hotpatch's rustc time ÷ the compiler floor: what compiling under hotpatch adds.
    pub rustc_to_floor: f64,
    pub ratio_to_rebuild_restart: f64,
    /// The session's first patch: it may pay for what the session had not done yet.
    pub first_patch: FirstPatch,
    /// From `watching` to the first edit's write.
    pub first_edit_after_watching: f64,
    /// The first patch's edit-to-running ÷ the later ones' median.
    pub first_to_later: f64,
    /// From `app-started` to `watching`: program started → ready to patch.
    pub session_start: f64,
    pub hotpatch_rss_mib: f64,
    pub hotpatch_peak_mib: f64,
    pub program_growth_kib_per_patch: f64,
    pub image_kib: f64,
    /// Functions the image defines (changed, added, callers relinked), median.
    pub relinked: f64,
    /// How the edits reached the running code: the functions whose entries were redirected;
    /// empty when only `#[hotreload]` slots were rewired.
    pub redirected: Vec<String>,
    /// Each crate compiled for a patch, in order (the binary crate last).
    pub per_crate: Vec<CrateSummary>,
}

/// A session's first patch, milliseconds (NaN when no edit was measured).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FirstPatch {
    pub edit_to_running: f64,
    pub rustc: f64,
    /// diff + link + load.
    pub patch_overhead: f64,
}

impl FirstPatch {
    fn of(sample: Option<&Sample>) -> FirstPatch {
        let read = |value: fn(&Sample) -> f64| sample.map_or(f64::NAN, value);
        FirstPatch {
            edit_to_running: read(|s| s.edit_to_running),
            rustc: read(|s| s.rustc),
            patch_overhead: read(Sample::patch_overhead),
        }
    }
}

/// One crate's compiler time for a patch and for the floor, medians in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CrateSummary {
    pub name: String,
    pub rustc: f64,
    pub floor: f64,
}

/// The crates hotpatch compiled for the edits (in the order of the first patch), with the
/// median of their times in hotpatch's patches and in the floor.
fn per_crate(samples: &[Sample]) -> Vec<CrateSummary> {
    let median_of = |name: &str, times: fn(&Sample) -> &[CrateMillis]| {
        let values: Vec<f64> = samples
            .iter()
            .flat_map(|sample| times(sample).iter().filter(|k| k.name == name))
            .map(|krate| krate.ms)
            .collect();
        median(&values)
    };
    samples.first().map_or(Vec::new(), |first| {
        first
            .crates
            .iter()
            .map(|krate| CrateSummary {
                name: krate.name.clone(),
                rustc: median_of(&krate.name, |s| &s.crates),
                floor: median_of(&krate.name, |s| &s.floor_crates),
            })
            .collect()
    })
}

impl ProgramSummary {
    pub fn of(measured: &ProgramMeasurement) -> ProgramSummary {
        let (first, later) = measured
            .samples
            .split_first()
            .map_or((None, &[][..]), |(first, later)| (Some(first), later));
        let of = |value: fn(&Sample) -> f64| median(&later.iter().map(value).collect::<Vec<_>>());
        let edit_to_running = of(|s| s.edit_to_running);
        let floor = of(|s| s.floor);
        let rustc = of(|s| s.rustc);
        let rebuild_restart = of(|s| s.cargo_build + s.restart);
        let first_patch = FirstPatch::of(first);
        let memory = &measured.memory;
        let growth =
            memory.program_after_last_patch as f64 - memory.program_before_first_patch as f64;
        ProgramSummary {
            label: measured.label.clone(),
            title: measured.title.clone(),
            lines: measured.lines,
            library_lines: measured.library_lines,
            later_edits: later.len(),
            edit_to_running,
            floor,
            rebuild_restart,
            cargo_build: of(|s| s.cargo_build),
            restart: of(|s| s.restart),
            rustc,
            diff: of(|s| s.diff),
            link: of(|s| s.link),
            load: of(|s| s.load),
            patch_overhead: of(Sample::patch_overhead),
            outside_patch: of(|s| s.edit_to_running - s.hotpatch_total),
            ratio_to_floor: edit_to_running / floor,
            rustc_to_floor: rustc / floor,
            ratio_to_rebuild_restart: edit_to_running / rebuild_restart,
            first_patch,
            first_edit_after_watching: measured.first_edit_after_watching_ms,
            first_to_later: first_patch.edit_to_running / edit_to_running,
            session_start: measured.session_start_ms,
            hotpatch_rss_mib: memory.hotpatch_rss as f64 / 1024.0,
            hotpatch_peak_mib: memory.hotpatch_peak as f64 / 1024.0,
            program_growth_kib_per_patch: growth / measured.samples.len().max(1) as f64,
            image_kib: of(|s| s.image_bytes as f64) / 1024.0,
            relinked: of(|s| s.relinked as f64),
            redirected: measured.redirected.iter().cloned().collect(),
            per_crate: per_crate(later),
        }
    }
}

/// One target and how the run did against it.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    /// The program it is checked on (as `--sizes` spells it); `None` for a target of the
    /// whole run.
    pub program: Option<String>,
    pub measured: String,
    /// `None`: this run did not measure it (e.g. `--sizes` left out the program it needs).
    pub met: Option<bool>,
}

/// Which programs a per-program target is checked on.
enum Applies {
    Every,
    /// These, by `--sizes` label; each one not run is reported as not measured.
    Only(&'static [&'static str]),
}

/// A target each program (of those it applies to) is checked against on its own.
struct ProgramTarget {
    target: String,
    applies: Applies,
    /// What was measured, for the reader, and whether it meets the target.
    judge: fn(&ProgramSummary) -> (String, bool),
}

/// `1.58 × (188 vs 119 ms)`.
fn ratio_text(ratio: f64, measured: f64, against: f64) -> String {
    format!("{ratio:.2} × ({measured:.0} vs {against:.0} ms)")
}

/// Edit-to-running against cargo build + restart, as [`ratio_text`] writes it.
fn rebuild_ratio_text(p: &ProgramSummary) -> String {
    ratio_text(
        p.ratio_to_rebuild_restart,
        p.edit_to_running,
        p.rebuild_restart,
    )
}

/// The per-program targets of the issues, in their order.
fn program_targets() -> [ProgramTarget; 7] {
    [
        ProgramTarget {
            target: format!("diff + link + load ≤ {OVERHEAD_TARGET_MS} ms"),
            applies: Applies::Only(&SIZED),
            judge: |p| {
                let text = format!("{:.1} ms", p.patch_overhead);
                (text, p.patch_overhead <= OVERHEAD_TARGET_MS)
            },
        },
        ProgramTarget {
            target: format!("edit → running ≤ {FLOOR_RATIO_TARGET} × compiler floor"),
            applies: Applies::Every,
            judge: |p| {
                let text = ratio_text(p.ratio_to_floor, p.edit_to_running, p.floor);
                (text, p.ratio_to_floor <= FLOOR_RATIO_TARGET)
            },
        },
        ProgramTarget {
            target: format!("rustc under hotpatch ≤ {RUSTC_RATIO_TARGET} × compiler floor"),
            applies: Applies::Every,
            judge: |p| {
                let text = ratio_text(p.rustc_to_floor, p.rustc, p.floor);
                (text, p.rustc_to_floor <= RUSTC_RATIO_TARGET)
            },
        },
        ProgramTarget {
            target: "edit → running below cargo build + restart".into(),
            applies: Applies::Every,
            judge: |p| {
                let met = p.ratio_to_rebuild_restart < REBUILD_RATIO_TARGET;
                (rebuild_ratio_text(p), met)
            },
        },
        ProgramTarget {
            target: format!(
                "edit → running ≤ {DEPENDENCIES_REBUILD_RATIO_TARGET} × cargo build + restart"
            ),
            applies: Applies::Only(&[WITH_DEPENDENCIES]),
            judge: |p| {
                let met = p.ratio_to_rebuild_restart <= DEPENDENCIES_REBUILD_RATIO_TARGET;
                (rebuild_ratio_text(p), met)
            },
        },
        ProgramTarget {
            target: format!("first patch ≤ {FIRST_PATCH_RATIO_TARGET} × median of the later ones"),
            applies: Applies::Every,
            judge: |p| {
                let text = ratio_text(
                    p.first_to_later,
                    p.first_patch.edit_to_running,
                    p.edit_to_running,
                );
                (text, p.first_to_later <= FIRST_PATCH_RATIO_TARGET)
            },
        },
        ProgramTarget {
            target: format!("hotpatch RSS (peak) ≤ {RSS_TARGET_MIB} MiB"),
            applies: Applies::Only(&[LARGEST]),
            judge: |p| {
                let text = format!("{:.0} MiB", p.hotpatch_peak_mib);
                (text, p.hotpatch_peak_mib <= RSS_TARGET_MIB)
            },
        },
    ]
}

impl ProgramTarget {
    /// The check on each program it applies to, and a "not measured" one for each program
    /// it names that this run did not measure.
    fn checks(&self, programs: &[ProgramSummary]) -> Vec<TargetCheck> {
        let judged = |program: &ProgramSummary| {
            let (measured, met) = (self.judge)(program);
            TargetCheck {
                target: self.target.clone(),
                program: Some(program.label.clone()),
                measured,
                met: Some(met),
            }
        };
        match self.applies {
            Applies::Every => programs.iter().map(judged).collect(),
            Applies::Only(labels) => labels
                .iter()
                .map(|label| match programs.iter().find(|p| p.label == *label) {
                    Some(program) => judged(program),
                    None => TargetCheck {
                        target: self.target.clone(),
                        program: Some(label.to_string()),
                        measured: format!("`{label}` was not run"),
                        met: None,
                    },
                })
                .collect(),
        }
    }
}

/// What kind of run this was, for the wall-time target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunKind {
    /// Every default: all programs, 7 edits each, 20 stop-time patches.
    FullDefault,
    /// `--quick`.
    Quick,
    /// Any other choice of programs, edits or patches: no wall-time target.
    Custom,
}

impl RunKind {
    /// How long the run may take, wall time; `None` for a custom run.
    pub fn wall_time_target(self) -> Option<Duration> {
        match self {
            RunKind::FullDefault => Some(Duration::from_secs(15 * 60)),
            RunKind::Quick => Some(Duration::from_secs(3 * 60)),
            RunKind::Custom => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            RunKind::FullDefault => "the full default run",
            RunKind::Quick => "--quick",
            RunKind::Custom => "a custom run",
        }
    }
}

/// How the bench was run, and how long it took.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `git describe --always --dirty` of the hotpatch checkout.
    pub commit: String,
    pub repeats: u32,
    pub kind: RunKind,
    /// The whole run, from the bench's start (builds included) to the report, seconds.
    pub wall_time_s: f64,
}

/// `6 min 22 s`.
fn minutes_and_seconds(seconds: f64) -> String {
    let whole = seconds.round() as u64;
    format!("{} min {} s", whole / 60, whole % 60)
}

/// The targets of the issues: each program's, then the whole run's.
pub fn check_targets(
    programs: &[ProgramSummary],
    calls: &CallOverhead,
    stops: &StopTimes,
    run: &RunInfo,
) -> Vec<TargetCheck> {
    let mut checks: Vec<TargetCheck> = program_targets()
        .iter()
        .flat_map(|target| target.checks(programs))
        .collect();
    let whole_run = |target: String, measured: String, met: Option<bool>| TargetCheck {
        target,
        program: None,
        measured,
        met,
    };
    let labelled = |label: &str| programs.iter().find(|p| p.label == label);
    let flatness = labelled(SMALLEST)
        .zip(labelled(LARGEST))
        .map(|(small, large)| (large.patch_overhead / small.patch_overhead, small, large));
    checks.push(whole_run(
        format!("diff + link + load flat: {LARGEST} ≤ {FLATNESS_TARGET} × {SMALLEST}"),
        flatness.map_or(
            format!("needs `{SMALLEST}` and `{LARGEST}`"),
            |(ratio, small, large)| {
                format!(
                    "{ratio:.2} × ({} {:.1} ms → {} {:.1} ms)",
                    small.label, small.patch_overhead, large.label, large.patch_overhead
                )
            },
        ),
        flatness.map(|(ratio, ..)| ratio <= FLATNESS_TARGET),
    ));
    checks.push(whole_run(
        format!("a #[hotreload] call adds < {CALL_TARGET_NS} ns"),
        format!("{:+.2} ns", calls.added_ns()),
        Some(calls.added_ns() < CALL_TARGET_NS),
    ));
    checks.push(whole_run(
        format!(
            "threads stopped per patch < {STOP_TARGET_MS} ms with {} busy threads (max)",
            stops.busy_threads
        ),
        format!(
            "median {:.2} ms, max {:.2} ms over {} patches",
            stops.median_ms,
            stops.max_ms,
            stops.samples_ms.len()
        ),
        Some(stops.max_ms < STOP_TARGET_MS),
    ));
    let wall_time = minutes_and_seconds(run.wall_time_s);
    let wall_time_target = run.kind.wall_time_target();
    checks.push(whole_run(
        match wall_time_target {
            Some(target) => format!(
                "whole run < {} min ({})",
                target.as_secs() / 60,
                run.kind.name()
            ),
            None => "whole run: no wall-time target for a custom run".into(),
        },
        wall_time,
        wall_time_target.map(|target| run.wall_time_s < target.as_secs_f64()),
    ));
    checks
}

/// A whole run, as printed and as `--json` emits it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub run: RunInfo,
    pub cores: usize,
    pub programs: Vec<ProgramSummary>,
    pub call_overhead: CallOverhead,
    /// How long patches stopped the threads of the stop-time program.
    pub stop_time: StopTimes,
    pub targets: Vec<TargetCheck>,
    /// Every sample, for anyone who distrusts medians.
    pub measurements: Vec<ProgramMeasurement>,
}

impl Report {
    pub fn new(
        run: RunInfo,
        measurements: Vec<ProgramMeasurement>,
        call_overhead: CallOverhead,
        stop_time: StopTimes,
    ) -> Report {
        let programs: Vec<_> = measurements.iter().map(ProgramSummary::of).collect();
        Report {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            targets: check_targets(&programs, &call_overhead, &stop_time, &run),
            run,
            programs,
            call_overhead,
            stop_time,
            measurements,
        }
    }

    /// Markdown tables (they paste into the README as they are) and the target checks.
    pub fn render(&self) -> String {
        let mut out = format!(
            "hotpatch-bench: commit {}, {} cores; each program's session is started fresh, and \
             its first edit is the session's first patch: the tables show medians of the {} \
             edits after it (ms unless noted), the first patch has a table of its own\n\n",
            self.run.commit,
            self.cores,
            self.run.repeats.saturating_sub(1)
        );
        out.push_str("| program | lines | edit → running (later patches) | compiler floor | ÷ floor | cargo build + restart | ÷ rebuild+restart |\n|---|---|---|---|---|---|---|\n");
        for p in &self.programs {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} + {:.0} = {:.0} | {:.2} |\n",
                p.title,
                lines(p),
                p.edit_to_running,
                p.floor,
                p.ratio_to_floor,
                p.cargo_build,
                p.restart,
                p.rebuild_restart,
                p.ratio_to_rebuild_restart
            ));
        }
        out.push_str("\n| program (later patches) | rustc | ÷ floor | diff | link | load | diff+link+load | outside the patch (watcher, frame) |\n|---|---|---|---|---|---|---|---|\n");
        for p in &self.programs {
            out.push_str(&format!(
                "| {} | {:.0} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
                p.title,
                p.rustc,
                p.rustc_to_floor,
                p.diff,
                p.link,
                p.load,
                p.patch_overhead,
                p.outside_patch
            ));
        }
        out.push_str("\n| program | first edit written after `watching` (after `warmed-up` unless --edit-during-warm-up) | first patch: edit → running (rustc, diff+link+load) | later patches: edit → running (median) | first ÷ later |\n|---|---|---|---|---|\n");
        for p in &self.programs {
            out.push_str(&format!(
                "| {} | {:.0} ms | {:.0} ({:.0}, {:.1}) | {:.0} | {:.2} |\n",
                p.title,
                p.first_edit_after_watching,
                p.first_patch.edit_to_running,
                p.first_patch.rustc,
                p.first_patch.patch_overhead,
                p.edit_to_running,
                p.first_to_later
            ));
        }
        let multi_crate: Vec<_> = self
            .programs
            .iter()
            .filter(|p| p.per_crate.len() > 1)
            .collect();
        if !multi_crate.is_empty() {
            out.push_str(
                "\n| program | rustc per crate, in order: hotpatch (floor) |\n|---|---|\n",
            );
            for p in multi_crate {
                out.push_str(&format!("| {} | {} |\n", p.title, crate_times(p)));
            }
        }
        out.push_str(
            "\n| program | session start (app-started → watching) | hotpatch RSS (peak) | program RSS growth / patch |\n|---|---|---|---|\n",
        );
        for p in &self.programs {
            out.push_str(&format!(
                "| {} | {:.0} ms | {:.0} MiB ({:.0} MiB) | {:.0} KiB |\n",
                p.title,
                p.session_start,
                p.hotpatch_rss_mib,
                p.hotpatch_peak_mib,
                p.program_growth_kib_per_patch,
            ));
        }
        out.push_str("\n| program | patch image | link | functions in the image | edits reached through |\n|---|---|---|---|---|\n");
        for p in &self.programs {
            out.push_str(&format!(
                "| {} | {:.0} KiB | {:.1} ms | {:.0} | {} |\n",
                p.title,
                p.image_kib,
                p.link,
                p.relinked,
                reached_through(p)
            ));
        }
        out.push_str(
            "\nEdits of a function that is not `#[hotreload]` get a jump at its old entry \
             (patch-applied's `redirected`): its callers are no longer relinked, so the image \
             holds the changed functions only. hotpatch has no caller-relinking mode left to \
             compare against.\n",
        );
        let calls = &self.call_overhead;
        out.push_str(&format!(
            "\n| call (opt-level 3, loop included) | ns/call | vs direct |\n|---|---|---|\n\
             | direct `#[inline(never)]` (never patched: nothing extra) | {:.3} | 1.00 |\n\
             | through a `#[hotreload]` slot | {:.3} | {:.2} (**{:+.2} ns**) |\n\
             | of a redirected function (call + `jmp` at its entry) | {:.3} | {:.2} (**{:+.2} ns**) |\n",
            calls.direct_ns,
            calls.slot_ns,
            calls.slot_ns / calls.direct_ns,
            calls.added_ns(),
            calls.redirected_ns,
            calls.redirected_ns / calls.direct_ns,
            calls.redirect_added_ns()
        ));
        let stops = &self.stop_time;
        out.push_str(&format!(
            "\n| entry patching, {} busy threads calling the edited function through a fn pointer | median | max |\n|---|---|---|\n\
             | threads stopped per patch ({} patches, target < {STOP_TARGET_MS} ms) | {:.2} ms | {:.2} ms |\n",
            stops.busy_threads,
            stops.samples_ms.len(),
            stops.median_ms,
            stops.max_ms
        ));
        out.push_str(&self.render_targets());
        out
    }

    /// Each program's targets as a table (a column per program; `—` where a target does not
    /// apply), then the whole run's targets and those not measured, one line each.
    fn render_targets(&self) -> String {
        let measured_here = |check: &&TargetCheck| check.program.is_some() && check.met.is_some();
        let mut rows: Vec<&str> = Vec::new();
        for check in self.targets.iter().filter(measured_here) {
            if !rows.contains(&check.target.as_str()) {
                rows.push(&check.target);
            }
        }
        let labels: Vec<&str> = self.programs.iter().map(|p| p.label.as_str()).collect();
        let mut out = format!(
            "\nTargets per program (later patches' medians, first patch against them):\n\n| target | {} |\n|---|{}\n",
            labels.join(" | "),
            "---|".repeat(labels.len())
        );
        for row in rows {
            let cells: Vec<String> = labels
                .iter()
                .map(|label| {
                    self.targets
                        .iter()
                        .filter(measured_here)
                        .find(|c| c.target == row && c.program.as_deref() == Some(label))
                        .map_or("—".into(), |c| {
                            format!("{}: {}", verdict(c.met), c.measured)
                        })
                })
                .collect();
            out.push_str(&format!("| {row} | {} |\n", cells.join(" | ")));
        }
        out.push_str("\nTargets of the whole run, and those not measured:\n");
        for check in self.targets.iter().filter(|c| !measured_here(c)) {
            let program = check
                .program
                .as_ref()
                .map_or(String::new(), |label| format!(" ({label})"));
            out.push_str(&format!(
                "- {}: {}{program} — {}\n",
                verdict(check.met),
                check.target,
                check.measured
            ));
        }
        out
    }
}

/// `met`, `**MISSED**` or `not measured`.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**MISSED**",
        None => "not measured",
    }
}

/// `entry redirect: `a`, `b`` or `slots only`.
fn reached_through(program: &ProgramSummary) -> String {
    if program.redirected.is_empty() {
        "`#[hotreload]` slots only".into()
    } else {
        let names: Vec<String> = program
            .redirected
            .iter()
            .map(|name| format!("`{name}`"))
            .collect();
        format!("entry redirect: {}", names.join(", "))
    }
}

/// `a 40 (35) → app 60 (55)`: each crate's median compiler time, hotpatch's and the floor's.
fn crate_times(program: &ProgramSummary) -> String {
    let times: Vec<String> = program
        .per_crate
        .iter()
        .map(|k| format!("`{}` {:.0} ({:.0})", k.name, k.rustc, k.floor))
        .collect();
    times.join(" → ")
}

fn lines(program: &ProgramSummary) -> String {
    if program.library_lines == 0 {
        program.lines.to_string()
    } else {
        format!("{} + {} in libs", program.lines, program.library_lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Memory;
    use std::collections::BTreeSet;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    /// Each crate's time, as patch-applied's `crates` holds them.
    fn crate_millis(times: &[(&str, f64)]) -> Vec<CrateMillis> {
        times
            .iter()
            .map(|&(name, ms)| CrateMillis {
                name: name.into(),
                ms,
            })
            .collect()
    }

    /// A program whose first patch took 520 ms, and the three after it 260, 250 and 999 ms
    /// against floors of 200, 100 and 300 ms.
    fn program(label: &str, lines: usize, patch_ms: f64) -> ProgramMeasurement {
        let sample = |edit_to_running: f64, floor: f64| Sample {
            edit_to_running,
            hotpatch_total: edit_to_running - 50.0,
            rustc: floor,
            diff: patch_ms / 2.0,
            link: patch_ms / 4.0,
            load: patch_ms / 4.0,
            crates: crate_millis(&[("p", floor)]),
            floor,
            floor_crates: crate_millis(&[("p", floor)]),
            cargo_build: 900.0,
            restart: 100.0,
            image_bytes: 2048,
            relinked: 1,
        };
        ProgramMeasurement {
            label: label.into(),
            title: label.into(),
            lines,
            library_lines: 0,
            session_start_ms: 640.0,
            first_edit_after_watching_ms: 90.0,
            samples: vec![
                sample(520.0, 400.0),
                sample(260.0, 200.0),
                sample(250.0, 100.0),
                sample(999.0, 300.0),
            ],
            memory: Memory {
                hotpatch_rss: 20 * 1024,
                hotpatch_peak: 30 * 1024,
                program_before_first_patch: 1000,
                program_after_last_patch: 1400,
            },
            redirected: BTreeSet::from(["p::edit_site::tint".into()]),
        }
    }

    /// The crates program edited in its deepest library: `lib` is compiled before the binary.
    fn library_edit(patch_ms: f64) -> ProgramMeasurement {
        let mut measured = program("crates-lib", 1000, patch_ms);
        measured.title = "crates (edit in the deepest library)".into();
        measured.library_lines = 600;
        for (index, sample) in measured.samples.iter_mut().enumerate() {
            let lib = 40.0 + index as f64;
            sample.crates = crate_millis(&[("lib", lib), ("p", sample.floor - lib)]);
            sample.floor_crates = crate_millis(&[("lib", lib - 5.0), ("p", sample.floor - lib)]);
        }
        measured
    }

    fn calls() -> CallOverhead {
        CallOverhead {
            direct_ns: 1.5,
            slot_ns: 1.8,
            redirected_ns: 1.75,
        }
    }

    fn stops(samples_ms: &[f64]) -> StopTimes {
        StopTimes::of(samples_ms.to_vec(), BTreeSet::from(["p::mix".into()]))
    }

    fn run(kind: RunKind, wall_time_s: f64) -> RunInfo {
        RunInfo {
            commit: "abc".into(),
            repeats: 4,
            kind,
            wall_time_s,
        }
    }

    fn summaries(measured: &[ProgramMeasurement]) -> Vec<ProgramSummary> {
        measured.iter().map(ProgramSummary::of).collect()
    }

    /// The verdict of the target starting with `target` on `program` (`None`: the whole run's).
    fn verdict_of(checks: &[TargetCheck], target: &str, program: Option<&str>) -> Option<bool> {
        let check = checks
            .iter()
            .find(|c| c.target.starts_with(target) && c.program.as_deref() == program)
            .unwrap_or_else(|| panic!("no check `{target}` on {program:?}: {checks:#?}"));
        check.met
    }

    #[test]
    fn the_first_patch_is_apart_and_medians_are_of_the_later_ones() {
        let summary = ProgramSummary::of(&program("1k", 1000, 20.0));
        assert_eq!(summary.later_edits, 3);
        assert_eq!(summary.edit_to_running, 260.0);
        assert_eq!(summary.floor, 200.0);
        assert_eq!(summary.ratio_to_floor, 1.3);
        assert_eq!(summary.rustc_to_floor, 1.0);
        assert_eq!(summary.rebuild_restart, 1000.0);
        assert_eq!(summary.ratio_to_rebuild_restart, 0.26);
        assert_eq!(summary.patch_overhead, 20.0);
        assert_eq!(summary.outside_patch, 50.0);
        assert_eq!(
            summary.first_patch,
            FirstPatch {
                edit_to_running: 520.0,
                rustc: 400.0,
                patch_overhead: 20.0
            }
        );
        assert_eq!(summary.first_to_later, 2.0);
        assert_eq!(summary.session_start, 640.0);
        assert_eq!(
            summary.program_growth_kib_per_patch, 100.0,
            "over all 4 patches"
        );
        assert_eq!(summary.image_kib, 2.0);
    }

    #[test]
    fn a_single_edit_is_a_first_patch_with_no_later_ones() {
        let mut measured = program("1k", 1000, 20.0);
        measured.samples.truncate(1);
        let summary = ProgramSummary::of(&measured);
        assert_eq!(summary.later_edits, 0);
        assert_eq!(summary.first_patch.edit_to_running, 520.0);
        assert!(summary.edit_to_running.is_nan() && summary.first_to_later.is_nan());
        let first = verdict_of(
            &ProgramTarget::checks(&program_targets()[5], &[summary]),
            "first patch",
            Some("1k"),
        );
        assert_eq!(first, Some(false), "NaN meets no target");
    }

    #[test]
    fn targets_are_judged_by_the_numbers() {
        let programs = summaries(&[program("1k", 1000, 20.0), program("50k", 50_000, 45.0)]);
        let checks = check_targets(
            &programs,
            &calls(),
            &stops(&[0.2, 0.9]),
            &run(RunKind::Quick, 150.0),
        );
        let on = |target: &str, program: &str| verdict_of(&checks, target, Some(program));
        assert_eq!(on("diff + link + load ≤ 25", "1k"), Some(true));
        assert_eq!(on("diff + link + load ≤ 25", "50k"), Some(false));
        assert_eq!(
            on("edit → running ≤ 1.15 × compiler floor", "1k"),
            Some(false)
        );
        assert_eq!(on("rustc under hotpatch", "50k"), Some(true));
        assert_eq!(on("edit → running below cargo build", "1k"), Some(true));
        assert_eq!(on("first patch ≤ 1.2", "50k"), Some(false));
        assert_eq!(on("hotpatch RSS (peak) ≤ 150 MiB", "50k"), Some(true));
        let whole = |target: &str| verdict_of(&checks, target, None);
        assert_eq!(whole("diff + link + load flat"), Some(false), "45 / 20 ms");
        assert_eq!(whole("a #[hotreload] call"), Some(true));
        assert_eq!(whole("threads stopped"), Some(true));
        assert_eq!(whole("whole run < 3 min (--quick)"), Some(true));
        assert!(
            checks
                .iter()
                .filter(|c| c.program.as_deref() == Some("1k"))
                .all(|c| c.met.is_some()),
            "every target on a measured program is judged"
        );
        let slow_stop = check_targets(
            &programs,
            &calls(),
            &stops(&[0.2, 0.3, 4.0]),
            &run(RunKind::FullDefault, 901.0),
        );
        assert_eq!(
            verdict_of(&slow_stop, "threads", None),
            Some(false),
            "the max"
        );
        assert_eq!(
            verdict_of(&slow_stop, "whole run < 15 min", None),
            Some(false)
        );
    }

    #[test]
    fn targets_of_programs_not_run_are_not_measured() {
        let programs = summaries(&[program("10k", 10_000, 20.0)]);
        let checks = check_targets(
            &programs,
            &calls(),
            &stops(&[0.2]),
            &run(RunKind::Custom, 60.0),
        );
        let not_run: Vec<_> = checks
            .iter()
            .filter(|c| c.met.is_none())
            .map(|c| (c.program.as_deref(), c.measured.as_str()))
            .collect();
        assert_eq!(
            not_run,
            [
                (Some("1k"), "`1k` was not run"),
                (Some("50k"), "`50k` was not run"),
                (Some("deps"), "`deps` was not run"),
                (Some("50k"), "`50k` was not run"),
                (None, "needs `1k` and `50k`"),
                (None, "1 min 0 s"),
            ]
        );
        assert!(checks.last().unwrap().target.contains("custom run"));
    }

    #[test]
    fn the_deps_program_is_held_to_half_the_rebuild() {
        let mut deps = program("deps", 1000, 20.0);
        let programs = summaries(&[deps.clone()]);
        let checks = check_targets(
            &programs,
            &calls(),
            &stops(&[0.2]),
            &run(RunKind::Custom, 1.0),
        );
        assert_eq!(
            verdict_of(&checks, "edit → running ≤ 0.5", Some("deps")),
            Some(true)
        );
        for sample in &mut deps.samples {
            sample.cargo_build = 400.0;
        }
        let programs = summaries(&[deps]);
        let checks = check_targets(
            &programs,
            &calls(),
            &stops(&[0.2]),
            &run(RunKind::Custom, 1.0),
        );
        // 260 ms against 400 + 100 ms: below the rebuild, but more than half of it.
        assert_eq!(
            verdict_of(&checks, "edit → running below", Some("deps")),
            Some(true)
        );
        assert_eq!(
            verdict_of(&checks, "edit → running ≤ 0.5", Some("deps")),
            Some(false)
        );
    }

    #[test]
    fn crate_times_are_medians_in_compile_order() {
        let summary = ProgramSummary::of(&library_edit(20.0));
        assert_eq!(
            summary.per_crate,
            [
                CrateSummary {
                    name: "lib".into(),
                    rustc: 42.0,
                    floor: 37.0
                },
                CrateSummary {
                    name: "p".into(),
                    rustc: 159.0,
                    floor: 159.0
                },
            ]
        );
    }

    #[test]
    fn rendered_tables_hold_the_ratios_and_the_targets() {
        let report = Report::new(
            run(RunKind::Custom, 75.0),
            vec![program("1k", 1000, 20.0)],
            calls(),
            stops(&[0.5, 2.5, 0.4]),
        );
        let text = report.render();
        assert!(text.contains("medians of the 3 edits after it"), "{text}");
        assert!(
            text.contains("| 1k | 1000 | 260 | 200 | 1.30 | 900 + 100 = 1000 | 0.26 |"),
            "{text}"
        );
        assert!(
            text.contains("| 1k | 200 | 1.00 | 10.0 | 5.0 | 5.0 | 20.0 | 50 |"),
            "{text}"
        );
        assert!(
            text.contains("| 1k | 90 ms | 520 (400, 20.0) | 260 | 2.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| 1k | 640 ms | 20 MiB (30 MiB) | 100 KiB |"),
            "{text}"
        );
        assert!(text.contains("(**+0.30 ns**)"), "{text}");
        assert!(text.contains("| 1.750 | 1.17 (**+0.25 ns**) |"), "{text}");
        assert!(
            text.contains("| 1k | 2 KiB | 5.0 ms | 1 | entry redirect: `p::edit_site::tint` |"),
            "{text}"
        );
        assert!(text.contains("| 0.50 ms | 2.50 ms |"), "{text}");
        assert!(text.contains("| target | 1k |\n|---|---|\n"), "{text}");
        assert!(
            text.contains("| diff + link + load ≤ 25 ms | met: 20.0 ms |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| edit → running ≤ 1.15 × compiler floor | **MISSED**: 1.30 × (260 vs 200 ms) |"
            ),
            "{text}"
        );
        assert!(
            text.contains("- **MISSED**: threads stopped per patch"),
            "{text}"
        );
        assert!(
            text.contains(
                "- not measured: hotpatch RSS (peak) ≤ 150 MiB (50k) — `50k` was not run"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "- not measured: whole run: no wall-time target for a custom run — 1 min 15 s"
            ),
            "{text}"
        );
        assert!(!text.contains("rustc per crate"), "one crate each: {text}");
    }

    #[test]
    fn targets_that_apply_to_some_programs_leave_the_others_blank() {
        let report = Report::new(
            run(RunKind::Custom, 1.0),
            vec![program("1k", 1000, 20.0), program("deps", 1000, 20.0)],
            calls(),
            stops(&[0.5]),
        );
        let text = report.render();
        assert!(
            text.contains("| diff + link + load ≤ 25 ms | met: 20.0 ms | — |"),
            "{text}"
        );
        assert!(
            text.contains(
                "| edit → running ≤ 0.5 × cargo build + restart | — | met: 0.26 × (260 vs 1000 ms) |"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_library_edit_is_a_row_of_its_own() {
        let report = Report::new(
            run(RunKind::Custom, 1.0),
            vec![program("1k", 1000, 20.0), library_edit(20.0)],
            calls(),
            stops(&[0.5]),
        );
        let text = report.render();
        assert!(
            text.contains(
                "| crates (edit in the deepest library) | 1000 + 600 in libs | 260 | 200 | 1.30 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| crates (edit in the deepest library) | `lib` 42 (37) → `p` 159 (159) |"
            ),
            "{text}"
        );
    }

    #[test]
    fn wall_times_read_in_minutes_and_seconds() {
        assert_eq!(minutes_and_seconds(382.4), "6 min 22 s");
        assert_eq!(minutes_and_seconds(59.6), "1 min 0 s");
        assert_eq!(RunKind::Custom.wall_time_target(), None);
    }
}
