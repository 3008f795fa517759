//! Each object file read once: its bytes hashed, parsed, and what every stage needs taken
//! from that one parse — named symbols for the diff, DWARF types for the layout check,
//! registry fingerprints for the signature check.
//!
//! Results are kept by content: incremental compilation rewrites only the codegen units an
//! edit touched and leaves the others byte-identical, so a patch parses only what changed.

use super::dwarf::{read_object, ObjectTypes};
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

/// The objects of one revision, each read once.
#[derive(Debug, Clone, Default)]
pub struct RevisionObjects {
    /// The crate they were compiled from.
    pub crate_name: String,
    pub objects: Vec<StoredObject>,
}

/// Parsed objects by content (length and hash of their bytes), for one crate.
#[derive(Debug)]
pub struct ObjectCache {
    crate_name: String,
    by_content: HashMap<(usize, u64), Arc<ParsedObject>>,
}

impl ObjectCache {
    /// An empty cache for objects of the crate named `crate_name` (DWARF types are kept
    /// only where they mention it).
    pub fn new(crate_name: &str) -> ObjectCache {
        ObjectCache {
            crate_name: crate_name.to_owned(),
            by_content: HashMap::new(),
        }
    }

    /// Reads every stored object of `revision`, parsing only contents not seen before.
    pub fn read(&mut self, revision: &Revision) -> Result<RevisionObjects> {
        let objects = revision
            .object_paths()
            .into_iter()
            .map(|path| {
                let parsed = self.parse(&path)?;
                Ok(StoredObject { path, parsed })
            })
            .collect::<Result<_>>()?;
        Ok(RevisionObjects {
            crate_name: self.crate_name.clone(),
            objects,
        })
    }

    fn parse(&mut self, path: &Path) -> Result<Arc<ParsedObject>> {
        let file = std::fs::File::open(path)
            .context(|| format!("could not open the object {}", path.display()))?;
        // SAFETY: revision objects are written once by the shim and never modified; the map
        // is read-only and dropped before this function returns (nothing borrowed from it is
        // kept: the parse results own their data).
        let bytes = unsafe { memmap2::Mmap::map(&file) }
            .context(|| format!("could not map {}", path.display()))?;
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let key = (bytes.len(), hasher.finish());
        if let Some(parsed) = self.by_content.get(&key) {
            return Ok(Arc::clone(parsed));
        }
        let file = object::File::parse(&*bytes)
            .context(|| format!("{} is not an object file", path.display()))?;
        let parsed = Arc::new(ParsedObject {
            symbols: index_object(&file, path)?,
            types: Arc::new(
                read_object(&file, &self.crate_name)
                    .context(|| format!("{}: debug information", path.display()))?,
            ),
            fingerprints: registry_fingerprints(&file, path)?,
        });
        self.by_content.insert(key, Arc::clone(&parsed));
        Ok(parsed)
    }
}
