//! One patching session: the running program's base revision and what has been patched into
//! it so far — the state the pipeline ([`crate::pipeline::prepare`]) reads and the runtime's
//! answers update.

pub mod targets;

use crate::leftovers::remove_dirs_of_ended_processes;
use crate::pipeline::check::layout::TypeLayouts;
use crate::pipeline::link::image::{ImageSpace, LinkedImage, Toolchain};
use crate::pipeline::objects::cache::ObjectCache;
use crate::pipeline::objects::exe::BaseExecutable;
use crate::pipeline::objects::symbols::SymbolIndex;
use crate::pipeline::plan::PatchPlan;
use crate::pipeline::recompile::crates::LocalCrates;
use crate::pipeline::recompile::{CrateBuild, PatchBuilds};
use hotreload_abi::protocol::{EntryChange, Hello, PatchImage, SlotInfo, SlotUpdate};
use linker_shim::{Context, Error, Revision, Store};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use targets::{slot_updates, EntryCopies, Targets};

/// How long each step of a patch took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timings {
    pub rustc: Duration,
    /// The crates compiled, each with its compiler time.
    pub crates: Vec<CrateBuild>,
    pub diff: Duration,
    pub link: Duration,
}

/// A patch ready to send.
#[derive(Debug, Clone)]
pub struct PreparedPatch {
    /// The image to map first; `None` when every target is already mapped (an edit reverted,
    /// a rollback, or an edit that produced the same code as an earlier patch).
    pub image: Option<LinkedImage>,
    /// What the program runs once the patch is applied.
    pub targets: Targets,
    /// The slot stores that get there from what runs now.
    pub updates: Vec<SlotUpdate>,
    /// The entry writes that get there from what runs now.
    pub entries: Vec<EntryChange>,
    pub plan: PatchPlan,
    pub timings: Timings,
    /// True for a rollback to the previous patch.
    pub rollback: bool,
}

impl PreparedPatch {
    /// True when applying it would change nothing the program runs.
    pub fn is_empty(&self) -> bool {
        self.updates.is_empty() && self.entries.is_empty()
    }

    /// The patch, or `None` when it would change nothing the program runs.
    pub fn unless_empty(self) -> Option<PreparedPatch> {
        (!self.is_empty()).then_some(self)
    }
}

/// The state of one running program being patched.
pub struct Session {
    pub(crate) store: Store,
    pub(crate) base: Revision,
    pub(crate) base_index: SymbolIndex,
    /// The local crates and their patch builds so far.
    pub(crate) builds: PatchBuilds,
    /// Objects parsed so far, by content: a new build re-parses only what it changed.
    pub(crate) objects: ObjectCache,
    pub(crate) base_layouts: TypeLayouts,
    pub(crate) exe: BaseExecutable,
    pub(crate) toolchain: Toolchain,
    pub(crate) hotpatch_exe: PathBuf,
    pub(crate) patches_dir: PathBuf,
    pub(crate) load_bias: u64,
    build_id: String,
    /// The running slots, by the mangled name of their implementation.
    pub(crate) slots: HashMap<String, SlotInfo>,
    /// What runs right now.
    current: Targets,
    /// What ran after each applied patch, oldest first (the base is the original state):
    /// what a rollback returns to.
    history: Vec<Targets>,
    /// Every mapped copy of each redirected function and where its entry jumps.
    copies: EntryCopies,
    /// Images already mapped in the program, by the content of the plan that made them, with
    /// the targets they provide: an edit that recreates earlier code reuses its image.
    mapped_images: HashMap<u64, Targets>,
    /// Images linked so far (numbers their files).
    pub(crate) images_linked: u64,
    /// Where the next image goes.
    pub(crate) image_space: ImageSpace,
    /// Data added by earlier, still-mapped patches: name → link-time address.
    pub(crate) earlier_patch_data: HashMap<String, u64>,
}

impl Session {
    /// Starts a session for the program that said `hello`, built as revision `base` from the
    /// local `crates`.
    pub fn new(
        store: Store,
        base: Revision,
        crates: LocalCrates,
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
        // Images of programs that are gone: nothing maps them any more.
        remove_dirs_of_ended_processes(&store.root().join("patches"), "");
        let patches_dir = store
            .root()
            .join("patches")
            .join(format!("{}-{}", hello.pid, base.id));
        std::fs::create_dir_all(&patches_dir)
            .context(|| format!("could not create {}", patches_dir.display()))?;
        // Only this user may add or swap images in it, whatever the umask.
        std::fs::set_permissions(&patches_dir, std::fs::Permissions::from_mode(0o700))
            .context(|| format!("could not protect {}", patches_dir.display()))?;
        // The program may run in another directory: it gets absolute image paths.
        let patches_dir = patches_dir
            .canonicalize()
            .context(|| format!("could not resolve {}", patches_dir.display()))?;
        let mut objects = ObjectCache::for_revision(&base);
        let base_objects = objects.read(&base, &base)?;
        let image_space = ImageSpace::below(&exe.loaded);
        Ok(Session {
            base_index: SymbolIndex::of(&base_objects),
            builds: PatchBuilds::new(&store, &base, crates)?,
            base_layouts: TypeLayouts::of(&base_objects),
            objects,
            store,
            base,
            exe,
            toolchain,
            hotpatch_exe: hotpatch_exe.to_path_buf(),
            patches_dir,
            load_bias: hello.load_bias,
            build_id: hello.build_id.clone(),
            slots,
            current: Targets::default(),
            history: vec![Targets::default()],
            copies: EntryCopies::default(),
            mapped_images: HashMap::new(),
            images_linked: 0,
            image_space,
            earlier_patch_data: HashMap::new(),
        })
    }

    pub fn base(&self) -> &Revision {
        &self.base
    }

    /// The local crates the program is built from.
    pub fn crates(&self) -> &LocalCrates {
        &self.builds.crates
    }

    /// Ends the session (the program is gone): its patch images are removed and the store
    /// may prune the base revision again.
    pub fn end(self) -> Result<(), Error> {
        let _ = std::fs::remove_dir_all(&self.patches_dir);
        self.store.unpin(&self.base.id)
    }

    /// True while the program runs only its original code.
    pub fn is_original(&self) -> bool {
        self.current.is_original()
    }

    /// What an earlier, still-mapped image with the same plan content provides.
    pub(crate) fn mapped_image(&self, content: u64) -> Option<Targets> {
        self.mapped_images.get(&content).cloned()
    }

    /// A patch that undoes the last applied one; `None` if nothing was patched yet.
    pub fn rollback(&self) -> Option<PreparedPatch> {
        let previous = self.history.iter().rev().nth(1)?.clone();
        let mut patch = self.towards(previous, None, PatchPlan::default(), Timings::default());
        patch.rollback = true;
        Some(patch)
    }

    /// The patch that makes the program run `targets` (mapping `image` first, if any).
    pub(crate) fn towards(
        &self,
        targets: Targets,
        image: Option<LinkedImage>,
        plan: PatchPlan,
        timings: Timings,
    ) -> PreparedPatch {
        let mut copies = self.copies.clone();
        self.add_copies(&mut copies, image.as_ref());
        PreparedPatch {
            updates: slot_updates(&self.slots, &self.current, &targets),
            entries: copies.changes_towards(&self.current, &targets),
            image,
            targets,
            plan,
            timings,
            rollback: false,
        }
    }

    /// Notes the copies of redirected functions `image` maps.
    fn add_copies(&self, copies: &mut EntryCopies, image: Option<&LinkedImage>) {
        for (function, &address) in image.iter().flat_map(|image| &image.entries) {
            if let Some(original) = self.exe.symbol(function) {
                copies.add_copy(
                    function,
                    self.load_bias.wrapping_add(original.address),
                    self.load_bias.wrapping_add(address),
                );
            }
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
        let mut copies = std::mem::take(&mut self.copies);
        self.add_copies(&mut copies, patch.image.as_ref());
        copies.applied(&patch.entries);
        self.copies = copies;
        if let Some(image) = &patch.image {
            self.earlier_patch_data
                .extend(image.data.iter().map(|(k, v)| (k.clone(), *v)));
            self.mapped_images
                .insert(patch.plan.content, patch.targets.clone());
        }
    }
}
