//! `hotpatch run`: build, start the program, and patch it on every save.
//!
//! The program owns the terminal: its stdin, stdout and stderr are hotpatch's own, passed on
//! untouched. hotpatch speaks on its own stderr (see [`crate::output::events`]), holding its
//! lines while the program has the terminal in raw mode (see [`crate::output::status`]), and
//! keeps them in the session's log. Commands come from `hotpatch restart|undo|quit` in another
//! terminal (see [`control`] and [`sessions`]), from SIGUSR1, SIGUSR2 and SIGINT/SIGTERM, and
//! with `--keys` from `r`⏎, `u`⏎ and `q`⏎ on stdin. A program that exits normally ends the
//! run with its status; one that crashes is reported and waits for a restart.

mod attach;
mod connection;
mod control;
mod input;
mod patching;
mod preload;
mod program;
mod sessions;
mod watch;

use crate::commands::args::CargoArgs;
use crate::output::events::{Event, Reporter};
use crate::output::status::StatusMode;
use hotreload_abi::protocol::Reply;
use linker_shim::{Error, Result, Store, TargetKey};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Instant;

use crate::capture::build::locate;
use attach::{program_args, waiting_programs};
use control::ControlSocket;
use input::listen_for_commands;
pub(crate) use input::Request;
use program::{exit_code, Program};
pub(crate) use sessions::FoundSession;
use sessions::SessionEntry;

/// Arguments of `hotpatch run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// Read r⏎ (restart), u⏎ (undo) and q⏎ (quit) from stdin; the program then gets no stdin.
    /// Without it the program has the terminal to itself, and commands come from `hotpatch
    /// restart|undo|quit` in another terminal, or by signal
    #[arg(long)]
    pub keys: bool,
    /// The program gets the terminal's stdin: the default, accepted for older scripts
    #[arg(long, hide = true, conflicts_with = "keys")]
    pub stdin_to_program: bool,
    #[command(flatten)]
    pub status: StatusArgs,
    /// Arguments for the program, after `--`
    #[arg(last = true, value_name = "ARGS")]
    pub program_args: Vec<String>,
}

/// Where hotpatch's human lines go.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct StatusArgs {
    /// Where hotpatch's own lines go when they are human-readable (JSON lines always go to
    /// stderr); every line is also kept for `hotpatch log`
    #[arg(long, value_enum, value_name = "WHERE", default_value_t)]
    pub status: StatusMode,
}

/// Arguments of `hotpatch attach`.
#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    #[command(flatten)]
    pub status: StatusArgs,
    /// The program's pid [default: the only program of the selected binary waiting for a
    /// hotpatch]
    pub pid: Option<u32>,
}

/// What the main loop waits for.
enum Signal {
    SourcesChanged(Vec<PathBuf>),
    /// Program number `run` exited; `status` is unknown (`None`) for an attached program.
    AppExited {
        run: u64,
        status: Option<ExitStatus>,
    },
    Command(Request),
    /// The warm-up of program number `run`'s session is done.
    WarmedUp {
        run: u64,
    },
    /// An answer of program number `run`'s agent; `None` once its connection ended.
    Reply {
        run: u64,
        reply: Option<Reply>,
    },
}

/// Runs `hotpatch run`; returns the program's exit code.
pub fn run(args: &RunArgs, hotpatch_exe: &Path) -> Result<ExitCode> {
    let mut runner = Runner::new(args, hotpatch_exe)?;
    // Said first: once the program runs, a terminal UI may hide hotpatch's lines.
    runner.reporter.emit(Event::Commands { keys: runner.keys });
    runner.start()?;
    runner.serve()
}

/// Runs `hotpatch attach`: patches a program an earlier `hotpatch run` started, from what it
/// runs now; returns once it exits or is let go of.
pub fn attach(args: &AttachArgs, hotpatch_exe: &Path) -> Result<ExitCode> {
    let located = locate(&args.cargo)?;
    let pid = match args.pid {
        Some(pid) => pid,
        None => match waiting_programs(&located.store, &located.target)?[..] {
            [pid] => pid,
            [] => {
                return Err(Error::new(format!(
                    "no program of {} waits for a hotpatch (one runs only while its `hotpatch run` is gone): start one with `hotpatch run`",
                    located.target
                )))
            }
            ref several => {
                return Err(Error::new(format!(
                    "several programs of {} wait for a hotpatch (pids {several:?}): name one, `hotpatch attach PID`",
                    located.target
                )))
            }
        },
    };
    let run_args = RunArgs {
        cargo: args.cargo.clone(),
        // The program is not on this terminal (it kept its own): the keys are nobody else's.
        keys: std::io::stdin().is_terminal(),
        stdin_to_program: false,
        status: args.status,
        program_args: program_args(pid),
    };
    let mut runner = Runner::new(&run_args, hotpatch_exe)?;
    runner.reporter.emit(Event::Commands { keys: runner.keys });
    runner.attach(pid, located)?;
    runner.serve()
}

struct Runner<'a> {
    args: &'a RunArgs,
    hotpatch_exe: &'a Path,
    reporter: Reporter,
    signals: Sender<Signal>,
    incoming: Receiver<Signal>,
    keys: bool,
    /// Where `hotpatch restart|undo|quit` reach this session.
    control: ControlSocket,
    /// How they find it, once its target is known.
    entry: Option<SessionEntry>,
    runs: u64,
    program: Option<Program>,
}

impl<'a> Runner<'a> {
    fn new(args: &'a RunArgs, hotpatch_exe: &'a Path) -> Result<Runner<'a>> {
        let (signals, incoming) = mpsc::channel();
        listen_for_commands(args.keys, signals.clone())?;
        Ok(Runner {
            args,
            hotpatch_exe,
            reporter: Reporter::new(args.cargo.output.message_format, args.status.status),
            control: ControlSocket::listen(signals.clone())?,
            signals,
            incoming,
            keys: args.keys,
            entry: None,
            runs: 0,
            program: None,
        })
    }

    /// Announces the session in `store` (once), so `hotpatch restart|undo|quit|log` find it,
    /// and opens its log.
    fn announce(&mut self, store: &Store, target: &TargetKey) {
        if self.entry.is_some() {
            return;
        }
        match SessionEntry::create(store, target, self.control.path()) {
            Ok((entry, log)) => {
                self.reporter.status.set_log(Some(log));
                self.entry = Some(entry);
            }
            Err(error) => {
                self.reporter.status.set_log(None);
                self.reporter.emit(Event::Warning {
                    message: format!(
                        "{error}: `hotpatch restart|undo|quit|log` won't find this session (signals work)"
                    ),
                });
            }
        }
    }

    /// The main loop, until the program exits normally or the person quits.
    fn serve(&mut self) -> Result<ExitCode> {
        loop {
            let deadline = self.patching().and_then(|patching| patching.deadline());
            let signal = match deadline {
                None => self
                    .incoming
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => self
                    .incoming
                    .recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            let signal = match signal {
                Ok(signal) => signal,
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(patching) = self.program.as_mut().and_then(|p| p.patching.as_mut())
                    {
                        patching.on_deadline(&self.reporter);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::new("lost track of the program"))
                }
            };
            match signal {
                Signal::Reply { run, reply } => {
                    let program = self.program.as_mut().filter(|p| p.run == run);
                    if let Some(patching) = program.and_then(|p| p.patching.as_mut()) {
                        patching.on_reply(reply, &self.reporter);
                    }
                }
                Signal::WarmedUp { run } => {
                    let program = self.program.as_mut().filter(|p| p.run == run);
                    if let Some(patching) = program.and_then(|p| p.patching.as_mut()) {
                        patching.on_warmed_up(&self.reporter);
                    }
                }
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
                    let Some(status) = status else {
                        return Ok(ExitCode::SUCCESS); // an attached program: not ours to judge
                    };
                    if status.success() {
                        return Ok(exit_code(status));
                    }
                    let how = if self.keys {
                        "type r⏎ to restart it, q⏎ to quit"
                    } else {
                        "`hotpatch restart` restarts it (or SIGUSR1), `hotpatch quit` quits"
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
                        let again = if self.keys {
                            "r⏎"
                        } else {
                            "`hotpatch restart`"
                        };
                        self.reporter.emit(Event::Warning {
                            message: format!(
                                "restart failed: {error}\nfix it and restart again ({again})"
                            ),
                        });
                    }
                }
                Signal::Command(Request::Quit)
                    if self.program.as_ref().is_some_and(|p| p.attached) =>
                {
                    self.detach();
                    return Ok(ExitCode::SUCCESS);
                }
                Signal::Command(Request::Quit) => {
                    let status = self.stop();
                    return Ok(status.map_or(ExitCode::SUCCESS, exit_code));
                }
            }
        }
    }

    fn patching(&self) -> Option<&patching::Patching> {
        self.program.as_ref()?.patching.as_ref()
    }

    fn rollback(&mut self) {
        let Some(patching) = self.program.as_mut().and_then(|p| p.patching.as_mut()) else {
            return;
        };
        if patching.pending.is_some() {
            return self.reporter.emit(Event::Warning {
                message: "a patch still awaits the program's answer: undo once it is answered"
                    .into(),
            });
        }
        match patching.session.rollback() {
            None => self.reporter.emit(Event::Warning {
                message: "nothing to undo: no patch applied since the program started".into(),
            }),
            Some(patch) => patching.deliver(patch, Instant::now(), &self.reporter),
        }
    }
}
