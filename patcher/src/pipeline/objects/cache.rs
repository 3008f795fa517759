//! Each object file read once: its bytes hashed, parsed, and what every stage needs taken
//! from that one parse — named symbols for the diff, DWARF types for the layout check,
//! registry fingerprints for the signature check.
//!
//! Results are kept by pooled file: the store names a pooled object after its contents (see
//! `linker_shim`'s pool), and incremental compilation rewrites only the codegen units an edit
//! touched, so a patch parses only what changed and reads nothing else — not even a `stat`.

use super::dwarf::{read_object, LocalCrateNames, ObjectTypes, TypeInterner};
use super::registry::registry_fingerprints;
use super::symbols::{index_object, IndexedSymbol, NameInterner};
use linker_shim::{Context, Result, Revision};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// What one object file defines, as every stage of the pipeline reads it.
#[derive(Debug)]
pub struct ParsedObject {
    /// Named functions and data, each [`Definition`](super::symbols::Definition) in this
    /// file.
    pub(super) symbols: Vec<Arc<IndexedSymbol>>,
    /// What its DWARF says about the crate's types.
    pub(crate) types: Arc<ObjectTypes>,
    /// `#[hotreload]` implementation (mangled) → signature fingerprint, from its registry
    /// entries.
    pub fingerprints: HashMap<String, u64>,
}

/// One object file of a revision and its parse.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub path: PathBuf,
    /// The crate it was compiled from.
    pub crate_name: String,
    pub parsed: Arc<ParsedObject>,
}

impl StoredObject {
    /// The object's named functions and data, defined in this file.
    pub fn symbols(&self) -> &[Arc<IndexedSymbol>] {
        &self.parsed.symbols
    }
}

/// The objects one build of the program is made of, each read once.
#[derive(Debug, Clone, Default)]
pub struct RevisionObjects {
    /// The local crates they were compiled from.
    pub crates: LocalCrateNames,
    pub objects: Vec<StoredObject>,
}

impl RevisionObjects {
    pub fn paths(&self) -> Vec<PathBuf> {
        self.objects
            .iter()
            .map(|object| object.path.clone())
            .collect()
    }
}

/// What the objects a cache reads share: one copy of each name referred to, and of each type
/// description and function signature.
#[derive(Debug, Default)]
struct Interners {
    names: NameInterner,
    types: TypeInterner,
}

/// Parsed objects by crate and pooled file (which names their contents).
#[derive(Debug)]
pub struct ObjectCache {
    crates: LocalCrateNames,
    /// Shared with the caches made [`sharing_types`](ObjectCache::sharing_types) with it.
    interners: Arc<Mutex<Interners>>,
    by_file: HashMap<(String, PathBuf), Arc<ParsedObject>>,
}

impl ObjectCache {
    /// An empty cache for objects of the `crates` (DWARF types are kept only where they
    /// mention one of them).
    pub fn new(crates: LocalCrateNames) -> ObjectCache {
        ObjectCache {
            crates,
            interners: Arc::default(),
            by_file: HashMap::new(),
        }
    }

    /// A cache for the local crates `base` recorded: its binary crate and libraries.
    pub fn for_revision(base: &Revision) -> ObjectCache {
        let libraries = base.libraries.iter().map(|l| l.crate_name.clone());
        ObjectCache::new(LocalCrateNames::new(
            libraries.chain([base.target.crate_name()]),
        ))
    }

    /// An empty cache for the same crates, whose objects share type descriptions with this
    /// one's (another build of the same sources describes the same types).
    pub fn sharing_types(&self) -> ObjectCache {
        ObjectCache {
            crates: self.crates.clone(),
            interners: Arc::clone(&self.interners),
            by_file: HashMap::new(),
        }
    }

    /// Forgets every object but those of `objects`: the only ones a later build can share.
    pub fn keep_only(&mut self, objects: &RevisionObjects) {
        let kept: std::collections::HashSet<&Path> = objects
            .objects
            .iter()
            .map(|object| object.path.as_path())
            .collect();
        self.by_file
            .retain(|(_, path), _| kept.contains(path.as_path()));
    }

    /// Reads the objects of the build `revision` records, parsing only contents not seen
    /// before: the binary crate's, then each local library's — from `revision` if it
    /// recompiled that library, else from `base` (unchanged since the program started).
    pub fn read(&mut self, revision: &Revision, base: &Revision) -> Result<RevisionObjects> {
        let binary = revision.target.crate_name();
        let mut sources: Vec<(String, PathBuf)> = revision
            .object_paths()
            .into_iter()
            .map(|path| (binary.clone(), path))
            .collect();
        for library in &base.libraries {
            let (from, library) = match revision
                .libraries
                .iter()
                .find(|new| new.crate_name == library.crate_name)
            {
                Some(recompiled) => (revision, recompiled),
                None => (base, library),
            };
            sources.extend(
                from.library_object_paths(library)
                    .into_iter()
                    .map(|path| (library.crate_name.clone(), path)),
            );
        }
        let objects = sources
            .into_iter()
            .map(|(crate_name, path)| {
                let parsed = self.parse(&crate_name, &path)?;
                Ok(StoredObject {
                    path,
                    crate_name,
                    parsed,
                })
            })
            .collect::<Result<_>>()?;
        Ok(RevisionObjects {
            crates: self.crates.clone(),
            objects,
        })
    }

    fn parse(&mut self, crate_name: &str, path: &Path) -> Result<Arc<ParsedObject>> {
        let key = (crate_name.to_owned(), path.to_owned());
        if let Some(parsed) = self.by_file.get(&key) {
            return Ok(Arc::clone(parsed));
        }
        let file = std::fs::File::open(path)
            .context(|| format!("could not open the object {}", path.display()))?;
        // SAFETY: pooled objects are never modified: the shim writes a copied one once, and a
        // hard-linked one is rustc's, which writes each build's objects as new files and
        // never rewrites one in place (see `linker_shim`'s pool). The map is read-only and
        // dropped before this function returns (the parse results own their data).
        let bytes = unsafe { memmap2::Mmap::map(&file) }
            .context(|| format!("could not map {}", path.display()))?;
        let file = object::File::parse(&*bytes)
            .context(|| format!("{} is not an object file", path.display()))?;
        // Read before taking the interners, which a cache sharing them may be waiting for.
        let types = read_object(&file, &self.crates)
            .context(|| format!("{}: debug information", path.display()))?;
        let fingerprints = registry_fingerprints(&file, path)?;
        let mut interners = self
            .interners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let parsed = Arc::new(ParsedObject {
            symbols: index_object(&file, path, &mut interners.names)?
                .into_iter()
                .map(Arc::new)
                .collect(),
            types: Arc::new(interners.types.intern(types)),
            fingerprints,
        });
        self.by_file.insert(key, Arc::clone(&parsed));
        Ok(parsed)
    }
}
