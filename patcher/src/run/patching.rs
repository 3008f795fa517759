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
    /// The patch sent and not answered yet: only one is in flight at a time.
    pub(super) pending: Option<Pending>,
    /// Files saved while a patch was pending: patched once it is answered.
    deferred: Vec<PathBuf>,
}

/// How long a patch may go unanswered before hotpatch says so and asks the program what it
/// runs. Longer than a patch takes in immediate mode even at worst (2 s waiting for old code
/// to leave the stacks, plus 5 s for a stop): what exceeds it waits for a safe point (or is
/// stuck). `HOTPATCH_ANSWER_TIMEOUT_MS` overrides it, for tests.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn answer_timeout() -> Duration {
    std::env::var("HOTPATCH_ANSWER_TIMEOUT_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(ANSWER_TIMEOUT, Duration::from_millis)
}

/// A patch whose outcome hotpatch does not know yet.
pub(super) struct Pending {
    /// The `Apply`'s id; `None` for patches an earlier hotpatch sent, whose answers went to it.
    id: Option<u64>,
    /// What was sent, to record and report when the answer comes.
    sent: Option<Sent>,
    /// When to ask the program for its state, unless the answer came.
    ask_at: Option<Instant>,
    /// The `Describe` awaited.
    describe: Option<u64>,
    /// Said already that the answer is late.
    warned: bool,
}

struct Sent {
    patch: PreparedPatch,
    started: Instant,
    at: Instant,
}

/// Starts patching program number `run` over `connection`: its answers and saved files come
/// to the run loop through `signals`.
pub(super) fn start_patching(
    outcome: &BuildOutcome,
    mut connection: AppConnection,
    run: u64,
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
    let warmed = signals.clone();
    session.warm_up(move || {
        let _ = warmed.send(Signal::WarmedUp { run });
    });
    let watched = sources.directories();
    let replies = signals.clone();
    connection.forward_replies(move |reply| replies.send(Signal::Reply { run, reply }).is_ok());
    // Patches an earlier hotpatch queued for a safe point: what runs changes once they apply.
    let pending = (!connection.hello.pending.is_empty()).then(|| Pending {
        id: None,
        sent: None,
        ask_at: Some(Instant::now()),
        describe: None,
        warned: false,
    });
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
        pending,
        deferred: Vec::new(),
    })
}

impl Patching {
    /// Patches what the saved `files` change, and records that edits saved before they
    /// arrived are handled (see [`Patching::saved_while_detached`]).
    pub(super) fn on_change(&mut self, files: &[PathBuf], reporter: &Reporter) {
        if self.pending.is_some() {
            self.deferred.extend_from_slice(files);
            return;
        }
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

    /// Sends `patch`; its answer comes to [`Patching::on_reply`].
    pub(super) fn deliver(&mut self, patch: PreparedPatch, started: Instant, reporter: &Reporter) {
        let image = self.session.image_for_runtime(&patch);
        let old_code = patch
            .old_code
            .iter()
            .map(|(_, code)| code.clone())
            .collect();
        let at = Instant::now();
        match self.connection.apply(
            image,
            patch.updates.clone(),
            patch.entries.clone(),
            old_code,
        ) {
            Ok(id) => {
                self.pending = Some(Pending {
                    id: Some(id),
                    sent: Some(Sent { patch, started, at }),
                    ask_at: Some(at + answer_timeout()),
                    describe: None,
                    warned: false,
                })
            }
            Err(error) => reporter.emit(Event::refused(
                RefusalKind::Failed,
                Vec::new(),
                error.to_string(),
            )),
        }
    }

    /// When the run loop should call [`Patching::on_deadline`].
    /// The warm-up is done: its build is what the first edit is compared with.
    pub(super) fn on_warmed_up(&mut self, reporter: &Reporter) {
        if let Some((objects, took)) = self.session.adopt_warm_up() {
            reporter.emit(Event::WarmedUp { objects, took });
        }
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref()?.ask_at
    }

    /// The answer is late: says so (once), and asks the program what it runs.
    pub(super) fn on_deadline(&mut self, reporter: &Reporter) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        if !pending.warned {
            pending.warned = true;
            let message = match pending.sent {
                Some(_) => format!(
                    "the program hasn't applied the patch within {} ms (safe-point mode? it applies patches only at its next safe point); hotpatch will resynchronise when it answers",
                    answer_timeout().as_millis()
                ),
                None => "the program has a patch from an earlier hotpatch queued for its next safe point; edits wait until it is applied".into(),
            };
            reporter.emit(Event::Warning { message });
        }
        pending.ask_at = None;
        match self.connection.describe() {
            Ok(id) => pending.describe = Some(id),
            // The program is gone or dropped us: its exit, or the connection's end, follows.
            Err(error) => reporter.emit(Event::Warning {
                message: error.to_string(),
            }),
        }
    }

    /// An answer of the program (`None`: the connection ended). Answers to anything but the
    /// pending patch and its last `Describe` are stale, and dropped.
    pub(super) fn on_reply(&mut self, reply: Option<Reply>, reporter: &Reporter) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        match reply {
            Some(Reply::Applied {
                id,
                generation,
                stopped_us,
                old_code_running,
            }) if pending.id == Some(id) => {
                if let Some(sent) = self.pending.take().and_then(|pending| pending.sent) {
                    self.applied(sent, generation, stopped_us, &old_code_running, reporter);
                }
            }
            Some(Reply::Refused { id, reason }) if pending.id == Some(id) => {
                self.pending = None;
                reporter.emit(Event::refused(
                    RefusalKind::Runtime,
                    Vec::new(),
                    format!("the program refused the patch: {reason}"),
                ));
            }
            Some(Reply::State { id, hello }) if pending.describe == Some(id) => {
                if !hello.pending.is_empty() {
                    // Still queued: ask again later (an earlier hotpatch's patch is answered
                    // to no one, so asking is how its end is seen).
                    pending.ask_at = Some(Instant::now() + answer_timeout());
                    return;
                }
                // Nothing queued, and the answer never came: the program's word is the truth.
                self.pending = None;
                let message = match self.session.resync(&hello) {
                    Ok(()) => format!(
                        "resynchronised with the program: it runs generation {} ({} patch images mapped)",
                        hello.generation,
                        hello.images.len()
                    ),
                    Err(error) => format!("could not resynchronise with the program: {error}"),
                };
                reporter.emit(Event::Warning { message });
            }
            Some(_) => return,
            None => {
                self.pending = None;
                reporter.emit(Event::Warning {
                    message: "the program closed the connection before answering the patch: what it runs is unknown until `hotpatch attach` asks it".into(),
                });
                return;
            }
        }
        let deferred = std::mem::take(&mut self.deferred);
        if !deferred.is_empty() {
            self.on_change(&deferred, reporter);
        }
    }

    /// Records and reports the patch the program applied as `generation`.
    fn applied(
        &mut self,
        sent: Sent,
        generation: u64,
        stopped_us: u64,
        old_code_running: &[u64],
        reporter: &Reporter,
    ) {
        let Sent {
            mut patch,
            started,
            at,
        } = sent;
        self.session.applied(&patch);
        let still_running = still_running_note(&patch, old_code_running);
        if patch.rollback {
            reporter.emit(Event::RolledBack { generation });
            if let Some(message) = still_running {
                reporter.emit(Event::Warning { message });
            }
        } else {
            patch.plan.notes.extend(still_running);
            reporter.emit(Event::PatchApplied {
                load: at.elapsed(),
                stopped: Duration::from_micros(stopped_us),
                total: started.elapsed(),
                generation,
                patch: &patch,
            });
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
