//! Reads the `#[hotreload]` registry entries out of compiled objects, to learn the signature
//! fingerprint each *new* implementation was compiled with. The runtime compares it with the
//! running slot's, so an edit that changed a signature is refused instead of miscalled.

use crate::object_file::with_object;
use hotreload_abi::slot::{ENTRY_SIZE, FINGERPRINT_OFFSET, ORIGINAL_OFFSET, SECTION};
use linker_shim::{Context, Result};
use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget};
use std::collections::HashMap;
use std::path::Path;

/// Implementation symbol (mangled) → fingerprint, for every entry in `objects`.
pub fn implementation_fingerprints<'a>(
    objects: impl IntoIterator<Item = &'a Path>,
) -> Result<HashMap<String, u64>> {
    let mut fingerprints = HashMap::new();
    for path in objects {
        with_object(path, |file| {
            collect_fingerprints(file, path, &mut fingerprints)
        })?;
    }
    Ok(fingerprints)
}

/// Adds the fingerprint of every registry entry in `file` to `fingerprints`.
fn collect_fingerprints(
    file: &object::File<'_>,
    path: &Path,
    fingerprints: &mut HashMap<String, u64>,
) -> Result<()> {
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
                            .map(str::to_string)
                    }),
                _ => symbol.name().ok().map(str::to_string),
            };
            let at = (start as usize) + FINGERPRINT_OFFSET;
            let (Some(name), Some(bytes)) = (name, contents.get(at..at + 8)) else {
                continue;
            };
            fingerprints.insert(name, u64::from_le_bytes(bytes.try_into().expect("8 bytes")));
        }
    }
    Ok(())
}
