//! Starting and stopping the program: build, spawn with the socket's path (and the runtime
//! preloaded when the program doesn't link it), connect, watch; SIGTERM then SIGKILL; its exit
//! status as hotpatch's own.

use super::attach::{connect, waiting_programs};
use super::connection::AppListener;
use super::patching::{start_patching, Patching};
use super::preload::provide_agent;
use super::{Runner, Signal};
use crate::capture::build::{build, recorded_build, BuildOutcome, Located};
use crate::capture::fit;
use crate::leftovers::has_ended;
use crate::output::events::Event;
use hotreload_abi::protocol::SOCKET_ENV;
use linker_shim::{Context, Error, Result};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How long a started program has to connect before it is run unpatched.
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);
/// How often hotpatch looks whether an attached program (not its child) still runs.
const EXIT_POLL: Duration = Duration::from_millis(100);
/// How long a program asked to stop (SIGTERM) gets before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

/// A started (or attached) program and, if it connected, its patching.
pub(super) struct Program {
    pub(super) pid: u32,
    pub(super) run: u64,
    pub(super) patching: Option<Patching>,
    /// True for a program `hotpatch attach` connected to: not hotpatch's child, and let go
    /// of rather than stopped when the person quits.
    pub(super) attached: bool,
    /// Keeps the socket's private directory until the program ends (a started program's).
    _listener: Option<AppListener>,
}

impl Runner<'_> {
    /// Builds from the current sources, starts the program, connects and starts watching.
    pub(super) fn start(&mut self) -> Result<()> {
        let outcome = build(&self.args.cargo, self.hotpatch_exe)?;
        self.reporter.program = outcome.target.name.clone();
        self.reporter
            .emit(Event::BuildFinished { outcome: &outcome });
        for message in fit::check(&outcome)? {
            self.reporter.emit(Event::Warning { message });
        }
        if self.runs == 0 {
            self.mention_waiting_programs(&outcome);
        }
        self.announce(&outcome.store, &outcome.target);
        let listener = AppListener::bind()?;
        let mut program = Command::new(&outcome.exe);
        program
            .args(&self.args.program_args)
            .env(SOCKET_ENV, listener.path())
            .stdin(if self.keys {
                Stdio::null()
            } else {
                Stdio::inherit()
            });
        provide_agent(&mut program, &outcome.exe, outcome.store.root())?;
        let mut child = program
            .spawn()
            .context(|| format!("could not start {}", outcome.exe.display()))?;
        self.runs += 1;
        let (pid, run) = (child.id(), self.runs);
        self.reporter.emit(Event::AppStarted { pid });
        let connection = listener
            .accept(CONNECT_PATIENCE, || matches!(child.try_wait(), Ok(None)))
            .and_then(|connection| {
                if connection.hello.pid == pid {
                    Ok(connection)
                } else {
                    Err(Error::new(format!(
                        "process {} connected instead of the program (pid {pid})",
                        connection.hello.pid
                    )))
                }
            });
        let exits = self.signals.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exits.send(Signal::AppExited {
                    run,
                    status: Some(status),
                });
            }
        });
        let patching = connection.and_then(|connection| {
            start_patching(
                &outcome,
                connection,
                run,
                self.hotpatch_exe,
                self.signals.clone(),
            )
        });
        let patching = match patching {
            Ok(patching) => {
                self.reporter.emit(Event::Watching {
                    directories: patching.watched.clone(),
                });
                Some(patching)
            }
            Err(error) => {
                self.reporter.emit(Event::Warning {
                    message: format!("{error}; running without patching"),
                });
                None
            }
        };
        self.program = Some(Program {
            pid,
            run,
            patching,
            attached: false,
            _listener: Some(listener),
        });
        Ok(())
    }

    /// Says so when programs of this target from earlier sessions still wait for a hotpatch:
    /// attaching keeps their state, which this run's new program starts without.
    fn mention_waiting_programs(&self, outcome: &BuildOutcome) {
        let Ok(waiting) = waiting_programs(&outcome.store, &outcome.target) else {
            return;
        };
        for pid in waiting {
            self.reporter.emit(Event::Warning {
                message: format!(
                    "program {pid}, started by an earlier `hotpatch run` that is gone, still runs; `hotpatch attach {pid}` patches it with its state kept"
                ),
            });
        }
    }

    /// Connects to program `pid`, whose `hotpatch` is gone, takes over what it runs and
    /// patches in the edits saved meanwhile.
    pub(super) fn attach(&mut self, pid: u32, located: Located) -> Result<()> {
        let connection = connect(pid)?;
        let outcome = recorded_build(located, &connection.hello.build_id)?;
        self.reporter.program = outcome.target.name.clone();
        self.announce(&outcome.store, &outcome.target);
        self.runs += 1;
        let run = self.runs;
        self.reporter.emit(Event::Attached {
            pid,
            generation: connection.hello.generation,
            images: connection.hello.images.len(),
        });
        let exits = self.signals.clone();
        std::thread::spawn(move || {
            // Not our child: no wait(2), so look for it now and then.
            while !has_ended(&pid.to_string()) {
                std::thread::sleep(EXIT_POLL);
            }
            let _ = exits.send(Signal::AppExited { run, status: None });
        });
        let mut patching = start_patching(
            &outcome,
            connection,
            run,
            self.hotpatch_exe,
            self.signals.clone(),
        )?;
        self.reporter.emit(Event::Watching {
            directories: patching.watched.clone(),
        });
        let edited = patching.saved_while_detached();
        if !edited.is_empty() {
            patching.on_change(&edited, &self.reporter);
        }
        self.program = Some(Program {
            pid,
            run,
            patching: Some(patching),
            attached: true,
            _listener: None,
        });
        Ok(())
    }

    /// Lets go of an attached program, which runs on with its patches and waits for the next
    /// `hotpatch attach`.
    pub(super) fn detach(&mut self) {
        if let Some(program) = self.program.take() {
            self.reporter.emit(Event::Detached { pid: program.pid });
        }
    }

    /// Reports the current program's exit and forgets it. The terminal is hotpatch's again
    /// when the program was its child (an attached one ran on another).
    pub(super) fn exited(&mut self, status: Option<ExitStatus>) {
        let program = self.program.take();
        if program.as_ref().is_some_and(|p| !p.attached) {
            self.reporter.status.program_ended();
        }
        self.reporter.emit(Event::AppExited { status });
        if let Some(session) = program.and_then(|p| p.patching).map(|p| p.session) {
            let _ = session.end();
        }
    }

    /// Asks the running program to stop (SIGTERM), kills it if it doesn't, and returns how it
    /// ended; `None` if none was running, or if it was an attached one (not hotpatch's child).
    pub(super) fn stop(&mut self) -> Option<ExitStatus> {
        let Program { pid, run, .. } = *self.program.as_ref()?;
        let mut deadline = Instant::now() + STOP_PATIENCE;
        let mut signal = libc::SIGTERM;
        loop {
            // SAFETY: kill(2) has no memory-safety preconditions. The pid is our child's; its
            // waiter thread may have reaped it a moment ago (its exit is then queued below), so
            // in that narrow window the signal could reach a recycled pid: accepted, the same
            // race every `kill` of a child outside its waiter has.
            unsafe { libc::kill(pid as libc::pid_t, signal) };
            match self
                .incoming
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(Signal::AppExited { run: ended, status }) if ended == run => {
                    self.exited(status);
                    return status;
                }
                Ok(_) => continue, // edits and commands while stopping are dropped
                Err(RecvTimeoutError::Timeout) => {
                    signal = libc::SIGKILL;
                    deadline = Instant::now() + STOP_PATIENCE;
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// The program's status as hotpatch's own: its code, or 128 + the signal that ended it.
pub(super) fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
