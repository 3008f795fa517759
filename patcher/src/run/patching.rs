//! The patching half of a running program: which crate a saved file belongs to, the pipeline
//! run for it, and the delivery of the patch over the connection, reported as events.

use super::connection::AppConnection;
use super::watch::{watch, CrateSources, SavedFile, SourceWatcher};
use super::Signal;
use crate::capture::build::BuildOutcome;
use crate::output::events::{Event, Reporter};
use crate::pipeline::diff::demangle;
use crate::pipeline::recompile::crates::{CrateIndex, CrateRole, LocalCrates};
use crate::pipeline::{prepare, PatchFailure, Refused};
use crate::session::{PreparedPatch, Session};
use hotreload_abi::events::RefusalKind;
use hotreload_abi::protocol::{Reply, OLD_CODE_PATIENCE};
use linker_shim::{Error, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The patching half of a running program: the session, the connection, the watch.
pub(super) struct Patching {
    pub(super) session: Session,
    pub(super) connection: AppConnection,
    pub(super) sources: CrateSources,
    /// The directories watched.
    pub(super) watched: Vec<PathBuf>,
    _watcher: SourceWatcher,
}

pub(super) fn start_patching(
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
    let mut session = Session::new(
        outcome.store.clone(),
        outcome.revision.clone(),
        crates,
        &connection.hello,
        hotpatch_exe,
    )?;
    session.warm_up();
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
    /// Patches what the saved `files` change, and records that edits saved before they
    /// arrived are handled (see [`Patching::saved_while_detached`]).
    pub(super) fn on_change(&mut self, files: &[PathBuf], reporter: &Reporter) {
        let arrived = SystemTime::now();
        self.handle_change(files, reporter);
        self.session.sources_handled(arrived);
    }

    fn handle_change(&mut self, files: &[PathBuf], reporter: &Reporter) {
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

    /// The source files saved since an earlier hotpatch last handled this program's edits
    /// (or since its build): on attach, the edits no hotpatch was there to see.
    pub(super) fn saved_while_detached(&self) -> Vec<PathBuf> {
        let since = UNIX_EPOCH + Duration::from_millis(self.session.sources_handled_until());
        self.sources
            .files()
            .filter(|file| {
                std::fs::metadata(file)
                    .and_then(|metadata| metadata.modified())
                    .is_ok_and(|modified| modified > since)
            })
            .cloned()
            .collect()
    }

    /// Why an edit of `file`, which the `owners` crates read, can't be patched; `None` when
    /// it can.
    pub(super) fn refusal(
        &self,
        file: &Path,
        owners: &BTreeSet<CrateIndex>,
    ) -> Option<Event<'static>> {
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
    pub(super) fn learn_sources(&mut self, compiled: &BTreeSet<CrateIndex>) {
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

    pub(super) fn deliver(
        &mut self,
        mut patch: PreparedPatch,
        started: Instant,
        reporter: &Reporter,
    ) {
        let sent = Instant::now();
        let image = self.session.image_for_runtime(&patch);
        let old_code = patch
            .old_code
            .iter()
            .map(|(_, code)| code.clone())
            .collect();
        match self.connection.apply(
            image,
            patch.updates.clone(),
            patch.entries.clone(),
            old_code,
        ) {
            Ok(Reply::Applied {
                generation,
                stopped_us,
                old_code_running,
                ..
            }) => {
                self.session.applied(&patch);
                let still_running = still_running_note(&patch, &old_code_running);
                if patch.rollback {
                    reporter.emit(Event::RolledBack { generation });
                    if let Some(message) = still_running {
                        reporter.emit(Event::Warning { message });
                    }
                } else {
                    patch.plan.notes.extend(still_running);
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

/// What to tell the person when the runtime applied `patch` while a thread still ran the
/// code at `running` (starts of `patch.old_code` ranges); `None` when none did.
fn still_running_note(patch: &PreparedPatch, running: &[u64]) -> Option<String> {
    let names: BTreeSet<String> = patch
        .old_code
        .iter()
        .filter(|(_, code)| running.contains(&code.start))
        .map(|(name, _)| format!("`{}`", demangle(name)))
        .collect();
    if names.is_empty() {
        return None;
    }
    Some(format!(
        "a thread was still running the old {} after {} s (a call that never returns, or runs again and again): the patch was applied anyway, so that call finishes in the old version, and what it calls from now on is the new code",
        names.into_iter().collect::<Vec<_>>().join(", "),
        OLD_CODE_PATIENCE.as_secs()
    ))
}

/// The refusal of an edit to `file`, `what` the program is built with.
pub(super) fn needs_restart(file: &Path, what: &str) -> Event<'static> {
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
pub(super) fn contents_of(files: &[&PathBuf]) -> Vec<Option<Vec<u8>>> {
    files.iter().map(|file| std::fs::read(file).ok()).collect()
}
