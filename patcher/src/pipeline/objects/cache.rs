//! Each object file read once: its bytes hashed, parsed, and what every stage needs taken
//! from that one parse — named symbols for the diff, DWARF types for the layout check,
//! registry fingerprints for the signature check.
//!
//! Results are kept by content: incremental compilation rewrites only the codegen units an
//! edit touched and leaves the others byte-identical, so a patch parses only what changed.

use super::dwarf::{read_object, LocalCrateNames, ObjectTypes};
use super::registry::registry_fingerprints;
use super::symbols::{index_object, IndexedSymbol};
use linker_shim::{Context, Result, Revision};
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What one object file defines, as every stage of the pipeline reads it.
#[derive(Debug)]
pub struct ParsedObject {
    /// Named functions and data; their [`Definition`](super::symbols::Definition)s name the
    /// file where these contents were first seen (see [`StoredObject::symbols`]).
    symbols: Vec<IndexedSymbol>,
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
    /// The object's symbols, their definitions pointing at this file (the file the contents
    /// were first seen at may have been pruned since).
    pub fn symbols(&self) -> impl Iterator<Item = IndexedSymbol> + '_ {
        self.parsed.symbols.iter().map(|symbol| {
            let mut symbol = symbol.clone();
            for definition in &mut symbol.definitions {
                definition.object.clone_from(&self.path);
            }
            symbol
        })
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

/// Parsed objects by content (length and hash of their bytes) and crate.
#[derive(Debug)]
pub struct ObjectCache {
    crates: LocalCrateNames,
    by_content: HashMap<(String, usize, u64), Arc<ParsedObject>>,
}

impl ObjectCache {
    /// An empty cache for objects of the `crates` (DWARF types are kept only where they
    /// mention one of them).
    pub fn new(crates: LocalCrateNames) -> ObjectCache {
        ObjectCache {
            crates,
            by_content: HashMap::new(),
        }
    }

    /// A cache for the local crates `base` recorded: its binary crate and libraries.
    pub fn for_revision(base: &Revision) -> ObjectCache {
        let libraries = base.libraries.iter().map(|l| l.crate_name.clone());
        ObjectCache::new(LocalCrateNames::new(
            libraries.chain([base.target.crate_name()]),
        ))
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
        let file = std::fs::File::open(path)
            .context(|| format!("could not open the object {}", path.display()))?;
        // SAFETY: revision objects are written once by the shim and never modified; the map
        // is read-only and dropped before this function returns (nothing borrowed from it is
        // kept: the parse results own their data).
        let bytes = unsafe { memmap2::Mmap::map(&file) }
            .context(|| format!("could not map {}", path.display()))?;
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = (crate_name.to_owned(), bytes.len(), hasher.finish());
        if let Some(parsed) = self.by_content.get(&key) {
            return Ok(Arc::clone(parsed));
        }
        let file = object::File::parse(&*bytes)
            .context(|| format!("{} is not an object file", path.display()))?;
        let parsed = Arc::new(ParsedObject {
            symbols: index_object(&file, path)?,
            types: Arc::new(
                read_object(&file, &self.crates)
                    .context(|| format!("{}: debug information", path.display()))?,
            ),
            fingerprints: registry_fingerprints(&file, path)?,
        });
        self.by_content.insert(key, Arc::clone(&parsed));
        Ok(parsed)
    }
}
