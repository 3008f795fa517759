//! One patching session: the running program's base revision and what has been patched into
//! it so far. Turns "the sources changed" into a linked image and the slot updates for it.

use crate::diff::{demangle, SymbolDiff};
use crate::exe::BaseExecutable;
use crate::image::{image_base, link_image, ImageRequest, LinkedImage, Toolchain};
use crate::layout::{layout_refusals, TypeLayouts};
use crate::plan::{plan, PatchPlan, Refusal};
use crate::recompile::{recompile, RecompileError};
use crate::registry::implementation_fingerprints;
use crate::symbols::{ObjectIndexCache, SymbolIndex};
use hotreload_abi::events::RefusalKind;
use hotreload_abi::protocol::{Hello, PatchImage, SlotInfo, SlotUpdate};
use linker_shim::{Context, Error, Revision, Store};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long each step of a patch took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub rustc: Duration,
    pub diff: Duration,
    pub link: Duration,
}

/// Where each rewired slot points: implementation symbol → (runtime address, fingerprint of
/// the function there). Slots not listed point at their original implementation.
pub type SlotTargets = BTreeMap<String, (u64, u64)>;

/// A patch ready to send.
#[derive(Debug, Clone)]
pub struct PreparedPatch {
    /// The image to map first; `None` when every target is already mapped (an edit reverted,
    /// a rollback, or an edit that produced the same code as an earlier patch).
    pub image: Option<LinkedImage>,
    /// Where the slots point once the patch is applied.
    pub targets: SlotTargets,
    /// What has to move to get there from where the slots point now.
    pub updates: Vec<SlotUpdate>,
    pub plan: PatchPlan,
    pub timings: Timings,
    /// True for a rollback to the previous patch.
    pub rollback: bool,
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

impl From<Error> for PatchFailure {
    fn from(error: Error) -> Self {
        PatchFailure::Failed(error)
    }
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

impl From<Refusal> for PatchFailure {
    fn from(refusal: Refusal) -> Self {
        PatchFailure::Refused(Refused {
            kind: refusal.kind(),
            items: refusal.items(),
            reason: refusal.to_string(),
        })
    }
}

/// The state of one running program being patched.
pub struct Session {
    store: Store,
    base: Revision,
    base_index: SymbolIndex,
    /// Objects indexed so far by content: a new build re-parses only what it changed.
    object_index: ObjectIndexCache,
    base_layouts: TypeLayouts,
    exe: BaseExecutable,
    toolchain: Toolchain,
    hotpatch_exe: PathBuf,
    patches_dir: PathBuf,
    load_bias: u64,
    build_id: String,
    /// The running slots, by the mangled name of their implementation.
    slots: HashMap<String, SlotInfo>,
    /// Where the slots point right now.
    current: SlotTargets,
    /// The slot targets after each applied patch, oldest first (the base is the empty map):
    /// what a rollback returns to.
    history: Vec<SlotTargets>,
    /// Images already mapped in the program, by the content of the plan that made them, with
    /// the targets they provide: an edit that recreates earlier code reuses its image.
    mapped_images: HashMap<u64, SlotTargets>,
    /// Images linked so far (each takes an address window).
    images_linked: u64,
    earlier_patch_data: HashMap<String, u64>,
}

impl Session {
    /// Starts a session for the program that said `hello`, built as revision `base`.
    pub fn new(
        store: Store,
        base: Revision,
        hello: &Hello,
        hotpatch_exe: &Path,
    ) -> Result<Session, Error> {
        let exe_path = base
            .exe
            .clone()
            .ok_or_else(|| Error::new(format!("revision {} records no executable", base.id)))?;
        let exe = BaseExecutable::open(&exe_path)?;
        if exe.build_id != hello.build_id {
            return Err(Error::new(format!(
                "the running program (build-id {}) is not the executable hotpatch built ({}, {}): restart it",
                hello.build_id,
                exe.build_id,
                exe_path.display()
            )));
        }
        let rustc = base
            .rustc
            .as_ref()
            .map(|r| PathBuf::from(&r.rustc))
            .unwrap_or_else(|| PathBuf::from("rustc"));
        let toolchain = Toolchain::find(&rustc)?;
        let slots = hello
            .slots
            .iter()
            .filter_map(|slot| {
                let name = exe.function_at(slot.original.wrapping_sub(hello.load_bias))?;
                Some((name.to_string(), slot.clone()))
            })
            .collect();
        store.pin(&base.id)?;
        let patches_dir = store
            .root()
            .join("patches")
            .join(format!("{}-{}", hello.pid, base.id));
        std::fs::create_dir_all(&patches_dir)
            .context(|| format!("could not create {}", patches_dir.display()))?;
        // The program may run in another directory: it gets absolute image paths.
        let patches_dir = patches_dir
            .canonicalize()
            .context(|| format!("could not resolve {}", patches_dir.display()))?;
        let mut object_index = ObjectIndexCache::default();
        Ok(Session {
            base_index: SymbolIndex::load_cached(&base, &mut object_index)?,
            object_index,
            base_layouts: TypeLayouts::load(&base)?,
            store,
            base,
            exe,
            toolchain,
            hotpatch_exe: hotpatch_exe.to_path_buf(),
            patches_dir,
            load_bias: hello.load_bias,
            build_id: hello.build_id.clone(),
            slots,
            current: SlotTargets::new(),
            history: vec![SlotTargets::new()],
            mapped_images: HashMap::new(),
            images_linked: 0,
            earlier_patch_data: HashMap::new(),
        })
    }

    pub fn base(&self) -> &Revision {
        &self.base
    }

    /// Lets the store prune the base revision again (the program is gone).
    pub fn unpin(&self) -> Result<(), Error> {
        self.store.unpin(&self.base.id)
    }

    /// Recompiles, diffs against the base, plans and links. `Ok(None)`: nothing to do.
    pub fn prepare(&mut self) -> Result<Option<PreparedPatch>, PatchFailure> {
        let mut timings = Timings::default();
        let started = Instant::now();
        let recompiled = recompile(&self.store, &self.base, &self.hotpatch_exe).map_err(
            |error| match error {
                RecompileError::Compile { diagnostics } => PatchFailure::Compile(diagnostics),
                RecompileError::Other(error) => PatchFailure::Failed(error),
            },
        )?;
        timings.rustc = started.elapsed();

        let started = Instant::now();
        let new_index = SymbolIndex::load_cached(&recompiled.revision, &mut self.object_index)?;
        let diff = SymbolDiff::between(&self.base_index, &new_index);
        let planned = plan(&diff)?;
        if let Some(plan) = &planned {
            let changes =
                layout_refusals(&self.base_layouts, &recompiled.revision, &new_index, plan)?;
            if !changes.is_empty() {
                return Err(Refusal::TypeLayout(changes).into());
            }
        }
        timings.diff = started.elapsed();

        let Some(plan) = planned else {
            // Back to the base: every slot points at its original again.
            if self.current.is_empty() {
                return Ok(None);
            }
            return Ok(Some(self.towards(
                SlotTargets::new(),
                None,
                PatchPlan::default(),
                timings,
            )));
        };
        let content = plan_content(&plan, &new_index);
        if let Some(targets) = self.mapped_images.get(&content).cloned() {
            // The same code as an earlier, still-mapped patch: just point the slots there
            // (nothing at all if they already do: the save changed nothing that runs).
            let patch = self.towards(targets, None, plan, timings);
            return Ok((!patch.updates.is_empty()).then_some(patch));
        }

        let started = Instant::now();
        let fingerprints = implementation_fingerprints(plan.objects.iter().map(PathBuf::as_path))?;
        for root in &plan.roots {
            // The symbol hash covers the signature, so a changed signature usually shows up
            // as a root with a new name but the path of a running slot.
            let slot = match self.slots.get(root) {
                Some(slot)
                    if fingerprints
                        .get(root)
                        .is_none_or(|new| *new == slot.fingerprint) =>
                {
                    continue
                }
                Some(slot) => slot,
                None => match self
                    .slots
                    .iter()
                    .find(|(name, _)| demangle(name) == demangle(root))
                {
                    Some((_, slot)) => slot,
                    None => continue,
                },
            };
            return Err(PatchFailure::Refused(Refused {
                kind: RefusalKind::Signature,
                items: vec![slot.path.clone()],
                reason: format!(
                    "the signature of `{}` changed; its running callers still pass arguments the old way: restart to apply this edit",
                    slot.path
                ),
            }));
        }
        let index = self.images_linked;
        let work_dir = self.patches_dir.join(format!("work-{index}"));
        let all_objects = recompiled.revision.object_paths();
        let output = self
            .patches_dir
            .join(format!("patch-{index}-{}.so", recompiled.revision.id));
        let image = link_image(
            &ImageRequest {
                exe: &self.exe,
                all_objects: &all_objects,
                objects: &plan.objects,
                relinked: &plan.relinked,
                roots: &plan.roots,
                earlier_patch_data: &self.earlier_patch_data,
                base: image_base(index)?,
                work_dir: &work_dir,
                output: &output,
            },
            &self.toolchain,
        )?;
        let _ = std::fs::remove_dir_all(&work_dir);
        self.images_linked += 1;
        timings.link = started.elapsed();

        // A root without a running slot is a #[hotreload] function the edit added: its (new)
        // callers in the image reach it through its new slot.
        let targets: SlotTargets = image
            .roots
            .iter()
            .filter_map(|(root, address)| {
                let slot = self.slots.get(root)?;
                let fingerprint = fingerprints.get(root).copied().unwrap_or(slot.fingerprint);
                Some((
                    root.clone(),
                    (self.load_bias.wrapping_add(*address), fingerprint),
                ))
            })
            .collect();
        if targets.is_empty() {
            return Err(PatchFailure::Refused(Refused {
                kind: RefusalKind::Unreachable,
                items: plan.changed,
                reason: "the changed code is reached only from #[hotreload] functions the edit added, which nothing running calls yet: restart".into(),
            }));
        }
        let mut patch = self.towards(targets, Some(image), plan, timings);
        patch.plan.content = content;
        Ok(Some(patch))
    }

    /// A patch that undoes the last applied one; `None` if nothing was patched yet.
    pub fn rollback(&self) -> Option<PreparedPatch> {
        let previous = self.history.iter().rev().nth(1)?.clone();
        let mut patch = self.towards(previous, None, PatchPlan::default(), Timings::default());
        patch.rollback = true;
        Some(patch)
    }

    /// The patch that moves the slots from where they point now to `targets`.
    fn towards(
        &self,
        targets: SlotTargets,
        image: Option<LinkedImage>,
        plan: PatchPlan,
        timings: Timings,
    ) -> PreparedPatch {
        let names: std::collections::BTreeSet<&String> =
            self.current.keys().chain(targets.keys()).collect();
        let updates = names
            .into_iter()
            .filter_map(|name| {
                let slot = self.slots.get(name)?;
                let original = (slot.original, slot.fingerprint);
                let now = self.current.get(name).copied().unwrap_or(original);
                let next = targets.get(name).copied().unwrap_or(original);
                (now != next).then_some(SlotUpdate {
                    slot: slot.slot,
                    fingerprint: next.1,
                    target: next.0,
                })
            })
            .collect();
        PreparedPatch {
            image,
            targets,
            updates,
            plan,
            timings,
            rollback: false,
        }
    }

    /// The image description the runtime needs, for a prepared patch.
    pub fn image_for_runtime(&self, patch: &PreparedPatch) -> Option<PatchImage> {
        patch.image.as_ref().map(|image| PatchImage {
            path: image.path.display().to_string(),
            build_id: self.build_id.clone(),
            checksum: image.checksum,
        })
    }

    /// Records that the runtime applied `patch`.
    pub fn applied(&mut self, patch: &PreparedPatch) {
        if patch.rollback {
            self.history.pop();
        } else {
            self.history.push(patch.targets.clone());
        }
        self.current = patch.targets.clone();
        if let Some(image) = &patch.image {
            self.earlier_patch_data
                .extend(image.data.iter().map(|(k, v)| (k.clone(), *v)));
            self.mapped_images
                .insert(patch.plan.content, patch.targets.clone());
        }
    }
}

/// Identifies what a plan would link: each relinked function's and added data item's name and
/// content fingerprint. Equal for two edits that produce the same code.
fn plan_content(plan: &PatchPlan, index: &SymbolIndex) -> u64 {
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
