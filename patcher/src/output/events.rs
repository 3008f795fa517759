//! What `hotpatch run` tells the person at the terminal (aligned, cargo-style lines) or a
//! tool (`--message-format json`: one object per line with an `"event"` field). Everything
//! goes to hotpatch's own stderr, so the program's stdout and stderr stay untouched.

use crate::commands::args::MessageFormat;
use crate::session::PreparedPatch;
use serde_json::{json, Value};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Something that happened during a run.
pub enum Event<'a> {
    AppStarted {
        pid: u32,
    },
    Watching {
        directories: Vec<PathBuf>,
    },
    /// Which keys (on a terminal) or signals (otherwise) drive the run.
    Commands {
        keys: bool,
    },
    PatchApplied {
        patch: &'a PreparedPatch,
        generation: u64,
        load: Duration,
        total: Duration,
    },
    RolledBack {
        generation: u64,
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
pub struct Reporter {
    pub format: MessageFormat,
    /// The program's name, for human lines.
    pub program: String,
}

impl Reporter {
    pub fn emit(&self, event: Event<'_>) {
        match self.format {
            MessageFormat::Json => eprintln!("{}", json_of(&event)),
            MessageFormat::Human => eprintln!("{}", self.human(&event)),
        }
    }

    fn human(&self, event: &Event<'_>) -> String {
        let program = &self.program;
        match event {
            Event::AppStarted { pid } => format!("{:>12} {program} (pid {pid})", "Running"),
            Event::Watching { directories } => {
                let list: Vec<_> = directories.iter().map(|d| d.display().to_string()).collect();
                format!("{:>12} {} for changes; edit and save to patch {program}", "Watching", list.join(", "))
            }
            Event::Commands { keys: true } => {
                format!("{:>12} type r⏎ to restart from a fresh build, u⏎ to undo the last patch, q⏎ to quit", "Keys")
            }
            Event::Commands { keys: false } => format!(
                "{:>12} kill -USR1 {pid} restarts from a fresh build, kill -USR2 {pid} undoes the last patch, kill -TERM {pid} quits",
                "Signals",
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
                    line.push_str(&format!("\n{:>12} `{name}` changed but no #[hotreload] function calls it", "warning:"));
                }
                line
            }
            Event::RolledBack { generation } => {
                format!("{:>12} {program} to its previous code (generation {generation})", "Rolled back")
            }
            Event::NothingChanged { total } => {
                format!("{:>12} no function changed ({:.0} ms)", "Unchanged", millis(*total))
            }
            Event::PatchRefused { reason } => {
                format!("{:>12} {reason}\n{:>12} the program keeps running its current code", "Refused", "")
            }
            Event::CompileError { rendered } => {
                format!("{rendered}{:>12} the program keeps running its current code", "error:")
            }
            Event::AppExited { status } => format!("{:>12} {program} {status}", "Exited"),
            Event::Warning { message } => format!("{:>12} {message}", "warning:"),
        }
    }
}

fn json_of(event: &Event<'_>) -> Value {
    match event {
        Event::AppStarted { pid } => json!({"event": "app-started", "pid": pid}),
        Event::Watching { directories } => json!({"event": "watching", "directories": directories}),
        Event::Commands { keys } => {
            json!({"event": "commands", "keys": keys, "pid": std::process::id()})
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
            "reused": patch.image.is_none(),
            "ms": {
                "total": millis(*total),
                "rustc": millis(patch.timings.rustc),
                "diff": millis(patch.timings.diff),
                "link": millis(patch.timings.link),
                "load": millis(*load),
            },
        }),
        Event::RolledBack { generation } => {
            json!({"event": "rolled-back", "generation": generation})
        }
        Event::NothingChanged { total } => {
            json!({"event": "no-change", "ms": {"total": millis(*total)}})
        }
        Event::PatchRefused { reason } => json!({"event": "patch-refused", "reason": reason}),
        Event::CompileError { rendered } => json!({"event": "compile-error", "rendered": rendered}),
        Event::AppExited { status } => {
            json!({"event": "app-exited", "status": status.code(), "signal": status.signal()})
        }
        Event::Warning { message } => json!({"event": "warning", "message": message}),
    }
}
