//! The runtime's call overhead, in the same run: the generated `call-overhead` package times
//! a `#[hotreload]` call, and a call of a function whose entry jumps to the new version (an
//! entry redirect, written in-process with `hotreload::set_entries` as a patch writes it),
//! against an `#[inline(never)]` direct call of the same body.
//!
//! It is a separate program because this crate depends on `hotreload` with the attribute
//! compiled out; it is built at opt-level 3 (the slot's load and indirect call are inlined
//! into the caller, so the caller's optimisation is what is measured).

use super::rebuild::CargoBuild;
use super::report::median;
use linker_shim::{Context, Error, Result};
use serde::Serialize;
use std::process::Command;
use testkit::session::field;

/// Median nanoseconds per call, loop included in both.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CallOverhead {
    pub direct_ns: f64,
    pub slot_ns: f64,
    /// A direct call of a redirected function: the call, then the `jmp` at its entry.
    pub redirected_ns: f64,
}

impl CallOverhead {
    /// What the slot adds to each call.
    pub fn added_ns(&self) -> f64 {
        self.slot_ns - self.direct_ns
    }

    /// What the jump at a redirected entry adds to each call.
    pub fn redirect_added_ns(&self) -> f64 {
        self.redirected_ns - self.direct_ns
    }
}

/// Builds and runs the package; medians over its rounds.
pub fn measure(build: &CargoBuild) -> Result<CallOverhead> {
    build.run()?;
    let exe = build.executable();
    let output = Command::new(&exe)
        .output()
        .context(|| format!("could not run {}", exe.display()))?;
    parse_rounds(&String::from_utf8_lossy(&output.stdout))
}

fn parse_rounds(stdout: &str) -> Result<CallOverhead> {
    let column = |key: &str| -> Vec<f64> {
        stdout
            .lines()
            .filter_map(|line| field(line, key)?.parse().ok())
            .collect()
    };
    let (direct, slot, redirected) = (
        column("direct_ns"),
        column("slot_ns"),
        column("redirected_ns"),
    );
    if direct.is_empty() || direct.len() != slot.len() || direct.len() != redirected.len() {
        return Err(Error::new(format!(
            "unexpected call-overhead output:\n{stdout}"
        )));
    }
    Ok(CallOverhead {
        direct_ns: median(&direct),
        slot_ns: median(&slot),
        redirected_ns: median(&redirected),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_the_rounds() {
        let stdout = "round direct_ns=1.5 slot_ns=2.0 redirected_ns=1.6\n\
                      round direct_ns=1.0 slot_ns=1.9 redirected_ns=1.4\n\
                      round direct_ns=1.2 slot_ns=9.0 redirected_ns=1.5\n";
        let overhead = parse_rounds(stdout).unwrap();
        assert_eq!(
            (overhead.direct_ns, overhead.slot_ns, overhead.redirected_ns),
            (1.2, 2.0, 1.5)
        );
        assert!((overhead.added_ns() - 0.8).abs() < 1e-9);
        assert!((overhead.redirect_added_ns() - 0.3).abs() < 1e-9);
        assert!(parse_rounds("").is_err());
        assert!(parse_rounds("round direct_ns=1.5 slot_ns=2.0\n").is_err());
    }
}
