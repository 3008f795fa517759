//! The patch pipeline: one stage per module, in the order an edit goes through them, and
//! [`prepare`], which runs them.
//!
//! recompile → objects → diff → plan → check → link, then the session turns the linked image
//! into slot updates and entry redirects for the runtime.

pub mod check;
pub mod diff;
pub(crate) mod link;
pub mod objects;
pub mod plan;
pub mod recompile;

use crate::session::targets::Targets;
use crate::session::{PreparedPatch, Session, Timings};
use check::layout::check_layouts;
use check::signature::check_signatures;
use diff::{demangle, EditedIndex, SymbolDiff};
use hotreload_abi::events::RefusalKind;
use linker_shim::{Error, Revision};
use objects::exe::BaseExecutable;
use objects::registry::implementation_fingerprints;
use plan::{narrow_to_edit, plan, EntryPolicy, PatchPlan, Refusal};
use recompile::crates::CrateIndex;
use recompile::{recompile_edit, RecompileError};
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// Recompiles what an edit of the `edited` crates touches, diffs it against the running base,
/// plans, checks and links a patch. `Ok(None)`: nothing the program runs would change.
pub fn prepare(
    session: &mut Session,
    edited: &BTreeSet<CrateIndex>,
) -> Result<Option<PreparedPatch>, PatchFailure> {
    let mut timings = Timings::default();
    let started = Instant::now();
    session.adopt_warm_up();
    let recompiled = recompile_edit(
        &session.store,
        &session.base,
        &mut session.builds,
        edited,
        &session.hotpatch_exe,
    )?;
    timings.rustc = started.elapsed();
    timings.crates = recompiled.crates;

    let started = Instant::now();
    let objects = session.objects.read(&recompiled.revision, &session.base)?;
    let diff = SymbolDiff::incremental(&session.latest, &objects);
    session.objects.keep_only(&objects);
    session.latest = session.latest.after(objects.clone(), &diff);
    let running = Arc::clone(session.latest.running());
    let Some(mut plan) = plan(&diff, &RunningEntries::of(session))? else {
        // Back to the base: everything runs its original code again.
        let mut plan = PatchPlan::default();
        narrow_to_edit(&mut plan, session.running_functions(), &running);
        let patch = session.towards(Targets::default(), None, plan, timings);
        return Ok(patch.unless_empty());
    };
    narrow_to_edit(&mut plan, session.running_functions(), &running);
    check_layouts(&session.base_layouts, &objects, &diff.new, &plan)?;
    timings.diff = started.elapsed();
    plan.content = plan_content(&plan, &diff.new);
    if let Some(targets) = session.mapped_image(plan.content) {
        // The same code as an earlier, still-mapped patch: point the program there.
        return Ok(session.towards(targets, None, plan, timings).unless_empty());
    }

    let started = Instant::now();
    let fingerprints = implementation_fingerprints(&objects, &plan.objects);
    check_signatures(&plan, &session.slots, &fingerprints)?;
    let image = link::link_patch(session, &plan, &recompiled.revision, &objects.paths())?;
    timings.link = started.elapsed();
    let targets = targets_in(session, &image, &fingerprints, &plan)?;
    Ok(Some(session.towards(targets, Some(image), plan, timings)))
}

/// What the program runs once `image` is mapped: its slot implementations (a root without a
/// running slot is a `#[hotreload]` function the edit added, reached through its new slot
/// by its new callers) and its redirected functions, at runtime addresses.
fn targets_in(
    session: &Session,
    image: &link::image::LinkedImage,
    fingerprints: &std::collections::HashMap<String, u64>,
    plan: &PatchPlan,
) -> Result<Targets, Refused> {
    let runtime = |address: u64| session.load_bias.wrapping_add(address);
    let mut targets = Targets::default();
    for (function, code) in &image.entries {
        let address = code.start;
        match session.slots.get(function) {
            Some(slot) => {
                let fingerprint = fingerprints
                    .get(function)
                    .copied()
                    .unwrap_or(slot.fingerprint);
                targets
                    .slots
                    .insert(function.clone(), (runtime(address), fingerprint));
            }
            None if session.exe.symbol(function).is_some() => {
                targets.entries.insert(function.clone(), runtime(address));
            }
            None => {}
        }
    }
    if targets.is_original() {
        return Err(Refused {
            kind: RefusalKind::Unreachable,
            items: plan.changed_since_start.clone(),
            reason: "the changed code is reached only from #[hotreload] functions the edit added, which nothing running calls yet: restart".into(),
        });
    }
    Ok(targets)
}

/// Which entries of the running executable may take a jump.
struct RunningEntries<'a> {
    exe: &'a BaseExecutable,
    base: &'a Revision,
}

impl RunningEntries<'_> {
    fn of(session: &Session) -> RunningEntries<'_> {
        RunningEntries {
            exe: &session.exe,
            base: &session.base,
        }
    }
}

impl EntryPolicy for RunningEntries<'_> {
    fn redirectable(&self, mangled: &str) -> Result<(), String> {
        self.exe
            .redirectable_entry(mangled)
            .map(|_| ())
            .map_err(|why| format!("its entry can't take a jump: {why}"))
    }

    fn runs_forever(&self, mangled: &str) -> bool {
        runs_forever(self.base, mangled)
    }
}

/// True for the program's `main`, which, once running, never returns.
pub(crate) fn runs_forever(base: &Revision, mangled: &str) -> bool {
    demangle(mangled) == format!("{}::main", base.target.crate_name())
}

/// Identifies what a plan would link: each relinked function's and added data item's name and
/// content fingerprint. Equal for two edits that produce the same code.
fn plan_content(plan: &PatchPlan, index: &EditedIndex) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for name in plan.relinked.iter().chain(&plan.added_data) {
        name.hash(&mut hasher);
        index
            .get(name)
            .map(|symbol| symbol.fingerprint)
            .hash(&mut hasher);
    }
    hasher.finish()
}

/// Why no patch came out of an edit.
#[derive(Debug)]
pub enum PatchFailure {
    /// rustc rejected the code; its rendered diagnostics.
    Compile(Vec<String>),
    /// The edit can't be applied to the running program.
    Refused(Refused),
    /// Something went wrong on our side.
    Failed(Error),
}

/// A refused edit, as `patch-refused` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Why, for tools.
    pub kind: RefusalKind,
    /// The functions, data, types or files concerned.
    pub items: Vec<String>,
    /// Why and what to do, for a person.
    pub reason: String,
}

impl From<Error> for PatchFailure {
    fn from(error: Error) -> Self {
        PatchFailure::Failed(error)
    }
}

impl From<Refused> for PatchFailure {
    fn from(refused: Refused) -> Self {
        PatchFailure::Refused(refused)
    }
}

impl From<Refusal> for PatchFailure {
    fn from(refusal: Refusal) -> Self {
        PatchFailure::Refused(Refused {
            kind: refusal.kind(),
            items: refusal.items(),
            reason: refusal.to_string(),
        })
    }
}

impl From<RecompileError> for PatchFailure {
    fn from(error: RecompileError) -> Self {
        match error {
            RecompileError::Compile { diagnostics } => PatchFailure::Compile(diagnostics),
            RecompileError::Other(error) => PatchFailure::Failed(error),
        }
    }
}
