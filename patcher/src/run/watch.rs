//! Watching the workspace's sources, and telling which saved files belong to the patched crate.

use linker_shim::{Context, Result, RustcInvocation};
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{new_debouncer, DebounceEventResult, Debouncer};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// Saves closer together than this become one patch (editors write several times per save).
const DEBOUNCE: Duration = Duration::from_millis(40);

/// Keeps the watch alive; dropping it stops watching.
pub struct SourceWatcher {
    _debouncer: Debouncer<notify_debouncer_mini::notify::RecommendedWatcher>,
}

/// Watches `roots` recursively and sends each debounced batch of source files whose contents
/// changed. Events alone are not trusted: the compiler reading a file, or an editor saving
/// it unchanged, also produces them.
pub fn watch(roots: &[PathBuf], changed: Sender<Vec<PathBuf>>) -> Result<SourceWatcher> {
    let mut contents = ContentTracker::default();
    for root in roots {
        contents.remember_tree(root);
    }
    let watched = roots.to_vec();
    let mut debouncer = new_debouncer(DEBOUNCE, move |events: DebounceEventResult| {
        let Ok(events) = events else { return };
        let files: BTreeSet<PathBuf> = events
            .into_iter()
            .map(|e| e.path)
            .filter(|p| is_source_below(&watched, p) && contents.changed(p))
            .collect();
        if !files.is_empty() {
            let _ = changed.send(files.into_iter().collect());
        }
    })
    .context(|| "could not start watching files".into())?;
    for root in roots {
        debouncer
            .watcher()
            .watch(root, RecursiveMode::Recursive)
            .context(|| format!("could not watch {}", root.display()))?;
    }
    Ok(SourceWatcher {
        _debouncer: debouncer,
    })
}

/// The last seen contents of each source file (a hash), to tell real edits from noise.
#[derive(Default)]
struct ContentTracker {
    hashes: HashMap<PathBuf, u64>,
}

impl ContentTracker {
    fn remember_tree(&mut self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                self.remember_tree(&path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                self.changed(&path);
            }
        }
    }

    /// True when `path`'s contents differ from the last time it was seen (or it vanished).
    fn changed(&mut self, path: &Path) -> bool {
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

/// `is_source` for the part of `path` below the watched root that holds it: a project may
/// itself live under a directory called `target` or a hidden one.
fn is_source_below(roots: &[PathBuf], path: &Path) -> bool {
    roots
        .iter()
        .find_map(|root| path.strip_prefix(root).ok())
        .is_some_and(is_source)
}

/// A Rust source file worth reacting to: not under `target/`, not hidden, not an editor's
/// temporary or backup file.
pub fn is_source(path: &Path) -> bool {
    let hidden_or_target = path.components().any(|c| match c {
        Component::Normal(name) => {
            let name = name.to_string_lossy();
            name == "target" || (name.starts_with('.') && name.len() > 1)
        }
        _ => false,
    });
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    !hidden_or_target && name.ends_with(".rs") && !name.starts_with(".#") && !name.starts_with('#')
}

/// The source files of one crate, from the dep-info file rustc wrote when it compiled it.
#[derive(Debug, Clone, Default)]
pub struct CrateSources {
    files: BTreeSet<PathBuf>,
}

impl CrateSources {
    /// Reads `<out-dir>/<crate-name><extra-filename>.d` of `invocation`.
    pub fn of(invocation: &RustcInvocation) -> Result<CrateSources> {
        let out_dir = invocation.flag_value("--out-dir").unwrap_or(".");
        let extra = invocation
            .args
            .iter()
            .find_map(|a| a.strip_prefix("extra-filename="))
            .unwrap_or_default();
        let path = invocation
            .cwd
            .join(out_dir)
            .join(format!("{}{extra}.d", invocation.crate_name));
        let text = std::fs::read_to_string(&path)
            .context(|| format!("could not read the dep-info {}", path.display()))?;
        Ok(CrateSources::parse(&text, &invocation.cwd))
    }

    /// Parses make-style dep-info: the first rule's prerequisites are the crate's sources.
    fn parse(text: &str, cwd: &Path) -> CrateSources {
        let first_rule = text
            .lines()
            .find(|line| line.contains(": "))
            .unwrap_or_default();
        let (_, prerequisites) = first_rule.split_once(": ").unwrap_or_default();
        let files = prerequisites
            .replace("\\ ", "\u{0}")
            .split_whitespace()
            .map(|p| cwd.join(p.replace('\u{0}', " ")))
            .collect();
        CrateSources { files }
    }

    pub fn contains(&self, file: &Path) -> bool {
        self.files.contains(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_editor_noise_and_build_output() {
        assert!(is_source(Path::new("/w/app/src/main.rs")));
        assert!(!is_source(Path::new(
            "/w/app/target/debug/build/x/out/gen.rs"
        )));
        assert!(!is_source(Path::new("/w/app/src/.main.rs.swp")));
        assert!(!is_source(Path::new("/w/app/src/.#main.rs")));
        assert!(!is_source(Path::new("/w/app/src/main.rs~")));
        assert!(!is_source(Path::new("/w/app/.git/x.rs")));
        assert!(!is_source(Path::new("/w/app/Cargo.toml")));
    }

    #[test]
    fn only_the_part_below_the_watched_root_counts() {
        let roots = [PathBuf::from("/home/me/target/.work/app/src")];
        assert!(is_source_below(
            &roots,
            Path::new("/home/me/target/.work/app/src/main.rs")
        ));
        assert!(!is_source_below(
            &roots,
            Path::new("/home/me/target/.work/app/src/.hidden/x.rs")
        ));
        assert!(!is_source_below(&roots, Path::new("/elsewhere/main.rs")));
    }

    #[test]
    fn dep_info_lists_the_crate_sources() {
        let text = "/t/deps/app-1.d: src/main.rs src/physics.rs src/my\\ file.rs\n\nsrc/main.rs:\nsrc/physics.rs:\n";
        let sources = CrateSources::parse(text, Path::new("/w/app"));
        assert!(sources.contains(Path::new("/w/app/src/main.rs")));
        assert!(sources.contains(Path::new("/w/app/src/physics.rs")));
        assert!(sources.contains(Path::new("/w/app/src/my file.rs")));
        assert!(!sources.contains(Path::new("/w/app/src/lib.rs")));
    }
}
