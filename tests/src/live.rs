//! A real `hotpatch run` session over a fixture program: the program's stdout lines and
//! hotpatch's JSON events, each read on its own thread, so a test can edit the source and
//! wait for what the *same* running process prints next.

use crate::fixture::{hotpatch_exe, FixtureCrate};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long anything may take before the test fails (builds share two cores).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A running `hotpatch run --message-format json` and the program under it.
pub struct LiveSession {
    pub fixture: FixtureCrate,
    hotpatch: Child,
    lines: Receiver<String>,
    events: Receiver<Value>,
    /// Events read while waiting for another one, in order.
    pub seen: Vec<Value>,
    /// The program's pid, from `app-started`.
    pub pid: u32,
}

impl LiveSession {
    /// Starts the session and waits until the program runs and hotpatch is connected to it
    /// (its first output line has appeared).
    pub fn start(fixture: FixtureCrate, program_args: &[&str]) -> LiveSession {
        let mut hotpatch = Command::new(hotpatch_exe())
            .args(["run", "--message-format", "json", "--manifest-path"])
            .arg(fixture.manifest_path())
            .arg("--target-dir")
            .arg(&fixture.target_dir)
            .arg("--")
            .args(program_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hotpatch run");
        let stdout = BufReader::new(hotpatch.stdout.take().expect("piped stdout"));
        let stderr = BufReader::new(hotpatch.stderr.take().expect("piped stderr"));
        let (line_sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            stdout
                .lines()
                .map_while(Result::ok)
                .try_for_each(|l| line_sender.send(l))
        });
        let (event_sender, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                // cargo's progress and hotpatch's fatal errors are not events: kept as
                // `{"event": "text"}` so a failing test shows them.
                let event = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| serde_json::json!({"event": "text", "line": line}));
                if event_sender.send(event).is_err() {
                    break;
                }
            }
        });
        let mut session = LiveSession {
            fixture,
            hotpatch,
            lines,
            events,
            seen: Vec::new(),
            pid: 0,
        };
        let started = session.event("app-started");
        session.pid = started["pid"].as_u64().expect("pid") as u32;
        session.event("watching");
        session.line_where(|_| true);
        session
    }

    /// The next event named `name`; fails on `compile-error` or a refusal it did not ask for.
    pub fn event(&mut self, name: &str) -> Value {
        self.event_where(name, |event| {
            let unexpected = ["compile-error", "patch-refused", "app-exited", "warning"];
            let kind = event["event"].as_str().unwrap_or_default();
            assert!(
                !unexpected.contains(&kind),
                "waiting for `{name}`, got {event:#}"
            );
        })
    }

    /// The next event named `name`, whatever comes before it.
    pub fn event_skipping(&mut self, name: &str) -> Value {
        self.event_where(name, |_| {})
    }

    /// Reads events until one named `name`, showing every other one to `passing`.
    fn event_where(&mut self, name: &str, passing: impl Fn(&Value)) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{name}` event; events so far: {:#?}", self.seen));
            self.seen.push(event.clone());
            if event["event"] == name {
                return event;
            }
            passing(&event);
        }
    }

    /// The next line of the program's stdout for which `wanted` holds.
    pub fn line_where(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("the program stopped printing; events: {:#?}", self.seen)
            });
            if wanted(&line) {
                return line;
            }
        }
    }

    /// Sends `signal` to `hotpatch` itself (SIGUSR1 restart, SIGUSR2 undo, SIGTERM quit).
    pub fn signal_hotpatch(&self, signal: i32) {
        // SAFETY: kill(2) on the hotpatch child this session started and has not reaped.
        unsafe { libc::kill(self.hotpatch.id() as i32, signal) };
    }

    /// The pid of `hotpatch` itself.
    pub fn hotpatch_pid(&self) -> u32 {
        self.hotpatch.id()
    }

    /// Waits for the program to be started again (after a restart) and watched.
    pub fn restarted(&mut self) {
        let started = self.event("app-started");
        self.pid = started["pid"].as_u64().expect("pid") as u32;
        self.event("watching");
    }

    /// Waits for `hotpatch` to exit and returns its exit code.
    pub fn hotpatch_exit_code(&mut self) -> Option<i32> {
        self.hotpatch.wait().ok()?.code()
    }

    /// Lines already printed are stale after a patch: skip what is buffered.
    pub fn drain_lines(&mut self) {
        while self.lines.try_recv().is_ok() {}
    }

    /// Applies `from` → `to` to `src/main.rs` and waits for the patch to be applied.
    pub fn edit(&mut self, from: &str, to: &str) -> Value {
        self.edit_file("src/main.rs", from, to)
    }

    /// Applies `from` → `to` to `file` and waits for the patch to be applied.
    pub fn edit_file(&mut self, file: &str, from: &str, to: &str) -> Value {
        self.fixture.replace_in(file, from, to);
        let applied = self.event("patch-applied");
        self.drain_lines();
        applied
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        if self.pid != 0 {
            // SAFETY: kill(2) on a pid we started; at worst the process is already gone.
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        let _ = self.hotpatch.kill();
        let _ = self.hotpatch.wait();
    }
}

/// The value of `key=` in a `key=value key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no `{key}=` in {line:?}"))
}

/// `field` parsed as a number.
pub fn number(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {line:?}"))
}
