//! Reading a compiled object file: one place for the read, the parse and their messages.

use linker_shim::{Context, Result};
use std::path::Path;

/// Reads and parses the object file at `path` and hands it to `inspect`.
pub fn with_object<T>(
    path: &Path,
    inspect: impl FnOnce(&object::File<'_>) -> Result<T>,
) -> Result<T> {
    let data = std::fs::read(path).context(|| format!("could not read {}", path.display()))?;
    let file =
        object::File::parse(&*data).context(|| format!("could not parse {}", path.display()))?;
    inspect(&file)
}
