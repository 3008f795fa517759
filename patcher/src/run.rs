//! `hotpatch run`: build, start the program, and patch it on every save until it exits.
//!
//! Everything hotpatch says goes to its own stderr (human lines, or one JSON object per line
//! with an `"event"` field); the program's stdin, stdout and stderr are passed through.

use crate::build::build;
use crate::cli::{CargoArgs, MessageFormat};
use crate::connection::{AppConnection, AppListener};
use crate::report;
use crate::session::{PatchFailure, PreparedPatch, Session};
use crate::watch::{watch, CrateSources};
use crate::workspace::Workspace;
use hotreload::protocol::{Reply, SOCKET_ENV};
use linker_shim::{Context, Error, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a started program has to connect before it is run unpatched.
const CONNECT_PATIENCE: Duration = Duration::from_secs(15);

/// Arguments of `hotpatch run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub cargo: CargoArgs,
    /// Arguments for the program, after `--`
    #[arg(last = true, value_name = "ARGS")]
    pub program_args: Vec<String>,
}

/// What happened, for the person at the terminal or for a tool.
enum Event<'a> {
    AppStarted {
        pid: u32,
    },
    Watching {
        directories: Vec<PathBuf>,
    },
    PatchApplied {
        patch: &'a PreparedPatch,
        generation: u64,
        load: Duration,
        total: Duration,
    },
    NothingChanged {
        total: Duration,
    },
    PatchRefused {
        reason: String,
    },
    CompileError {
        rendered: String,
    },
    AppExited {
        status: ExitStatus,
    },
    Warning {
        message: String,
    },
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

/// Prints events in the chosen format.
struct Reporter {
    format: MessageFormat,
    program: String,
}

impl Reporter {
    fn emit(&self, event: Event<'_>) {
        match self.format {
            MessageFormat::Json => eprintln!("{}", self.json(&event)),
            MessageFormat::Human => eprintln!("{}", self.human(&event)),
        }
    }

    fn json(&self, event: &Event<'_>) -> Value {
        match event {
            Event::AppStarted { pid } => json!({"event": "app-started", "pid": pid}),
            Event::Watching { directories } => {
                json!({"event": "watching", "directories": directories})
            }
            Event::PatchApplied {
                patch,
                generation,
                load,
                total,
            } => json!({
                "event": "patch-applied",
                "generation": generation,
                "changed": patch.plan.changed,
                "added": patch.plan.added,
                "relinked": patch.plan.relinked.len(),
                "unreachable": patch.plan.unreachable,
                "image": patch.image.as_ref().map(|i| &i.path),
                "ms": {
                    "total": millis(*total),
                    "rustc": millis(patch.timings.rustc),
                    "diff": millis(patch.timings.diff),
                    "link": millis(patch.timings.link),
                    "load": millis(*load),
                },
            }),
            Event::NothingChanged { total } => {
                json!({"event": "no-change", "ms": {"total": millis(*total)}})
            }
            Event::PatchRefused { reason } => json!({"event": "patch-refused", "reason": reason}),
            Event::CompileError { rendered } => {
                json!({"event": "compile-error", "rendered": rendered})
            }
            Event::AppExited { status } => {
                use std::os::unix::process::ExitStatusExt;
                json!({"event": "app-exited", "status": status.code(), "signal": status.signal()})
            }
            Event::Warning { message } => json!({"event": "warning", "message": message}),
        }
    }

    fn human(&self, event: &Event<'_>) -> String {
        let program = &self.program;
        match event {
            Event::AppStarted { pid } => format!("{:>12} {program} (pid {pid})", "Running"),
            Event::PatchApplied {
                patch, load, total, ..
            } => {
                let mut line = format!(
                    "{:>12} {program}: {} changed, {} added in {:.0} ms (rustc {:.0}, diff {:.0}, link {:.0}, load {:.0})",
                    "Patched",
                    patch.plan.changed.len(),
                    patch.plan.added.len(),
                    millis(*total),
                    millis(patch.timings.rustc),
                    millis(patch.timings.diff),
                    millis(patch.timings.link),
                    millis(*load),
                );
                for name in &patch.plan.unreachable {
                    line.push_str(&format!(
                        "\n{:>12} `{name}` changed but no #[hotreload] function calls it",
                        "warning:"
                    ));
                }
                line
            }
            Event::Watching { directories } => {
                let list: Vec<_> = directories
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                format!(
                    "{:>12} {} for changes; edit and save to patch {program}",
                    "Watching",
                    list.join(", ")
                )
            }
            Event::NothingChanged { total } => format!(
                "{:>12} no function changed ({:.0} ms)",
                "Unchanged",
                millis(*total)
            ),
            Event::PatchRefused { reason } => format!(
                "{:>12} {reason}\n{:>12} the program keeps running its current code",
                "Refused", ""
            ),
            Event::CompileError { rendered } => format!(
                "{rendered}{:>12} the program keeps running its current code",
                "error:"
            ),
            Event::AppExited { status } => format!("{:>12} {program} {status}", "Exited"),
            Event::Warning { message } => format!("{:>12} {message}", "warning:"),
        }
    }
}

/// What the main loop waits for.
enum Signal {
    SourcesChanged(Vec<PathBuf>),
    AppExited(ExitStatus),
}

/// Runs `hotpatch run`; returns the program's exit code.
pub fn run(args: &RunArgs, hotpatch_exe: &Path) -> Result<ExitCode> {
    let workspace = Workspace::load(args.cargo.selection.manifest_path.as_deref())?;
    let outcome = build(&args.cargo, hotpatch_exe)?;
    let reporter = Reporter {
        format: args.cargo.output.message_format,
        program: outcome.target.name.clone(),
    };
    match reporter.format {
        MessageFormat::Json => eprintln!("{}", report::build_json(&outcome)),
        MessageFormat::Human => eprint!("{}", report::build_human(&outcome)),
    }
    let listener = AppListener::bind()?;
    let mut child = Command::new(&outcome.exe)
        .args(&args.program_args)
        .env(SOCKET_ENV, listener.path())
        .spawn()
        .context(|| format!("could not start {}", outcome.exe.display()))?;
    reporter.emit(Event::AppStarted { pid: child.id() });

    let exited = std::cell::Cell::new(None);
    let connection = listener.accept(CONNECT_PATIENCE, || {
        let status = child.try_wait().ok().flatten();
        exited.set(status);
        status.is_none()
    });
    let (signals, incoming) = mpsc::channel();
    let waiter = {
        let signals = signals.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = signals.send(Signal::AppExited(status));
            }
        })
    };
    let mut patching = match connection {
        Ok(connection) => {
            match start_patching(&outcome, &workspace, connection, hotpatch_exe, signals) {
                Ok(patching) => {
                    reporter.emit(Event::Watching {
                        directories: patching.watched.clone(),
                    });
                    Some(patching)
                }
                Err(error) => {
                    reporter.emit(Event::Warning {
                        message: format!("{error}; running without patching"),
                    });
                    None
                }
            }
        }
        Err(error) => {
            if exited.get().is_none() {
                reporter.emit(Event::Warning {
                    message: format!("{error}; running without patching"),
                });
            }
            None
        }
    };
    loop {
        match incoming.recv() {
            Ok(Signal::AppExited(status)) => {
                reporter.emit(Event::AppExited { status });
                let _ = waiter.join();
                if let Some(patching) = &patching {
                    let _ = patching.session.unpin();
                }
                return Ok(exit_code(status));
            }
            Ok(Signal::SourcesChanged(files)) => {
                if let Some(patching) = &mut patching {
                    patching.on_change(&files, &reporter);
                }
            }
            Err(_) => return Err(Error::new("lost track of the program")),
        }
    }
}

/// The patching half of a run: the session, the connection, the watch.
struct Patching {
    session: Session,
    connection: AppConnection,
    sources: CrateSources,
    /// The source directories watched.
    watched: Vec<PathBuf>,
    _watcher: crate::watch::SourceWatcher,
}

fn start_patching(
    outcome: &crate::build::BuildOutcome,
    workspace: &Workspace,
    connection: AppConnection,
    hotpatch_exe: &Path,
    signals: mpsc::Sender<Signal>,
) -> Result<Patching> {
    let session = Session::new(
        outcome.store.clone(),
        outcome.revision.clone(),
        &connection.hello,
        hotpatch_exe,
    )?;
    let invocation = outcome
        .revision
        .rustc
        .as_ref()
        .ok_or_else(|| Error::new("the build recorded no rustc invocation for the binary"))?;
    let sources = CrateSources::of(invocation)?;
    // The running program is built from `src/` trees; tests, examples and benches are not in it.
    let roots: Vec<PathBuf> = workspace
        .packages
        .iter()
        .filter_map(|p| p.manifest_path.parent().map(|dir| dir.join("src")))
        .filter(|src| src.is_dir())
        .collect();
    let (changed, batches) = mpsc::channel();
    let watcher = watch(&roots, changed)?;
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
        watched: roots,
        _watcher: watcher,
    })
}

impl Patching {
    fn on_change(&mut self, files: &[PathBuf], reporter: &Reporter) {
        let (ours, others): (Vec<_>, Vec<_>) = files.iter().partition(|f| self.sources.contains(f));
        for file in others {
            reporter.emit(Event::PatchRefused {
                reason: format!(
                    "{} is not part of the binary crate `{}`; only that crate is patched live: restart to apply this edit",
                    file.display(),
                    self.session.base().target.crate_name()
                ),
            });
        }
        if ours.is_empty() {
            return;
        }
        let started = Instant::now();
        match self.session.prepare() {
            Ok(None) => reporter.emit(Event::NothingChanged {
                total: started.elapsed(),
            }),
            Ok(Some(patch)) => self.deliver(patch, started, reporter),
            Err(PatchFailure::Compile(diagnostics)) => reporter.emit(Event::CompileError {
                rendered: diagnostics.concat(),
            }),
            Err(PatchFailure::Refused(reason)) => reporter.emit(Event::PatchRefused { reason }),
            Err(PatchFailure::Failed(error)) => reporter.emit(Event::PatchRefused {
                reason: error.to_string(),
            }),
        }
    }

    fn deliver(&mut self, patch: PreparedPatch, started: Instant, reporter: &Reporter) {
        let sent = Instant::now();
        let image = self.session.image_for_runtime(&patch);
        match self.connection.apply(image, patch.updates.clone()) {
            Ok(Reply::Applied { generation, .. }) => {
                self.session.applied(&patch);
                reporter.emit(Event::PatchApplied {
                    load: sent.elapsed(),
                    total: started.elapsed(),
                    generation,
                    patch: &patch,
                });
            }
            Ok(Reply::Refused { reason, .. }) => reporter.emit(Event::PatchRefused {
                reason: format!("the program refused the patch: {reason}"),
            }),
            Ok(other) => reporter.emit(Event::PatchRefused {
                reason: format!("unexpected answer from the program: {other:?}"),
            }),
            Err(error) => reporter.emit(Event::PatchRefused {
                reason: error.to_string(),
            }),
        }
    }
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
