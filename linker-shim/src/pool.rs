//! The store's object pool: every object file a revision is made of, stored once however many
//! revisions share it, under a name that changes exactly when its contents do.
//!
//! An edit rewrites a few codegen units; the other objects on the link line are the same files
//! as last time (rustc's incremental cache hard-links each reused object into the output
//! directory, and never rewrites one in place). So an object file is *linked* into the pool
//! under its file identity — inode, modification time, length — which costs a `stat` and a
//! link, not a copy: capture cost and disk use follow the change. While the pool holds a link
//! the inode can't be reused, so the name keeps meaning these contents. Where a hard link is
//! impossible (another filesystem) the bytes are copied under a hash of their contents, as
//! objects taken out of an rlib archive always are.

use crate::error::{Context, Result};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Directory of the pool under the store root (named when it held library objects only).
pub(crate) const POOL_DIR: &str = "library-objects";

/// A pooled object no revision refers to is deleted only when it is older than this: a writer
/// may have just pooled it for a revision it has not committed yet (pooling refreshes its
/// status-change time).
const POOL_GRACE: Duration = Duration::from_secs(600);

/// The pool of a store.
#[derive(Debug, Clone)]
pub(crate) struct ObjectPool {
    dir: PathBuf,
}

impl ObjectPool {
    /// The pool of the store rooted at `store_root`.
    pub(crate) fn of_store(store_root: &Path) -> ObjectPool {
        ObjectPool {
            dir: store_root.join(POOL_DIR),
        }
    }

    /// The pool of the store rooted at `store_root`, made if it isn't there: ready for
    /// [`add_file`](Self::add_file) and [`add_bytes`](Self::add_bytes).
    pub(crate) fn open(store_root: &Path) -> Result<ObjectPool> {
        let pool = ObjectPool::of_store(store_root);
        fs::create_dir_all(&pool.dir)
            .context(|| format!("could not create {}", pool.dir.display()))?;
        Ok(pool)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Pools the object file at `original`; returns its name in the pool.
    pub(crate) fn add_file(&self, original: &Path) -> Result<String> {
        let metadata = fs::metadata(original)
            .context(|| format!("could not read the object {}", original.display()))?;
        // Not the file name: rustc gives each compiler session's objects a new random suffix.
        let name = format!(
            "i{:x}-{:x}.{:09}-{}.o",
            metadata.ino(),
            metadata.mtime(),
            metadata.mtime_nsec(),
            metadata.len()
        );
        let temp = self.temp_path();
        if fs::hard_link(original, &temp).is_ok() {
            // A rename onto a link of the same inode does nothing and leaves `temp`; the link
            // made just now refreshed the inode's change time either way (see POOL_GRACE).
            let renamed = fs::rename(&temp, self.dir.join(&name));
            let _ = fs::remove_file(&temp);
            renamed.context(|| format!("could not add {name} to {}", self.dir.display()))?;
            return Ok(name);
        }
        let bytes = fs::read(original)
            .context(|| format!("could not read the object {}", original.display()))?;
        self.add_bytes(&bytes)
    }

    /// Pools `bytes` (an object taken out of an archive, or copied); returns its name in the
    /// pool: `<length>-<hash>.o`, equal for equal contents. Not the member's name: rustc gives
    /// each compiler session's objects a new random suffix.
    pub(crate) fn add_bytes(&self, bytes: &[u8]) -> Result<String> {
        let mut hasher = DefaultHasher::new();
        bytes.hash(&mut hasher);
        let name = format!("{}-{:016x}.o", bytes.len(), hasher.finish());
        let path = self.dir.join(&name);
        if let Ok(file) = fs::File::options().append(true).open(&path) {
            let _ = file.set_modified(SystemTime::now());
            return Ok(name);
        }
        let temp = self.temp_path();
        fs::write(&temp, bytes).context(|| format!("could not write {}", temp.display()))?;
        fs::rename(&temp, &path)
            .context(|| format!("could not move {} to {}", temp.display(), path.display()))?;
        Ok(name)
    }

    /// Deletes pooled objects that are not `referenced` and have not been pooled for a while.
    pub(crate) fn prune(&self, referenced: &BTreeSet<String>) -> Result<()> {
        let names = match fs::read_dir(&self.dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            entries => entries.context(|| format!("could not list {}", self.dir.display()))?,
        };
        let stale_before = SystemTime::now() - POOL_GRACE;
        let stale_before = stale_before
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() as i64);
        for entry in names.filter_map(|entry| entry.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if referenced.contains(&name) {
                continue;
            }
            let stale = entry
                .metadata()
                .is_ok_and(|metadata| metadata.mtime().max(metadata.ctime()) < stale_before);
            if stale {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// A name no other writer uses: this process, and a counter within it.
    fn temp_path(&self) -> PathBuf {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        self.dir.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_file_is_pooled_once_under_the_same_name_and_a_rewritten_one_anew() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ObjectPool::open(&dir.path().join("store")).unwrap();
        let object = dir.path().join("app.cgu.rcgu.o");
        fs::write(&object, b"first").unwrap();
        let first = pool.add_file(&object).unwrap();
        assert_eq!(
            pool.add_file(&object).unwrap(),
            first,
            "same file, same name"
        );
        // The next compiler session hard-links it into its output under another name.
        let renamed = dir.path().join("app.cgu.other-suffix.rcgu.o");
        fs::hard_link(&object, &renamed).unwrap();
        assert_eq!(pool.add_file(&renamed).unwrap(), first, "same inode");
        assert_eq!(
            fs::metadata(pool.dir().join(&first)).unwrap().ino(),
            fs::metadata(&object).unwrap().ino(),
            "linked, not copied"
        );
        // rustc writes a recompiled unit as a new file.
        fs::remove_file(&object).unwrap();
        fs::write(&object, b"second").unwrap();
        let second = pool.add_file(&object).unwrap();
        assert_ne!(second, first);
        assert_eq!(fs::read(pool.dir().join(&first)).unwrap(), b"first");
        assert_eq!(fs::read(pool.dir().join(&second)).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(pool.dir()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file is left");
    }

    #[test]
    fn equal_bytes_share_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ObjectPool::open(dir.path()).unwrap();
        let one = pool.add_bytes(b"code").unwrap();
        assert_eq!(pool.add_bytes(b"code").unwrap(), one);
        assert_ne!(pool.add_bytes(b"other").unwrap(), one);
    }

    #[test]
    fn pruning_keeps_what_is_referenced_or_recent() {
        let dir = tempfile::tempdir().unwrap();
        let pool = ObjectPool::open(dir.path()).unwrap();
        let kept = pool.add_bytes(b"kept").unwrap();
        let recent = pool.add_bytes(b"recent").unwrap();
        pool.prune(&BTreeSet::from([kept.clone()])).unwrap();
        assert!(pool.dir().join(&kept).exists());
        assert!(pool.dir().join(&recent).exists(), "within the grace period");
    }
}
