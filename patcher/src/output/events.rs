//! What `hotpatch run` and `hotpatch build` tell the person at the terminal (aligned,
//! cargo-style lines) or a tool (`--message-format json`: one [`hotreload_abi::events::Event`]
//! per line). `run` speaks on hotpatch's own stderr, so the program's stdout and stderr stay
//! untouched, and keeps every line in the session's log ([`status`](crate::output::status)).

use crate::capture::build::BuildOutcome;
use crate::commands::args::MessageFormat;
use crate::output::report;
use crate::output::status::{StatusLines, StatusMode};
use crate::pipeline::diff::demangle;
use crate::pipeline::Refused;
use crate::session::PreparedPatch;
use hotreload_abi::events::{
    self as abi, millis, CrateMillis, PatchMillis, RefusalKind, TotalMillis,
};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Something that happened during a run (or a build).
pub enum Event<'a> {
    BuildFinished {
        outcome: &'a BuildOutcome,
    },
    AppStarted {
        pid: u32,
    },
    Attached {
        pid: u32,
        generation: u64,
        images: usize,
    },
    Detached {
        pid: u32,
    },
    Watching {
        directories: Vec<PathBuf>,
    },
    /// The first edit won't pay for a cold build (see [`abi::Event::WarmedUp`]).
    WarmedUp {
        objects: usize,
        took: Duration,
    },
    /// Which keys (on a terminal) or signals (otherwise) drive the run.
    Commands {
        keys: bool,
    },
    PatchApplied {
        patch: &'a PreparedPatch,
        generation: u64,
        load: Duration,
        /// How long the program's other threads were stopped for entry writes.
        stopped: Duration,
        total: Duration,
    },
    RolledBack {
        generation: u64,
    },
    NothingChanged {
        total: Duration,
    },
    PatchRefused(Refused),
    CompileError {
        rendered: String,
    },
    /// `status` is `None` for a program hotpatch attached to: not its child, so its exit
    /// status is not hotpatch's to know.
    AppExited {
        status: Option<ExitStatus>,
    },
    Warning {
        message: String,
    },
}

impl Event<'_> {
    /// A refusal of `kind`, about `items`.
    pub fn refused(kind: RefusalKind, items: Vec<String>, reason: String) -> Event<'static> {
        Event::PatchRefused(Refused {
            kind,
            items,
            reason,
        })
    }
}

/// Prints events in the chosen format: everything hotpatch reports goes through here.
pub struct Reporter {
    pub format: MessageFormat,
    /// The program's name, for human lines.
    pub program: String,
    /// JSON lines go to stdout (`hotpatch build`, like cargo's) instead of stderr (`run`,
    /// whose stdout is the program's).
    pub json_to_stdout: bool,
    /// Where the human lines go: the session's log, and stderr unless the format is JSON.
    pub status: StatusLines,
}

impl Reporter {
    /// A reporter for `hotpatch run`: human lines to stderr as `status` says, or, with JSON
    /// on stderr, to the session's log only.
    pub fn new(format: MessageFormat, status: StatusMode) -> Reporter {
        Reporter {
            format,
            program: String::new(),
            json_to_stdout: false,
            status: StatusLines::new(human_lines(format, status)),
        }
    }

    /// `hotpatch build`'s reporter: JSON lines on stdout, like cargo's; human ones on stderr.
    pub fn for_build(format: MessageFormat, program: String) -> Reporter {
        Reporter {
            format,
            program,
            json_to_stdout: true,
            status: StatusLines::unlogged(human_lines(format, StatusMode::Stderr)),
        }
    }

    pub fn emit(&self, event: Event<'_>) {
        if self.format == MessageFormat::Json {
            // Only a path that is not UTF-8 fails to serialise: say so rather than vanish.
            let line = serde_json::to_string(&typed(&event)).unwrap_or_else(|error| {
                let message = format!("could not print an event: {error}");
                serde_json::to_string(&abi::Event::Warning { message })
                    .expect("a string serialises")
            });
            if self.json_to_stdout {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
        self.status.write(&self.human(&event));
    }

    fn human(&self, event: &Event<'_>) -> String {
        let program = &self.program;
        match event {
            Event::BuildFinished { outcome } => report::build_human(outcome).trim_end().to_string(),
            Event::AppStarted { pid } => format!("{:>12} {program} (pid {pid})", "Running"),
            Event::Attached { pid, generation, images } => format!(
                "{:>12} {program} (pid {pid}): {generation} patches applied, {images} images mapped",
                "Attached"
            ),
            Event::Detached { pid } => format!(
                "{:>12} {program} (pid {pid}) runs on; `hotpatch attach {pid}` patches it again",
                "Detached"
            ),
            Event::Watching { directories } => {
                let list: Vec<_> = directories.iter().map(|d| d.display().to_string()).collect();
                format!("{:>12} {} for changes; edit and save to patch {program}", "Watching", list.join(", "))
            }
            Event::WarmedUp { objects, took } => format!(
                "{:>12} for the first edit: unchanged sources compiled and {objects} objects indexed in {:.1} s",
                "Ready",
                took.as_secs_f64()
            ),
            Event::Commands { keys: true } => {
                format!("{:>12} type r⏎ to restart from a fresh build, u⏎ to undo the last patch, q⏎ to quit", "Keys")
            }
            Event::Commands { keys: false } => format!(
                "{:>12} from another terminal: `hotpatch restart` (a fresh build), `hotpatch undo` (the last patch), `hotpatch quit`, `hotpatch log -f` (these lines); or kill -USR1, -USR2, -TERM {pid}",
                "Commands",
                pid = std::process::id()
            ),
            Event::PatchApplied { patch, load, total, .. } if patch.plan.relinked.is_empty() => format!(
                "{:>12} {program} to the code it started with in {:.0} ms (rustc {:.0}, diff {:.0}, load {:.0})",
                "Restored",
                millis(*total),
                millis(patch.timings.rustc),
                millis(patch.timings.diff),
                millis(*load),
            ),
            Event::PatchApplied { patch, load, total, .. } => {
                let crates: Vec<String> = patch
                    .timings
                    .crates
                    .iter()
                    .map(|build| format!("{} {:.0}", build.name, millis(build.duration)))
                    .collect();
                let mut line = format!(
                    "{:>12} {program}: {} changed, {} added in this edit ({} changed since start) in {:.0} ms (rustc {:.0} [{}], diff {:.0}, link {:.0}, load {:.0})",
                    "Patched",
                    patch.plan.changed.len(),
                    patch.plan.added.len(),
                    patch.plan.changed_since_start.len(),
                    millis(*total),
                    millis(patch.timings.rustc),
                    crates.join(", "),
                    millis(patch.timings.diff),
                    millis(patch.timings.link),
                    millis(*load),
                );
                for name in &patch.plan.unreachable {
                    line.push_str(&format!("\n{:>12} `{name}` changed but nothing running reaches it", "warning:"));
                }
                for note in &patch.plan.notes {
                    line.push_str(&format!("\n{:>12} {note}", "note:"));
                }
                line
            }
            Event::RolledBack { generation } => {
                format!("{:>12} {program} to its previous code (generation {generation})", "Rolled back")
            }
            Event::NothingChanged { total } => {
                format!("{:>12} no function changed ({:.0} ms)", "Unchanged", millis(*total))
            }
            Event::PatchRefused(Refused { reason, .. }) => {
                format!("{:>12} {reason}\n{:>12} the program keeps running its current code", "Refused", "")
            }
            Event::CompileError { rendered } => {
                format!("{rendered}{:>12} the program keeps running its current code", "error:")
            }
            Event::AppExited { status: Some(status) } => format!("{:>12} {program} {status}", "Exited"),
            Event::AppExited { status: None } => format!("{:>12} {program}", "Exited"),
            Event::Warning { message } => format!("{:>12} {message}", "warning:"),
        }
    }
}

/// Where human lines go: as `status` says, or, when JSON lines are printed instead, nowhere
/// but the log.
fn human_lines(format: MessageFormat, status: StatusMode) -> StatusMode {
    match format {
        MessageFormat::Human => status,
        MessageFormat::Json => StatusMode::Log,
    }
}

/// The event as tools see it.
fn typed(event: &Event<'_>) -> abi::Event {
    match event {
        Event::BuildFinished { outcome } => report::build_event(outcome),
        Event::AppStarted { pid } => abi::Event::AppStarted { pid: *pid },
        Event::Attached {
            pid,
            generation,
            images,
        } => abi::Event::Attached {
            pid: *pid,
            generation: *generation,
            images: *images,
        },
        Event::Detached { pid } => abi::Event::Detached { pid: *pid },
        Event::Watching { directories } => abi::Event::Watching {
            directories: directories.clone(),
        },
        Event::WarmedUp { objects, took } => abi::Event::WarmedUp {
            objects: *objects,
            ms: millis(*took),
        },
        Event::Commands { keys } => abi::Event::Commands {
            keys: *keys,
            pid: std::process::id(),
        },
        Event::PatchApplied {
            patch,
            generation,
            load,
            stopped,
            total,
        } => abi::Event::PatchApplied {
            generation: *generation,
            changed: patch.plan.changed.clone(),
            added: patch.plan.added.clone(),
            changed_since_start: patch.plan.changed_since_start.clone(),
            relinked: patch.plan.relinked.len(),
            redirected: patch
                .plan
                .redirected
                .iter()
                .map(|name| demangle(name))
                .collect(),
            unreachable: patch.plan.unreachable.clone(),
            notes: patch.plan.notes.clone(),
            image: patch.image.as_ref().map(|i| i.path.clone()),
            reused: patch.image.is_none(),
            ms: PatchMillis {
                total: millis(*total),
                rustc: millis(patch.timings.rustc),
                diff: millis(patch.timings.diff),
                link: millis(patch.timings.link),
                load: millis(*load),
                stopped: millis(*stopped),
            },
            crates: patch
                .timings
                .crates
                .iter()
                .map(|build| CrateMillis {
                    name: build.name.clone(),
                    ms: millis(build.duration),
                })
                .collect(),
        },
        Event::RolledBack { generation } => abi::Event::RolledBack {
            generation: *generation,
        },
        Event::NothingChanged { total } => abi::Event::NoChange {
            ms: TotalMillis {
                total: millis(*total),
            },
        },
        Event::PatchRefused(refused) => abi::Event::PatchRefused {
            kind: refused.kind,
            items: refused.items.clone(),
            reason: refused.reason.clone(),
        },
        Event::CompileError { rendered } => abi::Event::CompileError {
            rendered: rendered.clone(),
        },
        Event::AppExited { status } => abi::Event::AppExited {
            status: status.and_then(|status| status.code()),
            signal: status.and_then(|status| status.signal()),
        },
        Event::Warning { message } => abi::Event::Warning {
            message: message.clone(),
        },
    }
}
