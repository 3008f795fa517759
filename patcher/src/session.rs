//! One patching session: the running program's base revision and what has been patched into
//! it so far. Turns "the sources changed" into a linked image and the slot updates for it.

use crate::diff::SymbolDiff;
use crate::exe::BaseExecutable;
use crate::image::{image_base, link_image, ImageRequest, LinkedImage, Toolchain};
use crate::plan::{plan, PatchPlan, Refusal};
use crate::recompile::{recompile, RecompileError};
use crate::registry::implementation_fingerprints;
use crate::symbols::SymbolIndex;
use hotreload::protocol::{Hello, PatchImage, SlotInfo, SlotUpdate};
use linker_shim::{Context, Error, Revision, Store};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long each step of a patch took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub rustc: Duration,
    pub diff: Duration,
    pub link: Duration,
}

/// A patch ready to send.
#[derive(Debug, Clone)]
pub struct PreparedPatch {
    /// `None` when the edit only reverted earlier changes: the slots just point back.
    pub image: Option<LinkedImage>,
    pub updates: Vec<SlotUpdate>,
    pub plan: PatchPlan,
    pub timings: Timings,
}

/// Why no patch came out of an edit.
#[derive(Debug)]
pub enum PatchFailure {
    /// rustc rejected the code; its rendered diagnostics.
    Compile(Vec<String>),
    /// The edit can't be applied to the running program; the reason says why and what to do.
    Refused(String),
    /// Something went wrong on our side.
    Failed(Error),
}

impl From<Error> for PatchFailure {
    fn from(error: Error) -> Self {
        PatchFailure::Failed(error)
    }
}

impl From<Refusal> for PatchFailure {
    fn from(refusal: Refusal) -> Self {
        PatchFailure::Refused(refusal.to_string())
    }
}

/// The state of one running program being patched.
pub struct Session {
    store: Store,
    base: Revision,
    base_index: SymbolIndex,
    exe: BaseExecutable,
    toolchain: Toolchain,
    hotpatch_exe: PathBuf,
    patches_dir: PathBuf,
    load_bias: u64,
    build_id: String,
    /// The running slots, by the mangled name of their implementation.
    slots: HashMap<String, SlotInfo>,
    /// Implementations whose slots point into a patch right now.
    rewired: BTreeSet<String>,
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
        Ok(Session {
            base_index: SymbolIndex::load(&base)?,
            store,
            base,
            exe,
            toolchain,
            hotpatch_exe: hotpatch_exe.to_path_buf(),
            patches_dir,
            load_bias: hello.load_bias,
            build_id: hello.build_id.clone(),
            slots,
            rewired: BTreeSet::new(),
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
        let new_index = SymbolIndex::load(&recompiled.revision)?;
        let diff = SymbolDiff::between(&self.base_index, &new_index);
        let planned = plan(&diff)?;
        timings.diff = started.elapsed();

        let Some(plan) = planned else {
            if self.rewired.is_empty() {
                return Ok(None);
            }
            // Back to the base: point every rewired slot at its original again.
            let updates = self
                .rewired
                .iter()
                .filter_map(|name| self.slots.get(name))
                .map(|slot| SlotUpdate {
                    slot: slot.slot,
                    fingerprint: slot.fingerprint,
                    target: slot.original,
                });
            return Ok(Some(PreparedPatch {
                image: None,
                updates: updates.collect(),
                plan: PatchPlan::default(),
                timings,
            }));
        };

        let started = Instant::now();
        let fingerprints = implementation_fingerprints(plan.objects.iter().map(PathBuf::as_path))?;
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

        let mut updates = Vec::new();
        for (root, address) in &image.roots {
            // A root without a running slot is a #[hotreload] function the edit added: its
            // (new) callers in the image reach it through its new slot.
            let Some(slot) = self.slots.get(root) else {
                continue;
            };
            let fingerprint = fingerprints.get(root).copied().unwrap_or(slot.fingerprint);
            updates.push(SlotUpdate {
                slot: slot.slot,
                fingerprint,
                target: self.load_bias.wrapping_add(*address),
            });
        }
        for name in self
            .rewired
            .iter()
            .filter(|name| !image.roots.contains_key(*name))
        {
            if let Some(slot) = self.slots.get(name) {
                updates.push(SlotUpdate {
                    slot: slot.slot,
                    fingerprint: slot.fingerprint,
                    target: slot.original,
                });
            }
        }
        if updates.is_empty() {
            return Err(PatchFailure::Refused(
                "the changed code is reached only from #[hotreload] functions the edit added, which nothing running calls yet: restart".into(),
            ));
        }
        Ok(Some(PreparedPatch {
            image: Some(image),
            updates,
            plan,
            timings,
        }))
    }

    /// The image description the runtime needs, for a prepared patch.
    pub fn image_for_runtime(&self, patch: &PreparedPatch) -> Option<PatchImage> {
        patch.image.as_ref().map(|image| PatchImage {
            path: image.path.display().to_string(),
            build_id: self.build_id.clone(),
        })
    }

    /// Records that the runtime applied `patch`.
    pub fn applied(&mut self, patch: &PreparedPatch) {
        self.rewired = patch
            .plan
            .roots
            .iter()
            .filter(|root| self.slots.contains_key(*root))
            .cloned()
            .collect();
        if let Some(image) = &patch.image {
            self.earlier_patch_data
                .extend(image.data.iter().map(|(k, v)| (k.clone(), *v)));
        }
    }
}
