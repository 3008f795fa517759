//! The usual loop, for comparison: `cargo build` after the edit, then start the new executable
//! and wait for its first frame.

use super::readings::timestamp_ns;
use super::realtime_ns;
use linker_shim::{Context, Error, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One rebuild + restart.
#[derive(Debug, Clone, Copy)]
pub struct RebuildRestart {
    /// `cargo build` alone.
    pub build: Duration,
    /// From the end of the build to the program's first frame.
    pub restart: Duration,
}

/// Plain `cargo build` of one package of a workspace (the user's own build, without hotpatch).
pub struct CargoBuild {
    pub cargo: PathBuf,
    pub manifest_path: PathBuf,
    pub package: String,
    pub target_dir: PathBuf,
}

impl CargoBuild {
    pub fn run(&self) -> Result<()> {
        let output = Command::new(&self.cargo)
            .args(["build", "--quiet", "-p", &self.package, "--manifest-path"])
            .arg(&self.manifest_path)
            .arg("--target-dir")
            .arg(&self.target_dir)
            .output()
            .context(|| format!("could not run {}", self.cargo.display()))?;
        if !output.status.success() {
            return Err(Error::new(format!(
                "cargo build -p {} failed:\n{}",
                self.package,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// Where the dev-profile executable lands.
    pub fn executable(&self) -> PathBuf {
        self.target_dir.join("debug").join(&self.package)
    }

    /// Builds, starts the executable, waits for its `first-frame` line, and stops it.
    pub fn rebuild_and_restart(&self) -> Result<RebuildRestart> {
        let build_started = realtime_ns();
        self.run()?;
        let built = realtime_ns();
        let mut program = Command::new(self.executable())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context(|| format!("could not start {}", self.executable().display()))?;
        let stdout = program.stdout.take().expect("stdout is piped");
        let first_frame = BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
            .find(|line| line.starts_with("first-frame "));
        // Closing stdin ends the program.
        drop(program.stdin.take());
        let _ = program.wait();
        let first_frame = first_frame
            .ok_or_else(|| Error::new(format!("{} printed no first frame", self.package)))?;
        let nanos = |from: u128, to: u128| Duration::from_nanos(to.saturating_sub(from) as u64);
        Ok(RebuildRestart {
            build: nanos(build_started, built),
            restart: nanos(built, timestamp_ns(&first_frame)?),
        })
    }
}
