//! `hotpatch run`: build, start the program, and patch it on every save.
//!
//! The program's stdout and stderr are passed through untouched; hotpatch speaks on its own
//! stderr (see [`crate::output::events`]). Commands: on a terminal, `r`⏎ restarts the program from a
//! fresh build, `u`⏎ undoes the last patch, `q`⏎ quits; without one (or always), SIGUSR1,
//! SIGUSR2 and SIGINT/SIGTERM do the same. A program that exits normally ends the run with
//! its status; one that crashes is reported and waits for a restart.

pub mod connection;
pub mod watch;

use crate::capture::build::{build, BuildOutcome};
use crate::commands::args::CargoArgs;
use crate::output::events::{Event, Reporter};
use crate::pipeline::recompile::crates::{CrateIndex, CrateRole, LocalCrates};
use crate::pipeline::{prepare, PatchFailure, Refused};
use crate::run::connection::{AppConnection, AppListener};
use crate::run::watch::{watch, CrateSources, SavedFile, SourceWatcher};
use crate::session::{PreparedPatch, Session};
use hotreload_abi::events::RefusalKind;
use hotreload_abi::protocol::{Reply, SOCKET_ENV};
use linker_shim::{Context, Error, Result};
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// How long a started program has to connect before it is run unpatched.
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);
/// How long a program asked to stop (SIGTERM) gets before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(3);

/// Arguments of `hotpatch run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// Give the terminal's stdin to the program instead of reading r/u/q commands from it
    /// (commands then come by signal only)
    #[arg(long)]
    pub stdin_to_program: bool,
    /// Arguments for the program, after `--`
    #[arg(last = true, value_name = "ARGS")]
    pub program_args: Vec<String>,
}

/// What the person (or a tool) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Restart,
    Rollback,
    Quit,
    /// A line that is no command: say which ones there are.
    Help,
}

/// What the main loop waits for.
enum Signal {
    SourcesChanged(Vec<PathBuf>),
    /// Program number `run` exited.
    AppExited {
        run: u64,
        status: ExitStatus,
    },
    Command(Request),
}

/// Runs `hotpatch run`; returns the program's exit code.
pub fn run(args: &RunArgs, hotpatch_exe: &Path) -> Result<ExitCode> {
    let (signals, incoming) = mpsc::channel();
    let keys = !args.stdin_to_program && std::io::stdin().is_terminal();
    listen_for_commands(keys, signals.clone())?;
    let mut runner = Runner {
        args,
        hotpatch_exe,
        reporter: Reporter {
            format: args.cargo.output.message_format,
            program: String::new(),
            json_to_stdout: false,
        },
        signals,
        incoming,
        keys,
        runs: 0,
        program: None,
    };
    runner.start()?;
    runner.reporter.emit(Event::Commands { keys });
    runner.serve()
}

/// A started program and, if it connected, its patching.
struct Program {
    pid: u32,
    run: u64,
    patching: Option<Patching>,
    /// Keeps the socket's private directory until the program ends.
    _listener: AppListener,
}

struct Runner<'a> {
    args: &'a RunArgs,
    hotpatch_exe: &'a Path,
    reporter: Reporter,
    signals: Sender<Signal>,
    incoming: Receiver<Signal>,
    keys: bool,
    runs: u64,
    program: Option<Program>,
}

impl Runner<'_> {
    /// The main loop, until the program exits normally or the person quits.
    fn serve(&mut self) -> Result<ExitCode> {
        loop {
            let signal = self
                .incoming
                .recv()
                .map_err(|_| Error::new("lost track of the program"))?;
            match signal {
                Signal::SourcesChanged(files) => {
                    if let Some(patching) = self.program.as_mut().and_then(|p| p.patching.as_mut())
                    {
                        patching.on_change(&files, &self.reporter);
                    }
                }
                Signal::AppExited { run, status } => {
                    if self.program.as_ref().is_none_or(|p| p.run != run) {
                        continue; // a program stopped on purpose, already reported
                    }
                    self.exited(status);
                    if status.success() {
                        return Ok(exit_code(status));
                    }
                    let how = if self.keys {
                        "type r⏎ to restart it, q⏎ to quit"
                    } else {
                        "send SIGUSR1 to restart it, SIGTERM to quit"
                    };
                    self.reporter.emit(Event::Warning {
                        message: format!("the program ended abnormally; {how}"),
                    });
                }
                Signal::Command(Request::Rollback) => self.rollback(),
                Signal::Command(Request::Help) => {
                    self.reporter.emit(Event::Commands { keys: self.keys })
                }
                Signal::Command(Request::Restart) => {
                    self.stop();
                    if let Err(error) = self.start() {
                        let again = if self.keys { "r⏎" } else { "SIGUSR1" };
                        self.reporter.emit(Event::Warning {
                            message: format!(
                                "restart failed: {error}\nfix it and restart again ({again})"
                            ),
                        });
                    }
                }
                Signal::Command(Request::Quit) => {
                    let status = self.stop();
                    return Ok(status.map_or(ExitCode::SUCCESS, exit_code));
                }
            }
        }
    }

    /// Builds from the current sources, starts the program, connects and starts watching.
    fn start(&mut self) -> Result<()> {
        let outcome = build(&self.args.cargo, self.hotpatch_exe)?;
        self.reporter.program = outcome.target.name.clone();
        self.reporter
            .emit(Event::BuildFinished { outcome: &outcome });
        let listener = AppListener::bind()?;
        let mut child = Command::new(&outcome.exe)
            .args(&self.args.program_args)
            .env(SOCKET_ENV, listener.path())
            .stdin(if self.keys {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
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
    fn exited(&mut self, status: ExitStatus) {
        self.reporter.emit(Event::AppExited { status });
        if let Some(session) = self
            .program
            .take()
            .and_then(|p| p.patching)
            .map(|p| p.session)
        {
            let _ = session.unpin();
        }
    }

    /// Asks the running program to stop (SIGTERM), kills it if it doesn't, and returns how it
    /// ended; `None` if none was running.
    fn stop(&mut self) -> Option<ExitStatus> {
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

    fn rollback(&mut self) {
        let Some(patching) = self.program.as_mut().and_then(|p| p.patching.as_mut()) else {
            return;
        };
        match patching.session.rollback() {
            None => self.reporter.emit(Event::Warning {
                message: "nothing to undo: no patch applied since the program started".into(),
            }),
            Some(patch) => patching.deliver(patch, Instant::now(), &self.reporter),
        }
    }
}

/// Turns keys (when stdin is a terminal) and signals into commands.
fn listen_for_commands(keys: bool, commands: Sender<Signal>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2, SIGINT, SIGTERM])
        .context(|| "could not install signal handlers".into())?;
    let by_signal = commands.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let request = match signal {
                SIGUSR1 => Request::Restart,
                SIGUSR2 => Request::Rollback,
                _ => Request::Quit,
            };
            if by_signal.send(Signal::Command(request)).is_err() {
                break;
            }
        }
    });
    if keys {
        std::thread::spawn(move || {
            for line in std::io::stdin()
                .lock()
                .lines()
                .map_while(std::result::Result::ok)
            {
                let request = match line.trim() {
                    "r" => Request::Restart,
                    "u" => Request::Rollback,
                    "q" => Request::Quit,
                    _ => Request::Help,
                };
                if commands.send(Signal::Command(request)).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// The patching half of a running program: the session, the connection, the watch.
struct Patching {
    session: Session,
    connection: AppConnection,
    sources: CrateSources,
    /// The directories watched.
    watched: Vec<PathBuf>,
    _watcher: SourceWatcher,
}

fn start_patching(
    outcome: &BuildOutcome,
    connection: AppConnection,
    hotpatch_exe: &Path,
    signals: Sender<Signal>,
) -> Result<Patching> {
    let invocation = outcome
        .revision
        .rustc
        .as_ref()
        .ok_or_else(|| Error::new("the build recorded no rustc invocation for the binary"))?;
    let crates = LocalCrates::new(invocation, &outcome.invocations);
    let sources = CrateSources::of(&crates)?;
    let session = Session::new(
        outcome.store.clone(),
        outcome.revision.clone(),
        crates,
        &connection.hello,
        hotpatch_exe,
    )?;
    let watched = sources.directories();
    let (changed, batches) = mpsc::channel();
    let watcher = watch(&watched, sources.files().cloned(), changed)?;
    std::thread::spawn(move || {
        for batch in batches {
            if signals.send(Signal::SourcesChanged(batch)).is_err() {
                break;
            }
        }
    });
    Ok(Patching {
        session,
        connection,
        sources,
        watched,
        _watcher: watcher,
    })
}

impl Patching {
    fn on_change(&mut self, files: &[PathBuf], reporter: &Reporter) {
        let mut ours = Vec::new();
        let mut crates = BTreeSet::new();
        for file in files {
            match self.sources.classify(file) {
                SavedFile::Unrelated => {}
                SavedFile::Manifest => reporter.emit(needs_restart(file, "a package manifest")),
                SavedFile::Source(owners) => match self.refusal(file, &owners) {
                    Some(refusal) => reporter.emit(refusal),
                    None => {
                        ours.push(file);
                        crates.extend(owners);
                    }
                },
            }
        }
        if ours.is_empty() {
            return;
        }
        let edited: Vec<String> = ours.iter().map(|f| f.display().to_string()).collect();
        let compiled = contents_of(&ours);
        let started = Instant::now();
        let result = prepare(&mut self.session, &crates);
        self.learn_sources(&crates);
        match result {
            // The save was still being written (or saved again) while rustc ran: the newer
            // contents are on their way from the watcher; this error is about neither.
            Err(PatchFailure::Compile(_)) if contents_of(&ours) != compiled => {}
            Ok(None) => reporter.emit(Event::NothingChanged {
                total: started.elapsed(),
            }),
            Ok(Some(patch)) => self.deliver(patch, started, reporter),
            Err(PatchFailure::Compile(diagnostics)) => reporter.emit(Event::CompileError {
                rendered: diagnostics.concat(),
            }),
            Err(PatchFailure::Refused(refused)) => reporter.emit(Event::PatchRefused(Refused {
                reason: format!("{} (edited: {})", refused.reason, edited.join(", ")),
                ..refused
            })),
            Err(PatchFailure::Failed(error)) => reporter.emit(Event::refused(
                RefusalKind::Failed,
                Vec::new(),
                format!("{error} (edited: {})", edited.join(", ")),
            )),
        }
    }

    /// Why an edit of `file`, which the `owners` crates read, can't be patched; `None` when
    /// it can.
    fn refusal(&self, file: &Path, owners: &BTreeSet<CrateIndex>) -> Option<Event<'static>> {
        let crates = self.session.crates();
        for &index in owners {
            let krate = crates.get(index);
            match krate.role {
                CrateRole::ProcMacro => {
                    let what = format!("in the proc-macro crate `{}`", krate.name());
                    return Some(needs_restart(file, &what));
                }
                CrateRole::BuildScript => return Some(needs_restart(file, "a build script")),
                _ => {}
            }
        }
        if owners.iter().any(|&index| crates.is_linked(index)) {
            return None;
        }
        Some(Event::refused(
            RefusalKind::OtherCrate,
            vec![file.display().to_string()],
            format!(
                "{} is not part of any crate the running program `{}` is built from",
                file.display(),
                crates.get(crates.binary()).name()
            ),
        ))
    }

    /// Adds the files the crates just compiled read (a new module, a new `include_str!`).
    fn learn_sources(&mut self, compiled: &BTreeSet<CrateIndex>) {
        let builds = &self.session.builds;
        for &index in compiled {
            let krate = builds.crates.get(index);
            if let Some(dep_info) = builds.latest_dep_info(index) {
                let _ = self
                    .sources
                    .read_dep_info(index, &dep_info, &krate.invocation.cwd);
            }
        }
    }

    fn deliver(&mut self, patch: PreparedPatch, started: Instant, reporter: &Reporter) {
        let sent = Instant::now();
        let image = self.session.image_for_runtime(&patch);
        match self
            .connection
            .apply(image, patch.updates.clone(), patch.entries.clone())
        {
            Ok(Reply::Applied {
                generation,
                stopped_us,
                ..
            }) => {
                self.session.applied(&patch);
                if patch.rollback {
                    reporter.emit(Event::RolledBack { generation });
                } else {
                    reporter.emit(Event::PatchApplied {
                        load: sent.elapsed(),
                        stopped: Duration::from_micros(stopped_us),
                        total: started.elapsed(),
                        generation,
                        patch: &patch,
                    });
                }
            }
            Ok(Reply::Refused { reason, .. }) => reporter.emit(Event::refused(
                RefusalKind::Runtime,
                Vec::new(),
                format!("the program refused the patch: {reason}"),
            )),
            Ok(other) => reporter.emit(Event::refused(
                RefusalKind::Failed,
                Vec::new(),
                format!("unexpected answer from the program: {other:?}"),
            )),
            Err(error) => reporter.emit(Event::refused(
                RefusalKind::Failed,
                Vec::new(),
                error.to_string(),
            )),
        }
    }
}

/// The refusal of an edit to `file`, `what` the program is built with.
fn needs_restart(file: &Path, what: &str) -> Event<'static> {
    Event::refused(
        RefusalKind::NeedsRestart,
        vec![file.display().to_string()],
        format!(
            "{} is {what}: it changes how the program is built, which a patch can't do: restart to apply this edit",
            file.display()
        ),
    )
}

/// The files' contents right now, to tell whether they changed during a compilation.
fn contents_of(files: &[&PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|file| std::fs::read(file).ok()).collect()
}

/// The program's status as hotpatch's own: its code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
