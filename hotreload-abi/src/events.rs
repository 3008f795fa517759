//! What `hotpatch run --message-format json` prints: one [`Event`] per line on hotpatch's
//! stderr (`hotpatch build` prints its `build-finished` on stdout), each an object whose
//! `"event"` field names it, like cargo's `--message-format json`.
//!
//! One typed enum instead of ad-hoc JSON, so that the patcher (which serialises these) and a
//! tool or test harness (which deserialises them) can't disagree on a field's name or type.
//! Durations are milliseconds as `f64`, rounded to 0.1 ms ([`millis`]).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// One line of `--message-format json` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The program was built (or found up to date) and recorded as a revision.
    BuildFinished {
        /// `package (bin name, profile)`.
        target: String,
        /// The revision id.
        revision: String,
        exe: PathBuf,
        /// Hex of the executable's GNU build-id, if it has one.
        build_id: Option<String>,
        /// Object files recorded in the revision.
        objects: usize,
        /// False when cargo found everything fresh and the latest revision was reused.
        linked: bool,
        ms: f64,
    },
    /// The program was started.
    AppStarted { pid: u32 },
    /// `hotpatch attach` connected to a program an earlier `hotpatch` started, which had
    /// `generation` patches applied and `images` patch images mapped.
    Attached {
        pid: u32,
        generation: u64,
        images: usize,
    },
    /// `hotpatch attach` let go of the program, which runs on (attach again to patch it).
    Detached { pid: u32 },
    /// Patching is live: these source directories are watched.
    Watching { directories: Vec<PathBuf> },
    /// The session's warm-up is done: the unchanged sources were compiled into the patch
    /// builds' directory and their objects indexed, so the first edit costs what later ones
    /// do (an edit saved before this stops the warm-up and pays for it).
    WarmedUp {
        /// Object files indexed.
        objects: usize,
        /// From the session's start to now.
        ms: f64,
    },
    /// How to drive the run: keys on hotpatch's stdin (`keys`), or signals to `pid`.
    Commands { keys: bool, pid: u32 },
    /// An edit is running in the program.
    PatchApplied {
        /// Patches applied to this program so far.
        generation: u64,
        /// Demangled names of the functions this edit changed and added, relative to the
        /// code running before it (the previous patch); instances of one generic keep the
        /// hash that tells them apart (`app::f::h0123456789abcdef`).
        changed: Vec<String>,
        added: Vec<String>,
        /// Demangled names of every function changed since the program started.
        #[serde(default)]
        changed_since_start: Vec<String>,
        /// Functions the image defines afresh (changed, added, and callers of functions that
        /// could not be redirected).
        relinked: usize,
        /// Function entries that now jump to new code (demangled names): every caller of
        /// these reaches the new version.
        #[serde(default)]
        redirected: Vec<String>,
        /// Changed functions nothing reaches: their callers keep the old code.
        unreachable: Vec<String>,
        /// What the person should know (`main` changed: takes effect at the next start…).
        #[serde(default)]
        notes: Vec<String>,
        /// The image mapped, or `None` when already-mapped code was reused.
        image: Option<PathBuf>,
        reused: bool,
        ms: PatchMillis,
        /// The local crates compiled for the patch, in order (the binary crate last), each
        /// with its compiler time.
        #[serde(default)]
        crates: Vec<CrateMillis>,
    },
    /// The last patch was undone (`u`, SIGUSR2).
    RolledBack { generation: u64 },
    /// The edit changed no function (a comment, formatting).
    NoChange { ms: TotalMillis },
    /// The edit can't be applied; the program keeps running its current code.
    PatchRefused {
        /// Why, for a program to act on.
        kind: RefusalKind,
        /// What it is about, by kind: the functions, statics, types or files concerned
        /// (demangled names or paths; empty when there is nothing to name).
        items: Vec<String>,
        /// Why, and what to do, for a person.
        reason: String,
    },
    /// rustc rejected the edit; its rendered diagnostics.
    CompileError { rendered: String },
    /// Something worth saying that is not one of the above (a crash, a failed restart…).
    Warning { message: String },
    /// The program ended: `status` is its exit code, `signal` what killed it (both unknown
    /// for a program `hotpatch attach` did not start).
    AppExited {
        status: Option<i32>,
        signal: Option<i32>,
    },
}

/// Why a patch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusalKind {
    /// A `#[hotreload]` function's signature changed (its running callers pass the old way).
    Signature,
    /// A static or thread-local changed size, section or kind.
    DataLayout,
    /// A type whose values the running program holds changed layout.
    TypeLayout,
    /// The edit adds a `thread_local!` (threads' TLS blocks can't grow).
    NewThreadLocal,
    /// No running `#[hotreload]` function reaches the changed code.
    Unreachable,
    /// The edited file belongs to no crate the running program is made of (another binary, a
    /// library it does not link).
    OtherCrate,
    /// The edit changes how the program is built: a `Cargo.toml`, a `build.rs`, a proc-macro
    /// crate. Restart to apply it.
    NeedsRestart,
    /// The running program's runtime refused the patch (image checks, fingerprints…).
    Runtime,
    /// hotpatch itself failed to make or deliver the patch.
    Failed,
}

/// Where a patch's time went, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PatchMillis {
    /// From the save being noticed to the runtime's answer.
    pub total: f64,
    pub rustc: f64,
    pub diff: f64,
    pub link: f64,
    /// Delivering the patch until it is applied (in safe-point mode, the next safe point).
    pub load: f64,
    /// How long the program's other threads were stopped while entries were rewritten.
    #[serde(default)]
    pub stopped: f64,
}

/// One crate compiled for a patch and its compiler time, in milliseconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CrateMillis {
    /// The crate's name (`--crate-name`).
    pub name: String,
    pub ms: f64,
}

/// How long something took in all, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TotalMillis {
    pub total: f64,
}

/// A duration as events spell it: milliseconds, rounded to 0.1 ms.
pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Serialises `event`, checks it is exactly `expected`, and parses it back.
    fn round_trip(event: Event, expected: Value) {
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains('\n'), "one event per line: {line}");
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value, expected);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }

    #[test]
    fn build_finished() {
        round_trip(
            Event::BuildFinished {
                target: "demo (bin demo, dev)".into(),
                revision: "1795244742037-502".into(),
                exe: "/t/demo".into(),
                build_id: Some("22cf".into()),
                objects: 105,
                linked: true,
                ms: 2950.5,
            },
            json!({"event": "build-finished", "target": "demo (bin demo, dev)",
                   "revision": "1795244742037-502", "exe": "/t/demo", "build_id": "22cf",
                   "objects": 105, "linked": true, "ms": 2950.5}),
        );
    }

    #[test]
    fn app_started_watching_commands() {
        round_trip(
            Event::AppStarted { pid: 508 },
            json!({"event": "app-started", "pid": 508}),
        );
        round_trip(
            Event::Attached {
                pid: 508,
                generation: 3,
                images: 2,
            },
            json!({"event": "attached", "pid": 508, "generation": 3, "images": 2}),
        );
        round_trip(
            Event::Detached { pid: 508 },
            json!({"event": "detached", "pid": 508}),
        );
        round_trip(
            Event::Watching {
                directories: vec!["/w/src".into(), "/w/lib/src".into()],
            },
            json!({"event": "watching", "directories": ["/w/src", "/w/lib/src"]}),
        );
        round_trip(
            Event::Commands {
                keys: false,
                pid: 7,
            },
            json!({"event": "commands", "keys": false, "pid": 7}),
        );
    }

    #[test]
    fn patch_applied() {
        let ms = PatchMillis {
            total: 370.2,
            rustc: 334.0,
            diff: 5.1,
            link: 19.0,
            load: 11.3,
            stopped: 0.4,
        };
        round_trip(
            Event::PatchApplied {
                generation: 1,
                changed: vec!["demo::step::__hotreload_impl".into()],
                added: vec![],
                changed_since_start: vec![
                    "demo::helper".into(),
                    "demo::step::__hotreload_impl".into(),
                ],
                relinked: 1,
                redirected: vec!["demo::helper".into()],
                unreachable: vec!["demo::helper".into()],
                notes: vec!["`demo::main` changed".into()],
                image: Some("/t/patch-0.so".into()),
                reused: false,
                ms,
                crates: vec![
                    CrateMillis {
                        name: "game".into(),
                        ms: 120.3,
                    },
                    CrateMillis {
                        name: "demo".into(),
                        ms: 98.0,
                    },
                ],
            },
            json!({"event": "patch-applied", "generation": 1,
                   "changed": ["demo::step::__hotreload_impl"], "added": [],
                   "changed_since_start": ["demo::helper", "demo::step::__hotreload_impl"],
                   "relinked": 1,
                   "redirected": ["demo::helper"], "unreachable": ["demo::helper"],
                   "notes": ["`demo::main` changed"], "image": "/t/patch-0.so", "reused": false,
                   "ms": {"total": 370.2, "rustc": 334.0, "diff": 5.1, "link": 19.0, "load": 11.3,
                          "stopped": 0.4},
                   "crates": [{"name": "game", "ms": 120.3}, {"name": "demo", "ms": 98.0}]}),
        );
        round_trip(
            Event::PatchApplied {
                generation: 2,
                changed: vec![],
                added: vec![],
                changed_since_start: vec![],
                relinked: 0,
                redirected: vec![],
                unreachable: vec![],
                notes: vec![],
                image: None,
                reused: true,
                ms: PatchMillis::default(),
                crates: vec![],
            },
            json!({"event": "patch-applied", "generation": 2, "changed": [], "added": [],
                   "changed_since_start": [], "relinked": 0, "redirected": [], "unreachable": [], "notes": [],
                   "image": null, "reused": true,
                   "ms": {"total": 0.0, "rustc": 0.0, "diff": 0.0, "link": 0.0, "load": 0.0,
                          "stopped": 0.0},
                   "crates": []}),
        );
    }

    #[test]
    fn rolled_back_and_no_change() {
        round_trip(
            Event::RolledBack { generation: 3 },
            json!({"event": "rolled-back", "generation": 3}),
        );
        round_trip(
            Event::NoChange {
                ms: TotalMillis { total: 120.5 },
            },
            json!({"event": "no-change", "ms": {"total": 120.5}}),
        );
    }

    #[test]
    fn patch_refused_with_every_kind() {
        let kinds = [
            (RefusalKind::Signature, "signature"),
            (RefusalKind::DataLayout, "data-layout"),
            (RefusalKind::TypeLayout, "type-layout"),
            (RefusalKind::NewThreadLocal, "new-thread-local"),
            (RefusalKind::Unreachable, "unreachable"),
            (RefusalKind::OtherCrate, "other-crate"),
            (RefusalKind::NeedsRestart, "needs-restart"),
            (RefusalKind::Runtime, "runtime"),
            (RefusalKind::Failed, "failed"),
        ];
        for (kind, name) in kinds {
            round_trip(
                Event::PatchRefused {
                    kind,
                    items: vec!["demo::COUNTER".into()],
                    reason: "why".into(),
                },
                json!({"event": "patch-refused", "kind": name, "items": ["demo::COUNTER"],
                       "reason": "why"}),
            );
        }
    }

    #[test]
    fn compile_error_warning_app_exited() {
        round_trip(
            Event::CompileError {
                rendered: "error[E0308]: mismatched types\n".into(),
            },
            json!({"event": "compile-error", "rendered": "error[E0308]: mismatched types\n"}),
        );
        round_trip(
            Event::Warning {
                message: "restart failed".into(),
            },
            json!({"event": "warning", "message": "restart failed"}),
        );
        round_trip(
            Event::AppExited {
                status: Some(3),
                signal: None,
            },
            json!({"event": "app-exited", "status": 3, "signal": null}),
        );
        round_trip(
            Event::AppExited {
                status: None,
                signal: Some(9),
            },
            json!({"event": "app-exited", "status": null, "signal": 9}),
        );
    }

    #[test]
    fn durations_are_tenths_of_milliseconds() {
        assert_eq!(millis(Duration::from_micros(12_345)), 12.3);
        assert_eq!(millis(Duration::from_micros(12_351)), 12.4);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
}
