//! A long session: the generated `soak` program is patched again and again, each edit giving
//! `value()` a new number, so every patch links and maps a new image. How fast patches go
//! over the whole run, whether hotpatch's memory and descriptors stay flat, and how the
//! program's memory grows against the pages its images occupy.

use super::generator::{SoakProgram, SOAK_PACKAGE};
use super::measure::{start_hotpatch_run, Setup, PATCH_PATIENCE};
use super::readings::resident_kib;
use super::report::median;
use linker_shim::{Error, Result};
use serde::Serialize;
use std::time::Instant;
use testkit::process::{image_pages_kib, open_fds};
use testkit::session::{field, Event};

/// What a soak run measured. "Start" is once the program runs, before the first patch.
#[derive(Debug, Clone, Serialize)]
pub struct Soak {
    pub patches: u32,
    /// From the first edit to the last patch's value shown by the program.
    pub seconds: f64,
    pub patches_per_second: f64,
    pub hotpatch_rss_kib: [u64; 2],
    pub hotpatch_fds: [usize; 2],
    pub program_rss_kib: [u64; 2],
    /// The pages every image mapped makes accessible (what the program's growth compares to).
    pub image_pages_kib: u64,
    /// How long the program's threads were held per patch: median, and at the last patch.
    pub stopped_ms_median: f64,
    pub stopped_ms_last: f64,
}

impl Soak {
    /// Human lines.
    pub fn render(&self) -> String {
        let growth = self.program_rss_kib[1] as i64 - self.program_rss_kib[0] as i64;
        format!(
            "soak: {} patches, each a new image, in {:.1} s: {:.2} patches/s\n\
             hotpatch: RSS {} → {} KiB, {} → {} open descriptors\n\
             program: RSS {} → {} KiB ({growth:+} KiB: {:.2}× the {} KiB its images map)\n\
             threads stopped per patch: median {:.2} ms, last patch {:.2} ms\n",
            self.patches,
            self.seconds,
            self.patches_per_second,
            self.hotpatch_rss_kib[0],
            self.hotpatch_rss_kib[1],
            self.hotpatch_fds[0],
            self.hotpatch_fds[1],
            self.program_rss_kib[0],
            self.program_rss_kib[1],
            growth as f64 / self.image_pages_kib as f64,
            self.image_pages_kib,
            self.stopped_ms_median,
            self.stopped_ms_last,
        )
    }
}

/// Runs the soak program under `hotpatch run` and patches it `patches` times, each time
/// waiting until the program shows the new value.
pub fn measure(
    setup: &Setup,
    program: &SoakProgram,
    patches: u32,
    progress: &dyn Fn(&str),
) -> Result<Soak> {
    // A run interrupted earlier may have left an edited version behind.
    program.write_version(0)?;
    let mut live = start_hotpatch_run(setup, SOAK_PACKAGE)?;
    live.wait_line(|line| line.starts_with("value="))?;
    live.patience = PATCH_PATIENCE;
    let hotpatch = live.hotpatch_pid();
    let (hotpatch_start, program_start) = (resident_kib(hotpatch)?.0, resident_kib(live.pid)?.0);
    let fds_start = open_fds(hotpatch)?;
    let started = Instant::now();
    let mut image_pages = 0;
    let mut stopped = Vec::new();
    for version in 1..=patches {
        program.write_version(version)?;
        let event = live.wait_event("patch-applied")?;
        let Event::PatchApplied {
            image: Some(image),
            ms,
            ..
        } = &event
        else {
            return Err(Error::new(format!(
                "patch {version} is new code, yet no new image: {event:?}"
            )));
        };
        image_pages += image_pages_kib(image)?;
        stopped.push(ms.stopped);
        let value = version.to_string();
        live.wait_line(|line| field(line, "value") == Some(value.as_str()))?;
        if version % 100 == 0 {
            progress(&format!(
                "{version}/{patches} patches, {:.1} s",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let soak = Soak {
        patches,
        seconds,
        patches_per_second: f64::from(patches) / seconds,
        hotpatch_rss_kib: [hotpatch_start, resident_kib(hotpatch)?.0],
        hotpatch_fds: [fds_start, open_fds(hotpatch)?],
        program_rss_kib: [program_start, resident_kib(live.pid)?.0],
        image_pages_kib: image_pages,
        stopped_ms_median: median(&stopped),
        stopped_ms_last: stopped.last().copied().unwrap_or(f64::NAN),
    };
    live.stop()?;
    Ok(soak)
}
