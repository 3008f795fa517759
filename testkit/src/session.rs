//! A real `hotpatch run --message-format json` and the program under it. hotpatch's stderr and
//! the program's stdout (which hotpatch passes through) are each read on a thread of their own
//! into one channel; a wait for an event keeps the lines it passes for a later wait for a line,
//! and the other way round, so "the patch was applied" and "the new code printed" can be
//! waited for one after the other, in either order of arrival.

pub use hotreload_abi::events::Event;
use linker_shim::{Context, Error, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

/// Events that end a wait for another event: the session won't produce what was asked for.
const FAILURES: [&str; 4] = ["compile-error", "patch-refused", "app-exited", "warning"];

/// A line hotpatch printed on its stderr.
#[derive(Debug, Clone)]
pub enum Report {
    /// Boxed: a `patch-applied` is large next to a line of text.
    Event(Box<Event>),
    /// Not an event: cargo's progress or a fatal error of hotpatch, kept so a failure shows it.
    Text(String),
}

impl Report {
    /// The one place hotpatch's stderr is parsed: a line that is not an [`Event`] (not JSON,
    /// or JSON of another shape) stays text, so a failing wait still shows it.
    fn parse(line: String) -> Report {
        match serde_json::from_str::<Event>(&line) {
            Ok(event) => Report::Event(Box::new(event)),
            Err(_) => Report::Text(line),
        }
    }

    /// The event's name (its `"event"` tag, e.g. `patch-applied`), if this is an event.
    fn event_name(&self) -> Option<String> {
        match self {
            Report::Event(event) => event_name(event),
            Report::Text(_) => None,
        }
    }
}

/// What the reader threads send.
enum Output {
    /// A line of hotpatch's stderr and when it was read.
    Report(Report, Instant),
    /// A line of the program's stdout.
    Line(String),
}

/// What to run: `hotpatch run` on `manifest_path` (package `package`, if given).
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    pub hotpatch_exe: &'a Path,
    pub manifest_path: &'a Path,
    pub package: Option<&'a str>,
    pub target_dir: &'a Path,
    pub program_args: &'a [&'a str],
    /// How long the first build and start may take.
    pub patience: Duration,
    /// The file mode creation mask hotpatch runs with (`None`: this process's).
    pub umask: Option<libc::mode_t>,
    /// Environment variables for hotpatch (and so the program).
    pub env: &'a [(&'a str, &'a str)],
    /// Build with the release profile (`--release`).
    pub release: bool,
}

/// A running `hotpatch run --message-format json` and the program under it.
pub struct Session {
    hotpatch: Child,
    /// The program's stdin (hotpatch passes its own on when it is not a terminal); closing it
    /// ends programs that read it to the end.
    program_stdin: Option<ChildStdin>,
    outputs: Receiver<Output>,
    /// Program lines read and not yet taken by a wait.
    lines: VecDeque<String>,
    /// Reports read and not yet taken by a wait, with when each was read.
    reports: VecDeque<(Report, Instant)>,
    /// Every report a wait has taken, in order.
    seen: Vec<Report>,
    /// The program's pid, from the latest `app-started`.
    pub pid: u32,
    /// From the latest `app-started` to the `watching` after it, by when hotpatch's lines were
    /// read: how long the program ran before an edit could be patched. `None` until a start
    /// was waited for (an attached session has none).
    pub start_to_watching: Option<Duration>,
    /// How long each wait may take.
    pub patience: Duration,
}

impl Session {
    /// Starts hotpatch and waits until the program runs and hotpatch watches its sources.
    pub fn start(launch: &Launch) -> Result<Session> {
        let mut command = hotpatch_command(launch, "run");
        command.arg("--").args(launch.program_args);
        let mut session = Session::spawn(command, launch)?;
        session.wait_started()?;
        Ok(session)
    }

    /// Starts `hotpatch attach [PID]` (on `launch`'s project; its program arguments are
    /// unused) and waits until it has attached to the program and watches its sources.
    pub fn attach(launch: &Launch, pid: Option<u32>) -> Result<Session> {
        let mut command = hotpatch_command(launch, "attach");
        command.args(pid.map(|pid| pid.to_string()));
        let mut session = Session::spawn(command, launch)?;
        let attached = session.wait_event("attached")?;
        let Event::Attached { pid, .. } = attached else {
            return Err(Error::new(format!("not attached: {attached:?}")));
        };
        session.pid = pid;
        session.wait_event("watching")?;
        Ok(session)
    }

    fn spawn(mut command: Command, launch: &Launch) -> Result<Session> {
        let mut hotpatch = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context(|| format!("could not start {}", launch.hotpatch_exe.display()))?;
        let (sender, outputs) = mpsc::channel();
        forward(hotpatch.stdout.take(), sender.clone(), Output::Line);
        forward(hotpatch.stderr.take(), sender, |line| {
            let read_at = Instant::now();
            Output::Report(Report::parse(line), read_at)
        });
        Ok(Session {
            program_stdin: hotpatch.stdin.take(),
            hotpatch,
            outputs,
            lines: VecDeque::new(),
            reports: VecDeque::new(),
            seen: Vec::new(),
            pid: 0,
            start_to_watching: None,
            patience: launch.patience,
        })
    }

    /// Waits for the program to be started (again, after a restart) and watched; updates
    /// [`Session::pid`] and [`Session::start_to_watching`].
    pub fn wait_started(&mut self) -> Result<()> {
        let (started, started_at) = self.wait_event_read_at("app-started")?;
        let Event::AppStarted { pid } = started else {
            return Err(Error::new(format!("not app-started: {started:?}")));
        };
        self.pid = pid;
        let (_, watching_at) = self.wait_event_read_at("watching")?;
        self.start_to_watching = Some(watching_at.saturating_duration_since(started_at));
        Ok(())
    }

    /// The next event named `name`; fails on a `compile-error`, `patch-refused`, `app-exited`
    /// or `warning` it did not ask for.
    pub fn wait_event(&mut self, name: &str) -> Result<Event> {
        Ok(self.wait_event_read_at(name)?.0)
    }

    /// [`Session::wait_event`], and when hotpatch's line of the event was read.
    fn wait_event_read_at(&mut self, name: &str) -> Result<(Event, Instant)> {
        self.wait_event_where(name, |report| {
            match report
                .event_name()
                .filter(|kind| FAILURES.contains(&kind.as_str()))
            {
                Some(_) => Err(Error::new(format!("waiting for `{name}`, got {report:#?}"))),
                None => Ok(()),
            }
        })
    }

    /// The next event named `name`, whatever comes before it.
    pub fn wait_event_skipping(&mut self, name: &str) -> Result<Event> {
        Ok(self.wait_event_where(name, |_| Ok(()))?.0)
    }

    /// Takes reports until the event `name`, showing every other one to `passing`; the event
    /// and when its line was read.
    fn wait_event_where(
        &mut self,
        name: &str,
        passing: impl Fn(&Report) -> Result<()>,
    ) -> Result<(Event, Instant)> {
        let deadline = Instant::now() + self.patience;
        loop {
            while let Some((report, read_at)) = self.reports.pop_front() {
                self.seen.push(report.clone());
                match &report {
                    Report::Event(event) if report.event_name().as_deref() == Some(name) => {
                        return Ok((Event::clone(event), read_at))
                    }
                    _ => passing(&report)?,
                }
            }
            if !self.receive(deadline) {
                return Err(self.timed_out(&format!("the `{name}` event")));
            }
        }
    }

    /// The next line of the program's stdout for which `wanted` holds.
    pub fn wait_line(&mut self, wanted: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + self.patience;
        loop {
            while let Some(line) = self.lines.pop_front() {
                if wanted(&line) {
                    return Ok(line);
                }
            }
            if !self.receive(deadline) {
                return Err(self.timed_out("a line of the program"));
            }
        }
    }

    /// Forgets the program lines printed so far: after a patch they are stale.
    pub fn drain_lines(&mut self) {
        while let Ok(output) = self.outputs.try_recv() {
            self.enqueue(output);
        }
        self.lines.clear();
    }

    /// The events the waits have taken so far, in order.
    pub fn events_seen(&self) -> impl Iterator<Item = &Event> {
        self.seen.iter().filter_map(|report| match report {
            Report::Event(event) => Some(&**event),
            Report::Text(_) => None,
        })
    }

    /// Sends `signal` to hotpatch itself (SIGUSR1 restart, SIGUSR2 undo, SIGTERM quit).
    pub fn signal_hotpatch(&self, signal: i32) {
        // SAFETY: kill(2) on the hotpatch child this session started and has not reaped
        // (`wait_hotpatch_exit` reaps it; a signal after that may reach a reused pid).
        unsafe { libc::kill(self.hotpatch.id() as i32, signal) };
    }

    /// The pid of hotpatch itself.
    pub fn hotpatch_pid(&self) -> u32 {
        self.hotpatch.id()
    }

    /// Waits for hotpatch to exit; its exit code, if it exited with one.
    pub fn wait_hotpatch_exit(&mut self) -> Option<i32> {
        self.hotpatch.wait().ok()?.code()
    }

    /// Closes the program's stdin (a program reading it to the end exits) and waits for
    /// hotpatch to exit with it.
    pub fn stop(mut self) -> Result<()> {
        self.program_stdin = None;
        self.hotpatch
            .wait()
            .context(|| "could not wait for hotpatch run".to_string())?;
        self.pid = 0;
        Ok(())
    }

    /// Queues the next output of either reader; false if none came before `deadline`.
    fn receive(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.outputs.recv_timeout(left) {
            Ok(output) => {
                self.enqueue(output);
                true
            }
            Err(_) => false,
        }
    }

    fn enqueue(&mut self, output: Output) {
        match output {
            Output::Report(report, read_at) => self.reports.push_back((report, read_at)),
            Output::Line(line) => self.lines.push_back(line),
        }
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::new(format!(
            "no {what} within {:?} (or hotpatch stopped printing); hotpatch printed: {:#?}",
            self.patience, self.seen
        ))
    }
}

impl Drop for Session {
    /// Quits hotpatch as a person would (SIGTERM: it stops the program and removes its socket
    /// directory and patch images); kills both if that takes too long, and the program if
    /// hotpatch was killed (a killed hotpatch leaves its program running, on purpose).
    fn drop(&mut self) {
        self.program_stdin = None;
        let exit = match self.hotpatch.try_wait() {
            Ok(None) => self.quit_hotpatch(),
            exited => exited.ok().flatten(),
        };
        let orphaned = exit.is_none_or(|status| status.signal().is_some());
        if orphaned && self.pid != 0 {
            // SAFETY: kill(2) on the program this session started, which no hotpatch stopped:
            // at worst it ended by itself meanwhile and its pid was reused.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        if exit.is_none() {
            let _ = self.hotpatch.kill();
            let _ = self.hotpatch.wait();
        }
    }
}

impl Session {
    /// Sends hotpatch SIGTERM and waits for it to exit; `None` if it didn't in time.
    fn quit_hotpatch(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_hotpatch(libc::SIGTERM);
        let deadline = Instant::now() + QUIT_PATIENCE;
        while Instant::now() < deadline {
            match self.hotpatch.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                exited => return exited.ok().flatten(),
            }
        }
        None
    }
}

/// `hotpatch SUBCOMMAND --message-format json` on `launch`'s project, under its umask.
pub fn hotpatch_command(launch: &Launch, subcommand: &str) -> Command {
    let mut command = Command::new(launch.hotpatch_exe);
    command
        .args([subcommand, "--message-format", "json"])
        .envs(launch.env.iter().copied());
    if launch.release {
        command.arg("--release");
    }
    if let Some(mask) = launch.umask {
        // SAFETY: umask(2) is async-signal-safe and touches no memory: fine between fork
        // and exec.
        unsafe {
            command.pre_exec(move || {
                libc::umask(mask);
                Ok(())
            })
        };
    }
    if let Some(package) = launch.package {
        command.args(["-p", package]);
    }
    command
        .arg("--manifest-path")
        .arg(launch.manifest_path)
        .arg("--target-dir")
        .arg(launch.target_dir);
    command
}

/// How long a dropped session's hotpatch gets to quit (it gives the program 3 s to stop).
const QUIT_PATIENCE: Duration = Duration::from_secs(10);

/// Sends each line of `stream` as `convert` makes it, on a thread of its own.
fn forward(
    stream: Option<impl Read + Send + 'static>,
    sender: Sender<Output>,
    convert: impl Fn(String) -> Output + Send + 'static,
) {
    let Some(stream) = stream else { return };
    std::thread::spawn(move || {
        for line in BufReader::new(stream)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if sender.send(convert(line)).is_err() {
                break;
            }
        }
    });
}

/// `event`'s name as hotpatch spells it: the `"event"` tag its JSON line carries (serialised
/// rather than matched, so the names live only in `hotreload_abi`).
pub fn event_name(event: &Event) -> Option<String> {
    let json = serde_json::to_value(event).ok()?;
    json["event"].as_str().map(str::to_owned)
}

/// The value of `key=` in a `key=value key=value` line (what the fixture and bench programs
/// print).
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_events_or_text() {
        let event = Report::parse(r#"{"event":"rolled-back","generation":1}"#.into());
        assert!(
            matches!(&event, Report::Event(e) if matches!(**e, Event::RolledBack { generation: 1 }))
        );
        assert_eq!(event.event_name().as_deref(), Some("rolled-back"));
        for line in ["   Compiling demo v0.1.0", r#"{"event":"rolled-back"}"#] {
            let text = Report::parse(line.into());
            assert!(matches!(text, Report::Text(ref kept) if kept == line));
            assert_eq!(text.event_name(), None);
        }
    }

    #[test]
    fn fields_of_program_lines() {
        let line = "first-call version=3 t=17";
        assert_eq!(field(line, "version"), Some("3"));
        assert_eq!(field(line, "t"), Some("17"));
        assert_eq!(field(line, "ver"), None);
    }
}
