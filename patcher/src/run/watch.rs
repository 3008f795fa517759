//! Watching what rustc reads: the files each local crate's dep-info lists (its modules
//! wherever they live, `include_str!` files, path dependencies outside the workspace) and
//! each local package's `Cargo.toml`, and telling which crate a saved file belongs to.

use crate::pipeline::recompile::crates::{CrateIndex, LocalCrates};
use linker_shim::{Context, Result};
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Saves closer together than this become one patch (editors write several times per save).
const DEBOUNCE: Duration = Duration::from_millis(40);

/// Keeps the watch alive; dropping it stops watching.
pub struct SourceWatcher {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches the `directories` (not their subdirectories) and sends each debounced batch of
/// saved files whose contents changed. Events alone are not trusted: the compiler reading a
/// file, or an editor saving it unchanged, also produces them. `known` are the files whose
/// current contents count as unchanged.
pub fn watch(
    directories: &[PathBuf],
    known: impl IntoIterator<Item = PathBuf>,
    changed: Sender<Vec<PathBuf>>,
) -> Result<SourceWatcher> {
    let mut contents = ContentTracker::default();
    for file in known {
        contents.changed(&file);
    }
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        let Ok(events) = events else { return };
        let files: BTreeSet<PathBuf> = events
            .into_iter()
            .map(|e| e.path)
            .filter(|p| is_saved_file(p) && contents.changed(p))
            .collect();
        if !files.is_empty() {
            let _ = changed.send(files.into_iter().collect());
        }
    })
    .context(|| "could not start watching files".into())?;
    for directory in directories {
        debouncer
            .watcher()
            .watch(directory, RecursiveMode::NonRecursive)
            .context(|| format!("could not watch {}", directory.display()))?;
    }
    Ok(SourceWatcher {
        _debouncer: debouncer,
    })
}

/// The last seen contents of each file (a hash), to tell real edits from noise.
#[derive(Default)]
struct ContentTracker {
    hashes: HashMap<PathBuf, u64>,
}

impl ContentTracker {
    /// True when `path`'s contents differ from the last time it was seen (or it vanished).
    fn changed(&mut self, path: &Path) -> bool {
        if path.is_dir() {
            return false;
        }
        let hash = std::fs::read(path).ok().map(|bytes| {
            let mut hasher = DefaultHasher::new();
            bytes.hash(&mut hasher);
            hasher.finish()
        });
        match hash {
            Some(hash) => self.hashes.insert(path.to_path_buf(), hash) != Some(hash),
            None => self.hashes.remove(path).is_some(),
        }
    }
}

/// A file a person saved: not hidden, not an editor's temporary or backup file.
pub fn is_saved_file(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !name.is_empty()
        && !name.starts_with('.')
        && !name.starts_with('#')
        && !name.ends_with('~')
        && !name.ends_with(".swp")
}

/// What a saved file is to the running program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedFile {
    /// Read by rustc for these local crates.
    Source(BTreeSet<CrateIndex>),
    /// The `Cargo.toml` of a local package.
    Manifest,
    /// Nothing rustc reads for the program.
    Unrelated,
}

/// The files rustc reads for each local crate, from the dep-info it wrote, and the local
/// packages' manifests.
#[derive(Debug, Clone, Default)]
pub struct CrateSources {
    files: BTreeMap<PathBuf, BTreeSet<CrateIndex>>,
    manifests: BTreeSet<PathBuf>,
}

impl CrateSources {
    /// Reads the dep-info each crate of `crates` has in its base output directory.
    pub fn of(crates: &LocalCrates) -> Result<CrateSources> {
        let mut sources = CrateSources::default();
        for (index, krate) in crates.iter() {
            let invocation = &krate.invocation;
            sources.read_dep_info(
                index,
                &invocation.dep_info_in(&krate.base_out_dir()),
                &invocation.cwd,
            )?;
            if let Some(dir) = invocation.env.get("CARGO_MANIFEST_DIR") {
                sources.manifests.insert(Path::new(dir).join("Cargo.toml"));
            }
        }
        Ok(sources)
    }

    /// Adds the files of crate `index` that `dep_info` lists (rustc ran in `cwd`).
    pub fn read_dep_info(&mut self, index: CrateIndex, dep_info: &Path, cwd: &Path) -> Result<()> {
        let text = std::fs::read_to_string(dep_info)
            .context(|| format!("could not read the dep-info {}", dep_info.display()))?;
        for file in dep_info_files(&text, cwd) {
            self.files.entry(file).or_default().insert(index);
        }
        Ok(())
    }

    pub fn classify(&self, file: &Path) -> SavedFile {
        match self.files.get(file) {
            Some(crates) => SavedFile::Source(crates.clone()),
            None if self.manifests.contains(file) => SavedFile::Manifest,
            None => SavedFile::Unrelated,
        }
    }

    /// Every file watched.
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.files.keys().chain(&self.manifests)
    }

    /// The directories holding them, each watched on its own (not recursively: `target/`
    /// and other crates' trees stay out).
    pub fn directories(&self) -> Vec<PathBuf> {
        let directories: BTreeSet<PathBuf> = self
            .files()
            .filter_map(|file| file.parent().map(Path::to_owned))
            .filter(|dir| dir.is_dir())
            .collect();
        directories.into_iter().collect()
    }
}

/// Parses make-style dep-info: the first rule's prerequisites are what rustc read.
fn dep_info_files(text: &str, cwd: &Path) -> Vec<PathBuf> {
    let first_rule = text
        .lines()
        .find(|line| line.contains(": "))
        .unwrap_or_default();
    let (_, prerequisites) = first_rule.split_once(": ").unwrap_or_default();
    prerequisites
        .replace("\\ ", "\u{0}")
        .split_whitespace()
        .map(|p| cwd.join(p.replace('\u{0}', " ")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_editor_noise() {
        assert!(is_saved_file(Path::new("/w/app/src/main.rs")));
        assert!(is_saved_file(Path::new("/w/app/src/greeting.txt")));
        assert!(is_saved_file(Path::new("/w/app/Cargo.toml")));
        assert!(!is_saved_file(Path::new("/w/app/src/.main.rs.swp")));
        assert!(!is_saved_file(Path::new("/w/app/src/.#main.rs")));
        assert!(!is_saved_file(Path::new("/w/app/src/#main.rs#")));
        assert!(!is_saved_file(Path::new("/w/app/src/main.rs~")));
        assert!(!is_saved_file(Path::new("/w/app/src/.main.rs.saving")));
    }

    #[test]
    fn dep_info_lists_the_files_rustc_read() {
        let text = "/t/deps/app-1.d: src/main.rs src/physics.rs src/my\\ file.rs /elsewhere/greeting.txt\n\nsrc/main.rs:\nsrc/physics.rs:\n";
        let files = dep_info_files(text, Path::new("/w/app"));
        assert_eq!(
            files,
            [
                PathBuf::from("/w/app/src/main.rs"),
                PathBuf::from("/w/app/src/physics.rs"),
                PathBuf::from("/w/app/src/my file.rs"),
                PathBuf::from("/elsewhere/greeting.txt"),
            ]
        );
    }
}
