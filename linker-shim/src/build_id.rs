//! The executable's GNU build-id: how a running program and a revision recognise each other.

use crate::error::{Context, Result};
use object::Object;
use std::fs::File;
use std::path::Path;

/// Hex of the `.note.gnu.build-id` of the ELF file at `path`, `None` if it has none.
pub fn read_build_id(path: &Path) -> Result<Option<String>> {
    let file = File::open(path).context(|| format!("could not open {}", path.display()))?;
    // SAFETY: the map is read-only and dropped before returning. Another process truncating
    // the file meanwhile could fault; executables are replaced by rename, not rewritten.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .context(|| format!("could not map {}", path.display()))?;
    let elf =
        object::File::parse(&*map).context(|| format!("{} is not an ELF file", path.display()))?;
    let id = elf
        .build_id()
        .context(|| format!("could not read the build-id of {}", path.display()))?;
    Ok(id.map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect()))
}
