//! The runtime for a program that does not link it. `hotpatch` carries `hotreload-preload` (the
//! runtime built as a shared library by patcher's `build.rs`), writes it once into the revision
//! store and preloads it into the program only — `LD_PRELOAD` on the program's command, never
//! on cargo's, rustc's or the linker's — where its agent connects exactly like a linked one.

use crate::pipeline::objects::exe::links_runtime;
use hotreload_abi::hash::fnv1a;
use linker_shim::{Context, Error, Result};
use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The runtime as a shared library (`hotreload-preload`, profile `agent`).
const PRELOAD_LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libhotreload_preload.so"));

/// Makes sure `program` (the command about to start `exe`) runs one agent: the runtime linked
/// into `exe` already has one; otherwise the library, written into `store_root` if not there
/// yet, is added to `LD_PRELOAD` (after the person's own entries). Returns the library
/// preloaded, if any.
pub(super) fn provide_agent(
    program: &mut Command,
    exe: &Path,
    store_root: &Path,
) -> Result<Option<PathBuf>> {
    if links_runtime(exe)? {
        return Ok(None);
    }
    let library = write_library(store_root)?;
    let entry = library.as_os_str();
    if entry
        .as_encoded_bytes()
        .iter()
        .any(|byte| b": ".contains(byte))
    {
        return Err(Error::new(format!(
            "{} does not link `hotreload` and its agent can't be preloaded from {}: LD_PRELOAD \
             can't name a path with a space or colon (use another --target-dir, or depend on `hotreload`)",
            exe.display(),
            library.display()
        )));
    }
    let mut preloads = std::env::var_os("LD_PRELOAD")
        .filter(|others| !others.is_empty())
        .map(|mut others| {
            others.push(":");
            others
        })
        .unwrap_or_default();
    preloads.push(entry);
    program.env("LD_PRELOAD", preloads);
    Ok(Some(library))
}

/// `<store>/agent-<content hash>.so`, written (mode 0600, then renamed into place) unless a
/// file with these bytes is already there.
fn write_library(store_root: &Path) -> Result<PathBuf> {
    let name = format!("agent-{:016x}.so", fnv1a(PRELOAD_LIBRARY));
    let library = store_root.join(&name);
    if std::fs::read(&library).is_ok_and(|bytes| bytes == PRELOAD_LIBRARY) {
        return Ok(library);
    }
    std::fs::create_dir_all(store_root)
        .context(|| format!("could not create {}", store_root.display()))?;
    let mut temporary = OsString::from(".");
    temporary.push(&name);
    temporary.push(format!(".{}", std::process::id()));
    let temporary = store_root.join(temporary);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| file.write_all(PRELOAD_LIBRARY))
        .and_then(|()| std::fs::rename(&temporary, &library));
    written.context(|| format!("could not write the agent library {}", library.display()))?;
    Ok(library)
}
