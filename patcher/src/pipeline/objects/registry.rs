//! Reads the `#[hotreload]` registry entries out of compiled objects, to learn the signature
//! fingerprint each *new* implementation was compiled with. The runtime compares it with the
//! running slot's, so an edit that changed a signature is refused instead of miscalled.

use super::cache::RevisionObjects;
use super::symbols::canonical_name;
use hotreload_abi::slot::{ENTRY_SIZE, FINGERPRINT_OFFSET, ORIGINAL_OFFSET, SECTION};
use linker_shim::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Implementation symbol (mangled, canonical) → fingerprint, for every registry entry of the objects
/// at `paths` among `objects`.
pub fn implementation_fingerprints(
    objects: &RevisionObjects,
    paths: &BTreeSet<PathBuf>,
) -> HashMap<String, u64> {
    objects
        .objects
        .iter()
        .filter(|object| paths.contains(&object.path))
        .flat_map(|object| object.parsed.fingerprints.clone())
        .collect()
}

/// The fingerprint of every registry entry in `file` (stored at `path`).
pub(crate) fn registry_fingerprints(
    file: &object::File<'_>,
    path: &Path,
) -> Result<HashMap<String, u64>> {
    let mut fingerprints = HashMap::new();
    for section in file.sections().filter(|s| s.name() == Ok(SECTION)) {
        let contents = section
            .data()
            .context(|| format!("could not read the registry of {}", path.display()))?;
        for (offset, relocation) in section.relocations() {
            let Some(start) = offset.checked_sub(ORIGINAL_OFFSET as u64) else {
                continue;
            };
            if start % ENTRY_SIZE as u64 != 0 {
                continue;
            }
            let RelocationTarget::Symbol(index) = relocation.target() else {
                continue;
            };
            let Ok(symbol) = file.symbol_by_index(index) else {
                continue;
            };
            let name = match symbol.kind() {
                object::SymbolKind::Section => symbol
                    .section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|s| {
                        s.name()
                            .ok()
                            .and_then(|n| n.strip_prefix(".text."))
                            .map(|name| canonical_name(name).to_string())
                    }),
                _ => symbol
                    .name()
                    .ok()
                    .map(|name| canonical_name(name).to_string()),
            };
            let at = (start as usize) + FINGERPRINT_OFFSET;
            let (Some(name), Some(bytes)) = (name, contents.get(at..at + 8)) else {
                continue;
            };
            fingerprints.insert(name, u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
        }
    }
    Ok(fingerprints)
}
