//! One revision: everything one link of one binary was made of, kept after rustc deleted it.

use crate::invocation::RustcInvocation;
use crate::link_line::LinkLine;
use crate::pool::ObjectPool;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Identifies a revision: creation time in milliseconds, then the linking process id, so
/// ids sort by time and two links can never collide.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RevisionId(String);

impl RevisionId {
    /// A fresh id for a link happening now in this process.
    pub fn new_now() -> Self {
        RevisionId(format!(
            "{:013}-{}",
            crate::now_unix_ms(),
            std::process::id()
        ))
    }

    /// Accepts a string typed by a user or read from disk if it has the shape of an id.
    pub fn parse(text: &str) -> Option<Self> {
        let (time, pid) = text.split_once('-')?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        (digits(time) && digits(pid)).then(|| RevisionId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RevisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Binaries and examples are both executables, but cargo selects them with different flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    Bin,
    Example,
}

impl TargetKind {
    /// The cargo flag that selects a target of this kind (`--bin` / `--example`).
    pub fn cargo_flag(self) -> &'static str {
        match self {
            TargetKind::Bin => "--bin",
            TargetKind::Example => "--example",
        }
    }
}

/// Which executable a revision belongs to. Revisions of different targets never mix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetKey {
    pub package: String,
    pub kind: TargetKind,
    /// The binary's or example's name as cargo knows it (`CARGO_BIN_NAME`).
    pub name: String,
    /// Cargo profile name: `dev`, `release`, …
    pub profile: String,
}

impl TargetKey {
    /// The crate name rustc gets for this target (`-` becomes `_`).
    pub fn crate_name(&self) -> String {
        self.name.replace('-', "_")
    }
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TargetKind::Bin => "bin",
            TargetKind::Example => "example",
        };
        write!(
            f,
            "{} ({kind} {}, {})",
            self.package, self.name, self.profile
        )
    }
}

/// An object file of the link line, kept in the store's object pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedObject {
    /// Where rustc had put it (usually deleted by now).
    pub original: PathBuf,
    /// Its name in the pool: equal in two revisions exactly when the contents are the same
    /// (see the pool's naming).
    pub stored: String,
}

/// The objects of one local library crate, taken out of the rlib the link used. They live in
/// the store's object pool, named by content, so an rlib that two revisions share is stored
/// once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedLibrary {
    /// `--crate-name` of the library.
    pub crate_name: String,
    /// The rlib on the link line.
    pub rlib: PathBuf,
    /// File names in the pool, in archive order.
    pub objects: Vec<String>,
}

/// One recorded link. Loaded from `revision.json` in the revision's directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// How the revision is stored ([`STORE_FORMAT`] when written by this version); a
    /// revision of another format is not listed.
    #[serde(default)]
    pub format: u32,
    pub id: RevisionId,
    pub created_unix_ms: u64,
    pub target: TargetKey,
    /// True for patch builds: the objects were recorded and the final link skipped.
    pub capture_only: bool,
    pub link_line: LinkLine,
    pub objects: Vec<CapturedObject>,
    /// The local library crates linked in (workspace members and path dependencies) whose
    /// objects were recorded: every one for a base build, the recompiled ones for a patch.
    #[serde(default)]
    pub libraries: Vec<CapturedLibrary>,
    /// The executable the link wrote (for capture-only revisions: would have written).
    pub exe: Option<PathBuf>,
    /// Hex of the executable's GNU build-id; the running program reports the same string.
    pub build_id: Option<String>,
    /// How rustc was invoked for this crate, when it ran under `hotpatch build`.
    pub rustc: Option<RustcInvocation>,
    /// Directory of the revision in the store (not serialised; set when loaded).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// The format of the revisions this version writes: objects in the store's pool (format 0
/// copied them into each revision).
pub(crate) const STORE_FORMAT: u32 = 1;

impl Revision {
    /// Absolute paths of the pooled objects of the binary crate, in link-line order.
    pub fn object_paths(&self) -> Vec<PathBuf> {
        let pool = pool_dir(&self.dir);
        self.objects
            .iter()
            .map(|object| pool.join(&object.stored))
            .collect()
    }

    /// Absolute paths of the pooled objects of `library`.
    pub fn library_object_paths(&self, library: &CapturedLibrary) -> Vec<PathBuf> {
        let pool = pool_dir(&self.dir);
        library.objects.iter().map(|name| pool.join(name)).collect()
    }
}

/// The store's object pool, from a revision directory (`<root>/revisions/<id>`).
fn pool_dir(revision_dir: &Path) -> PathBuf {
    let root = revision_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or(revision_dir);
    ObjectPool::of_store(root).dir().to_owned()
}

pub(crate) const RECORD_FILE: &str = "revision.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_parse_back() {
        let id = RevisionId::new_now();
        assert_eq!(RevisionId::parse(id.as_str()), Some(id.clone()));
        assert!(
            RevisionId::parse("0000000000001-5").unwrap()
                < RevisionId::parse("0000000000002-1").unwrap()
        );
        assert_eq!(RevisionId::parse("latest"), None);
        assert_eq!(RevisionId::parse("12-"), None);
    }
}
