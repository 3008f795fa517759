//! Starting and stopping the program: build, spawn with the socket's path (and the runtime
//! preloaded when the program doesn't link it), connect, watch; SIGTERM then SIGKILL; its exit
//! status as hotpatch's own.

use super::connection::AppListener;
use super::patching::{start_patching, Patching};
use super::preload::provide_agent;
use super::{Runner, Signal};
use crate::capture::build::build;
use crate::output::events::Event;
use hotreload_abi::protocol::SOCKET_ENV;
use linker_shim::{Context, Result};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How long a started program has to connect before it is run unpatched.
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);
/// How long a program asked to stop (SIGTERM) gets before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

/// A started program and, if it connected, its patching.
pub(super) struct Program {
    pub(super) pid: u32,
    pub(super) run: u64,
    pub(super) patching: Option<Patching>,
    /// Keeps the socket's private directory until the program ends.
    _listener: AppListener,
}

impl Runner<'_> {
    /// Builds from the current sources, starts the program, connects and starts watching.
    pub(super) fn start(&mut self) -> Result<()> {
        let outcome = build(&self.args.cargo, self.hotpatch_exe)?;
        self.reporter.program = outcome.target.name.clone();
        self.reporter
            .emit(Event::BuildFinished { outcome: &outcome });
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
        let connection = listener.accept(CONNECT_PATIENCE, || matches!(child.try_wait(), Ok(None)));
        let exits = self.signals.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = exits.send(Signal::AppExited { run, status });
            }
        });
        let patching = connection.and_then(|connection| {
            start_patching(
                &outcome,
                connection,
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
            _listener: listener,
        });
        Ok(())
    }

    /// Reports the current program's exit and forgets it.
    pub(super) fn exited(&mut self, status: ExitStatus) {
        self.reporter.emit(Event::AppExited { status });
        if let Some(session) = self
            .program
            .take()
            .and_then(|p| p.patching)
            .map(|p| p.session)
        {
            let _ = session.end();
        }
    }

    /// Asks the running program to stop (SIGTERM), kills it if it doesn't, and returns how it
    /// ended; `None` if none was running.
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
                    return Some(status);
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
