//! One patching session: the running program's base revision and what has been patched into
//! it so far — the state the pipeline ([`crate::pipeline::prepare`]) reads and the runtime's
//! answers update.

pub mod targets;

use crate::leftovers::remove_dirs_of_ended_processes;
use crate::pipeline::check::layout::TypeLayouts;
use crate::pipeline::diff::LatestBuild;
use crate::pipeline::link::image::{
    image_index, read_mapped_image, ImageSpace, LinkedImage, Toolchain,
};
use crate::pipeline::objects::cache::ObjectCache;
use crate::pipeline::objects::exe::BaseExecutable;
use crate::pipeline::objects::symbols::SymbolIndex;
use crate::pipeline::plan::PatchPlan;
use crate::pipeline::recompile::crates::{CrateIndex, LocalCrates};
use crate::pipeline::recompile::{CrateBuild, PatchBuilds};
use crate::pipeline::runs_forever;
use hotreload_abi::protocol::{EntryChange, Hello, PatchImage, SlotInfo, SlotUpdate};
use linker_shim::{Context, Error, Revision, Store};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use targets::{slot_updates, EntryCopies, Targets};

/// In the patches directory: until when the edits were handled ([`Session::sources_handled`]).
const HANDLED_FILE: &str = "sources-handled";

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
    /// The code the patch replaces, for the runtime to wait until no thread runs it: each
    /// version running now (mangled name, runtime `[start, end)`), but functions that never
    /// return (`main`, which the plan notes instead).
    pub old_code: Vec<(String, Range<u64>)>,
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

/// The warm-up's build of the unchanged sources, compared with the base.
struct WarmedUp {
    latest: LatestBuild,
    /// The local libraries it rebuilt (all of them).
    libraries: BTreeSet<CrateIndex>,
    /// Its objects, parsed.
    cache: ObjectCache,
    /// From the start of the warm-up to its end.
    took: Duration,
}

/// The state of one running program being patched.
pub struct Session {
    pub(crate) store: Store,
    pub(crate) base: Revision,
    /// The newest build compared with the base (at first the base itself): the next patch
    /// build is compared with it object by object.
    pub(crate) latest: LatestBuild,
    /// Where the warm-up leaves its build, indexed (see [`Session::warm_up`]).
    warmed: Arc<Mutex<Option<WarmedUp>>>,
    /// The local crates and their patch builds so far.
    pub(crate) builds: PatchBuilds,
    /// Objects parsed so far, by pooled file: a new build parses only what it changed.
    pub(crate) objects: ObjectCache,
    pub(crate) base_layouts: TypeLayouts,
    pub(crate) exe: BaseExecutable,
    pub(crate) toolchain: Toolchain,
    pub(crate) hotpatch_exe: PathBuf,
    pub(crate) patches_dir: PathBuf,
    pub(crate) load_bias: u64,
    build_id: String,
    /// The program's pid: its base revision stays pinned while it runs.
    program_pid: u32,
    /// The running slots, by the mangled name of their implementation.
    pub(crate) slots: HashMap<String, SlotInfo>,
    /// What runs right now.
    current: Targets,
    /// What ran after each applied patch, oldest first (the base is the original state):
    /// what a rollback returns to.
    history: Vec<Targets>,
    /// Beside each entry of `history`: the functions that differed from the base then, with
    /// their fingerprints ([`PatchPlan::functions`]), which the next edit is compared with.
    functions_history: Vec<BTreeMap<String, u64>>,
    /// Every mapped copy of each redirected function and where its entry jumps.
    copies: EntryCopies,
    /// Images already mapped in the program, by the content of the plan that made them, with
    /// the targets they provide: an edit that recreates earlier code reuses its image.
    mapped_images: HashMap<u64, Targets>,
    /// Each function of a mapped image by runtime entry: its mangled name and runtime end.
    image_code: HashMap<u64, (String, u64)>,
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
        store.pin(&base.id, hello.pid)?;
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
        let mut session = Session {
            latest: LatestBuild::base(
                base_objects.clone(),
                Arc::new(SymbolIndex::of(&base_objects)),
            ),
            builds: PatchBuilds::new(&store, &base, crates)?,
            warmed: Arc::default(),
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
            program_pid: hello.pid,
            slots,
            current: Targets::default(),
            history: vec![Targets::default()],
            functions_history: vec![BTreeMap::new()],
            copies: EntryCopies::default(),
            mapped_images: HashMap::new(),
            image_code: HashMap::new(),
            images_linked: 0,
            image_space,
            earlier_patch_data: HashMap::new(),
        };
        session.take_over(hello)?;
        Ok(session)
    }

    /// Takes over what the program runs already: nothing for a program just started, the
    /// patches of an earlier `hotpatch` for one it attaches to (their images, read back from
    /// the files, the slots' targets and the redirected entries). Undo starts from here.
    fn take_over(&mut self, hello: &Hello) -> Result<(), Error> {
        for mapped in &hello.images {
            let path = Path::new(&mapped.path);
            let image = read_mapped_image(path, &self.exe)?;
            self.remember_image(&image.functions, &image.data);
            self.images_linked = self
                .images_linked
                .max(image_index(path).map_or(0, |i| i + 1));
            // Mapped oldest first, so each next image goes above; one this session placed
            // already keeps its place.
            let end = mapped.end.wrapping_sub(self.load_bias);
            if end >= self.image_space.next_base() {
                self.image_space.claim(end)?;
            }
        }
        for slot in &hello.slots {
            let known = self
                .slots
                .values_mut()
                .find(|known| known.slot == slot.slot);
            if let Some(known) = known {
                known.current = slot.current;
            }
        }
        self.current = Targets::default();
        for (name, slot) in &self.slots {
            if slot.current != slot.original {
                self.current
                    .slots
                    .insert(name.clone(), (slot.current, slot.fingerprint));
            }
        }
        self.copies.jump_as(&hello.redirected);
        for redirect in &hello.redirected {
            let Some(target) = redirect.target else {
                continue;
            };
            let link_time = redirect.entry.wrapping_sub(self.load_bias);
            if let Some(function) = self.exe.function_at(link_time) {
                self.current.entries.insert(function.to_owned(), target);
            }
        }
        self.history = vec![self.current.clone()];
        // What the images hold is not known by fingerprint: the first edit is named against
        // the base.
        self.functions_history = vec![BTreeMap::new()];
        Ok(())
    }

    /// Starts the build that makes the first edit as fast as later ones
    /// ([`PatchBuilds::warm_up`]), then indexes its objects against the base — all of them:
    /// none is an object of the base's own build — still in the background. `done` is
    /// called once that is ready to [`adopt`](Session::adopt_warm_up).
    pub fn warm_up(&mut self, done: impl FnOnce() + Send + 'static) {
        let warmed = Arc::clone(&self.warmed);
        let running = Arc::clone(self.latest.running());
        let mut cache = self.objects.sharing_types();
        let base = self.base.clone();
        let started = Instant::now();
        self.builds.warm_up(
            &self.store,
            &self.base,
            &self.hotpatch_exe,
            move |revision, libraries| {
                let Ok(objects) = cache.read(&revision, &base) else {
                    return; // the first edit reads them, and reports what is wrong
                };
                *warmed.lock().unwrap_or_else(PoisonError::into_inner) = Some(WarmedUp {
                    latest: LatestBuild::anchored(objects, running),
                    libraries,
                    cache,
                    took: started.elapsed(),
                });
                done();
            },
        );
    }

    /// Ends the warm-up (stopping its compiler if it still runs) and takes over what it
    /// indexed, if it got that far: the next patch build is compared with it, so only the
    /// objects the edit rewrote are read. Returns how many objects it indexed, and how long
    /// the warm-up took.
    pub fn adopt_warm_up(&mut self) -> Option<(usize, Duration)> {
        self.builds.stop_warm_up();
        let warmed = self
            .warmed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        let objects = warmed.latest.objects.objects.len();
        self.latest = warmed.latest;
        self.builds.adopt_libraries(warmed.libraries);
        // The base's objects are not parsed again: no patch build shares them.
        self.objects = warmed.cache;
        // SAFETY: malloc_trim(3) only returns free heap pages to the system; no allocation
        // is touched. The base's parse, now dropped, was the largest thing the session held.
        unsafe { libc::malloc_trim(0) };
        Some((objects, warmed.took))
    }

    /// Replaces what the session believes the program runs by what it says it runs
    /// (`hello`, from a `Describe`): after an answer went missing, the program's word is the
    /// truth, never a guess. Images stay known (a mapped image is never unmapped); undo starts
    /// from here.
    pub fn resync(&mut self, hello: &Hello) -> Result<(), Error> {
        self.take_over(hello)
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
        self.store.unpin(&self.base.id, self.program_pid)
    }

    /// True while the program runs only its original code.
    pub fn is_original(&self) -> bool {
        self.current.is_original()
    }

    /// Records that the edits saved before `at` are handled (patched, refused or reported):
    /// a later `hotpatch attach` picks up only those saved after.
    pub fn sources_handled(&self, at: SystemTime) {
        let unix_ms = at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let _ = std::fs::write(self.patches_dir.join(HANDLED_FILE), unix_ms.to_string());
    }

    /// Until when (Unix ms) this program's edits were handled by a hotpatch: the base
    /// build's time when none handled any.
    pub fn sources_handled_until(&self) -> u64 {
        std::fs::read_to_string(self.patches_dir.join(HANDLED_FILE))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(self.base.created_unix_ms)
    }

    /// The functions that differ from the base in the code running now, with fingerprints.
    pub(crate) fn running_functions(&self) -> &BTreeMap<String, u64> {
        self.functions_history
            .last()
            .expect("the history starts with the base")
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
        if let Some(image) = &image {
            self.add_copies(&mut copies, &image.entries);
        }
        let updates = slot_updates(&self.slots, &self.current, &targets);
        let entries = copies.changes_towards(&self.current, &targets);
        PreparedPatch {
            old_code: self.old_code(&updates, &entries),
            updates,
            entries,
            image,
            targets,
            plan,
            timings,
            rollback: false,
        }
    }

    /// Notes the copies of redirected functions an image maps (`functions`, link-time).
    fn add_copies(&self, copies: &mut EntryCopies, functions: &BTreeMap<String, Range<u64>>) {
        for (function, code) in functions {
            if let Some(original) = self.exe.symbol(function) {
                copies.add_copy(
                    function,
                    self.load_bias.wrapping_add(original.address),
                    self.load_bias.wrapping_add(code.start),
                );
            }
        }
    }

    /// What `updates` and `entries` move away from: each slot's current implementation and
    /// each copy whose entry gets a jump, with its name and runtime range. Nothing when they
    /// replace one function only: no thread can mix its versions with another's (one inside it
    /// finishes that call in the old code, as with a one-slot patch), so the runtime needn't
    /// wait for its stacks — which, for a function busy threads call all the time, would hold
    /// the patch back for up to 2 s.
    fn old_code(
        &self,
        updates: &[SlotUpdate],
        entries: &[EntryChange],
    ) -> Vec<(String, Range<u64>)> {
        let slots_now = self
            .slots
            .iter()
            .filter(|(_, slot)| updates.iter().any(|update| update.slot == slot.slot))
            .map(|(name, slot)| match self.current.slots.get(name) {
                Some(&(running, _)) => running,
                None => slot.original,
            });
        let jumped = entries
            .iter()
            .filter(|change| change.target.is_some())
            .map(|change| change.entry);
        let replaced: Vec<(String, Range<u64>)> = slots_now
            .chain(jumped)
            .filter_map(|entry| self.code_at(entry))
            .filter(|(name, code)| !code.is_empty() && !runs_forever(&self.base, name))
            .collect();
        let functions: BTreeSet<&str> = replaced.iter().map(|(name, _)| name.as_str()).collect();
        if functions.len() < 2 {
            return Vec::new();
        }
        replaced
    }

    /// The function starting at runtime address `entry` (the executable's or a mapped
    /// image's): its mangled name and runtime range.
    fn code_at(&self, entry: u64) -> Option<(String, Range<u64>)> {
        if let Some((name, end)) = self.image_code.get(&entry) {
            return Some((name.clone(), entry..*end));
        }
        let name = self.exe.function_at(entry.wrapping_sub(self.load_bias))?;
        let size = self.exe.symbol(name)?.size;
        Some((name.to_string(), entry..entry.wrapping_add(size)))
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
            self.functions_history.pop();
        } else {
            self.history.push(patch.targets.clone());
            self.functions_history.push(patch.plan.functions.clone());
        }
        self.current = patch.targets.clone();
        if let Some(image) = &patch.image {
            self.remember_image(&image.entries, &image.data);
            self.mapped_images
                .insert(patch.plan.content, patch.targets.clone());
        }
        self.copies.applied(&patch.entries);
    }

    /// Notes what a newly mapped image defines (link-time): its functions (copies of
    /// redirected ones; code a later patch may replace) and its data (for later patches to
    /// bind to).
    fn remember_image(
        &mut self,
        functions: &BTreeMap<String, Range<u64>>,
        data: &HashMap<String, u64>,
    ) {
        let mut copies = std::mem::take(&mut self.copies);
        self.add_copies(&mut copies, functions);
        self.copies = copies;
        for (name, code) in functions {
            let start = self.load_bias.wrapping_add(code.start);
            let end = self.load_bias.wrapping_add(code.end);
            self.image_code.insert(start, (name.clone(), end));
        }
        self.earlier_patch_data
            .extend(data.iter().map(|(name, &address)| (name.clone(), address)));
    }
}
