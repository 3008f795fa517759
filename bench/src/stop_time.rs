//! How long a patch stops the program's threads: the generated `stop-time` program keeps
//! [`BUSY_THREADS`] threads calling `busy_work::mix` through a stored fn pointer; each edit
//! of `mix` gets a jump written over its entry, and `patch-applied`'s `ms.stopped` is how
//! long the runtime held the other threads to write it.

use super::generator::{busy_work_factor, StopTimeProgram, BUSY_THREADS, STOP_TIME_PACKAGE};
use super::measure::{start_hotpatch_run, Setup, PATCH_PATIENCE};
use super::report::median;
use linker_shim::{Error, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use testkit::session::{field, Event};

/// The threads-stopped time of each patch, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct StopTimes {
    pub busy_threads: usize,
    pub median_ms: f64,
    pub max_ms: f64,
    /// Per patch, in order.
    pub samples_ms: Vec<f64>,
    /// The functions whose entries the patches redirected (demangled).
    pub redirected: BTreeSet<String>,
}

impl StopTimes {
    pub fn of(samples_ms: Vec<f64>, redirected: BTreeSet<String>) -> StopTimes {
        StopTimes {
            busy_threads: BUSY_THREADS,
            median_ms: median(&samples_ms),
            max_ms: samples_ms.iter().copied().fold(f64::NAN, f64::max),
            samples_ms,
            redirected,
        }
    }
}

/// Runs the program under `hotpatch run` and patches it `patches` times, each time waiting
/// until the new version runs.
pub fn measure(
    setup: &Setup,
    program: &StopTimeProgram,
    patches: u32,
    progress: &dyn Fn(&str),
) -> Result<StopTimes> {
    // A run interrupted earlier may have left an edited version behind.
    program.write_version(0)?;
    let mut live = start_hotpatch_run(setup, STOP_TIME_PACKAGE)?;
    live.wait_line(|line| line.starts_with("busy threads="))?;
    live.patience = PATCH_PATIENCE;
    let mut samples = Vec::new();
    let mut redirected = BTreeSet::new();
    for version in 1..=patches {
        program.write_version(version)?;
        let event = live.wait_event("patch-applied")?;
        let Event::PatchApplied {
            ms,
            redirected: entries,
            ..
        } = &event
        else {
            return Err(Error::new(format!("not a patch-applied event: {event:?}")));
        };
        let factor = busy_work_factor(version).to_string();
        live.wait_line(|line| field(line, "factor") == Some(factor.as_str()))?;
        progress(&format!(
            "patch {version}/{patches}: threads stopped {:.2} ms",
            ms.stopped
        ));
        samples.push(ms.stopped);
        redirected.extend(entries.iter().cloned());
    }
    live.stop()?;
    Ok(StopTimes::of(samples, redirected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_max_of_the_patches() {
        let times = StopTimes::of(vec![0.4, 12.0, 0.6], BTreeSet::from(["p::mix".into()]));
        assert_eq!((times.median_ms, times.max_ms), (0.6, 12.0));
        assert_eq!(times.busy_threads, 8);
        assert!(StopTimes::of(Vec::new(), BTreeSet::new()).max_ms.is_nan());
    }
}
