//! Driving a real `hotpatch run --message-format json` from the bench: hotpatch's JSON events
//! and the program's stdout lines arrive on one channel, in the order they were read, so the
//! bench can wait for "the patch was applied *and* the new code ran".

use linker_shim::{Context, Error, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// What came out of a running session.
#[derive(Debug, Clone)]
pub enum Output {
    /// One of hotpatch's JSON events (its stderr).
    Event(Value),
    /// One line the program printed (hotpatch passes the program's stdout through).
    Line(String),
}

/// Events that end any wait: the session will not produce what the bench waits for.
const FAILURES: [&str; 4] = ["compile-error", "patch-refused", "app-exited", "warning"];

/// A running `hotpatch run` and the program under it.
pub struct LiveRun {
    hotpatch: Child,
    /// Closing it ends the program (the generated programs exit at the end of stdin), and
    /// hotpatch exits with it.
    program_stdin: Option<ChildStdin>,
    outputs: Receiver<Output>,
    pub hotpatch_pid: u32,
    pub program_pid: u32,
}

impl LiveRun {
    /// Starts `hotpatch run -p <package>` and waits until the program ran its first frame
    /// and hotpatch watches the sources (the first build may take minutes).
    pub fn start(
        hotpatch_exe: &Path,
        manifest_path: &Path,
        package: &str,
        target_dir: &Path,
        patience: Duration,
    ) -> Result<LiveRun> {
        let mut hotpatch = Command::new(hotpatch_exe)
            .args(["run", "--message-format", "json", "-p", package])
            .arg("--manifest-path")
            .arg(manifest_path)
            .arg("--target-dir")
            .arg(target_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(|| format!("could not start {}", hotpatch_exe.display()))?;
        let (sender, outputs) = mpsc::channel();
        forward(hotpatch.stdout.take(), sender.clone(), |line| {
            Some(Output::Line(line))
        });
        // cargo's progress lines share hotpatch's stderr; only JSON objects are events.
        forward(hotpatch.stderr.take(), sender, |line| {
            serde_json::from_str(&line).ok().map(Output::Event)
        });
        let mut run = LiveRun {
            hotpatch_pid: hotpatch.id(),
            program_stdin: hotpatch.stdin.take(),
            hotpatch,
            outputs,
            program_pid: 0,
        };
        // The three arrive in any order: the program may print before hotpatch watches.
        let (mut pid, mut watching, mut first_frame) = (None, false, false);
        run.program_pid = run.wait_for(Instant::now() + patience, |output| {
            if let Some(started) = event_named(output, "app-started") {
                pid = started["pid"].as_u64().and_then(|pid| pid.try_into().ok());
            }
            watching |= event_named(output, "watching").is_some();
            first_frame |= line_starting(output, "first-frame ").is_some();
            pid.filter(|_| watching && first_frame)
        })?;
        Ok(run)
    }

    /// Reads outputs until `wanted` picks one; fails on a failure event or at `deadline`.
    pub fn wait_for<T>(
        &mut self,
        deadline: Instant,
        mut wanted: impl FnMut(&Output) -> Option<T>,
    ) -> Result<T> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let output = self.outputs.recv_timeout(left).map_err(|_| {
                Error::new("timed out waiting for hotpatch run (or it stopped printing)")
            })?;
            if let Some(found) = wanted(&output) {
                return Ok(found);
            }
            if let Output::Event(event) = &output {
                let name = event["event"].as_str().unwrap_or_default();
                if FAILURES.contains(&name) {
                    return Err(Error::new(format!("hotpatch run reported {event}")));
                }
            }
        }
    }

    /// Ends the program by closing its stdin and waits for hotpatch to exit with it.
    pub fn stop(mut self) -> Result<()> {
        self.program_stdin = None;
        self.hotpatch
            .wait()
            .context(|| "could not wait for hotpatch run".to_string())?;
        Ok(())
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        // On an error path: the program ends with its stdin; hotpatch may be mid-build.
        self.program_stdin = None;
        let _ = self.hotpatch.kill();
        let _ = self.hotpatch.wait();
    }
}

/// Sends each line of `stream` that `convert` keeps, on a thread of its own.
fn forward(
    stream: Option<impl Read + Send + 'static>,
    sender: Sender<Output>,
    convert: impl Fn(String) -> Option<Output> + Send + 'static,
) {
    let Some(stream) = stream else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(stream)
            .lines()
            .map_while(std::result::Result::ok)
        {
            if let Some(output) = convert(line) {
                if sender.send(output).is_err() {
                    break;
                }
            }
        }
    });
}

/// The event, if `output` is the event `name`.
pub fn event_named(output: &Output, name: &str) -> Option<Value> {
    match output {
        Output::Event(event) if event["event"] == name => Some(event.clone()),
        _ => None,
    }
}

/// The line, if `output` is a program line starting with `prefix`.
pub fn line_starting(output: &Output, prefix: &str) -> Option<String> {
    match output {
        Output::Line(line) if line.starts_with(prefix) => Some(line.clone()),
        _ => None,
    }
}

/// The value of `key=` in a `key=value key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

/// The `t=` of a `first-frame` or `first-call` line: CLOCK_REALTIME nanoseconds.
pub fn timestamp_ns(line: &str) -> Result<u128> {
    field(line, "t")
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| Error::new(format!("no `t=<ns>` in {line:?}")))
}

/// A process's resident set (`VmRSS`) and its peak (`VmHWM`), in KiB, from `/proc`.
pub fn resident_kib(pid: u32) -> Result<(u64, u64)> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).context(|| format!("could not read {path}"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| Error::new(format!("no {key} in {path}")))
    };
    Ok((kib("VmRSS:")?, kib("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_timestamps_of_program_lines() {
        let line = "first-call version=3 t=1700000000123456789";
        assert_eq!(field(line, "version"), Some("3"));
        assert_eq!(timestamp_ns(line).unwrap(), 1_700_000_000_123_456_789);
        assert!(timestamp_ns("first-frame checksum=1").is_err());
    }

    #[test]
    fn own_resident_set_is_read() {
        let (rss, peak) = resident_kib(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
