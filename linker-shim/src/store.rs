//! The revision store under `<target-dir>/hotpatch/`: one directory per link, written
//! atomically, pruned automatically, with pins that protect a running session's base.
//!
//! ```text
//! <target-dir>/hotpatch/
//!   cargo/                      cargo's target dir for `hotpatch build` (never the user's)
//!   revisions/<id>/revision.json
//!   revisions/.tmp-<id>/        a link in progress (renamed to <id> when complete)
//!   library-objects/            the object pool: every revision's objects, each stored once
//!                               (see `pool`)
//!   rustc/<package>--<crate>--<bin|lib>--<profile>.json   latest rustc run per workspace crate
//!   pins/<id>@<pid>             revision <id> is the base of the session in process <pid>
//! ```

use crate::error::{Context, Error, Result};
use crate::invocation::RustcInvocation;
use crate::pool::ObjectPool;
use crate::revision::{
    CapturedLibrary, CapturedObject, Revision, RevisionId, TargetKey, RECORD_FILE, STORE_FORMAT,
};
use object::read::archive::ArchiveFile;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// How many revisions of each target survive pruning, on top of the pinned ones.
pub const KEEP_PER_TARGET: usize = 4;

const TEMP_PREFIX: &str = ".tmp-";

/// Handle on a store directory. Cheap to create; touches the disk only when used.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The store of a cargo target directory (`<target-dir>/hotpatch`).
    pub fn for_target_dir(target_dir: &Path) -> Self {
        Store::open(target_dir.join("hotpatch"))
    }

    /// A store rooted exactly at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Self {
        Store { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Cargo's target directory for builds through hotpatch, so that their different flags
    /// never invalidate the user's own `cargo build`.
    pub fn cargo_target_dir(&self) -> PathBuf {
        self.root.join("cargo")
    }

    fn revisions_dir(&self) -> PathBuf {
        self.root.join("revisions")
    }

    fn rustc_dir(&self) -> PathBuf {
        self.root.join("rustc")
    }

    fn pins_dir(&self) -> PathBuf {
        self.root.join("pins")
    }

    /// Every complete revision, oldest first. A revision another process prunes while this
    /// one lists the store is skipped, not an error: sessions share a target dir. So is one
    /// an earlier version stored differently (a build it recorded is made again).
    pub fn list(&self) -> Result<Vec<Revision>> {
        let mut revisions = Vec::new();
        for id in self.revision_ids()? {
            let record = self.revisions_dir().join(id.as_str()).join(RECORD_FILE);
            match self.load(&id) {
                Ok(revision) if revision.format == STORE_FORMAT => revisions.push(revision),
                Ok(_) => continue,
                Err(_) if !record.exists() => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(revisions)
    }

    /// The revisions of one target, oldest first.
    pub fn list_for(&self, target: &TargetKey) -> Result<Vec<Revision>> {
        Ok(self
            .list()?
            .into_iter()
            .filter(|revision| &revision.target == target)
            .collect())
    }

    /// The most recent revision of `target`, if any.
    pub fn latest(&self, target: &TargetKey) -> Result<Option<Revision>> {
        Ok(self.list_for(target)?.pop())
    }

    /// Reads one revision.
    pub fn load(&self, id: &RevisionId) -> Result<Revision> {
        let dir = self.revisions_dir().join(id.as_str());
        let record = dir.join(RECORD_FILE);
        let text = fs::read_to_string(&record).map_err(|e| {
            Error::new(format!(
                "revision {id} is not in the store {} ({e}); `hotpatch revisions` lists what it holds",
                self.root.display()
            ))
        })?;
        let mut revision: Revision = serde_json::from_str(&text)
            .context(|| format!("could not parse {}", record.display()))?;
        revision.dir = dir;
        Ok(revision)
    }

    fn revision_ids(&self) -> Result<Vec<RevisionId>> {
        let mut ids: Vec<RevisionId> = read_dir_names(&self.revisions_dir())?
            .iter()
            .filter_map(|name| RevisionId::parse(name))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Starts writing revision `id` in a temporary directory; nothing is visible in the
    /// store until [`RevisionWriter::commit`].
    pub fn begin(&self, id: RevisionId) -> Result<RevisionWriter> {
        let temp_dir = self.revisions_dir().join(format!("{TEMP_PREFIX}{id}"));
        fs::create_dir_all(&temp_dir).context(|| {
            format!(
                "could not create the revision directory {}",
                temp_dir.display()
            )
        })?;
        Ok(RevisionWriter {
            store: self.clone(),
            pool: ObjectPool::open(&self.root)?,
            id,
            temp_dir,
            objects: Vec::new(),
            libraries: Vec::new(),
            committed: false,
        })
    }

    /// Protects revision `id` from pruning for as long as process `holder` lives (a session
    /// pins its base revision for as long as the program runs, so a later `hotpatch attach`
    /// still finds it; pins of processes that are gone lapse by themselves).
    pub fn pin(&self, id: &RevisionId, holder: u32) -> Result<()> {
        self.load(id)?;
        let path = self.pin_path(id, holder);
        fs::create_dir_all(self.pins_dir())
            .context(|| format!("could not create {}", self.pins_dir().display()))?;
        fs::write(&path, b"").context(|| format!("could not write the pin {}", path.display()))
    }

    /// Removes `holder`'s pin of `id` (no error if there was none).
    pub fn unpin(&self, id: &RevisionId, holder: u32) -> Result<()> {
        let path = self.pin_path(id, holder);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(format!(
                "could not remove the pin {}: {e}",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    fn pin_path(&self, id: &RevisionId, holder: u32) -> PathBuf {
        self.pins_dir().join(format!("{id}@{holder}"))
    }

    /// Revisions pinned by a live process. Pins of processes that are gone are deleted.
    pub fn pinned(&self) -> Result<BTreeSet<RevisionId>> {
        let mut pinned = BTreeSet::new();
        for name in read_dir_names(&self.pins_dir())? {
            let Some((id, pid)) = name.rsplit_once('@') else {
                continue;
            };
            if process_is_alive(pid) {
                pinned.extend(RevisionId::parse(id));
            } else {
                let _ = fs::remove_file(self.pins_dir().join(&name));
            }
        }
        Ok(pinned)
    }

    /// Deletes old revisions of `target` (keeping the newest [`KEEP_PER_TARGET`] and every
    /// pinned one), temporary directories left by links that were killed, and pooled objects
    /// no revision refers to.
    pub fn prune(&self, target: &TargetKey) -> Result<()> {
        self.prune_revisions(target)?;
        self.prune_pool()
    }

    /// [`Store::prune`] but the pool: what a patch build's link does. Sifting the pool means
    /// reading every revision and a `stat` per pooled object, which a patch doesn't wait for;
    /// the next build cargo links sifts it.
    fn prune_revisions(&self, target: &TargetKey) -> Result<()> {
        let pinned = self.pinned()?;
        let revisions = self.list_for(target)?;
        let surplus = revisions.len().saturating_sub(KEEP_PER_TARGET);
        for revision in revisions
            .iter()
            .take(surplus)
            .filter(|revision| !pinned.contains(&revision.id))
        {
            remove_dir(&revision.dir)?;
        }
        for name in read_dir_names(&self.revisions_dir())? {
            let abandoned = name
                .strip_prefix(TEMP_PREFIX)
                .and_then(|id| id.rsplit_once('-'))
                .is_some_and(|(_, pid)| !process_is_alive(pid));
            if abandoned {
                remove_dir(&self.revisions_dir().join(name))?;
            }
        }
        Ok(())
    }

    /// Deletes pooled objects no revision refers to (after their grace period).
    fn prune_pool(&self) -> Result<()> {
        let referenced: BTreeSet<String> = self
            .list()?
            .into_iter()
            .flat_map(|revision| {
                let libraries = revision.libraries.into_iter().flat_map(|l| l.objects);
                revision
                    .objects
                    .into_iter()
                    .map(|o| o.stored)
                    .chain(libraries)
            })
            .collect();
        ObjectPool::of_store(&self.root).prune(&referenced)
    }

    /// Keeps the latest compiler invocation of a workspace crate; returns the file it is in.
    pub fn record_invocation(&self, invocation: &RustcInvocation) -> Result<PathBuf> {
        let path = self.rustc_dir().join(format!("{}.json", invocation.key()));
        write_json_atomically(&path, invocation)?;
        Ok(path)
    }

    /// The latest compiler invocation of every workspace crate built through hotpatch.
    pub fn invocations(&self) -> Result<Vec<RustcInvocation>> {
        let mut invocations = Vec::new();
        for name in read_dir_names(&self.rustc_dir())? {
            if name.ends_with(".json") {
                let path = self.rustc_dir().join(name);
                let text = fs::read_to_string(&path)
                    .context(|| format!("could not read {}", path.display()))?;
                invocations.push(
                    serde_json::from_str(&text)
                        .context(|| format!("could not parse {}", path.display()))?,
                );
            }
        }
        Ok(invocations)
    }
}

/// A revision being written. Dropping it without [`commit`](Self::commit) deletes it.
#[derive(Debug)]
pub struct RevisionWriter {
    store: Store,
    /// Where its objects go.
    pool: ObjectPool,
    id: RevisionId,
    temp_dir: PathBuf,
    objects: Vec<CapturedObject>,
    libraries: Vec<CapturedLibrary>,
    committed: bool,
}

/// What the linker shim learned about one link, apart from the objects.
#[derive(Debug, Clone)]
pub struct RevisionRecord {
    pub target: TargetKey,
    pub capture_only: bool,
    pub link_line: crate::LinkLine,
    pub exe: Option<PathBuf>,
    pub build_id: Option<String>,
    pub rustc: Option<RustcInvocation>,
}

impl RevisionWriter {
    pub fn id(&self) -> &RevisionId {
        &self.id
    }

    /// Records one object file of the link line, in the store's object pool (linked, not
    /// copied, where the filesystem allows).
    pub fn capture_object(&mut self, original: &Path) -> Result<()> {
        let stored = self.pool.add_file(original)?;
        self.objects.push(CapturedObject {
            original: original.to_owned(),
            stored,
        });
        Ok(())
    }

    /// Records the objects of the local library `crate_name` from its `rlib`, each in the
    /// store's pool under a name derived from its content: bytes already pooled (an
    /// unchanged codegen unit, an rlib recorded before) are not written again.
    pub fn capture_library(&mut self, crate_name: &str, rlib: &Path) -> Result<()> {
        let data = fs::read(rlib).context(|| format!("could not read {}", rlib.display()))?;
        let archive = ArchiveFile::parse(&*data)
            .context(|| format!("{} is not an rlib archive", rlib.display()))?;
        let mut objects = Vec::new();
        for member in archive.members() {
            let member = member.context(|| format!("{}: malformed archive", rlib.display()))?;
            let member_name = String::from_utf8_lossy(member.name()).into_owned();
            if !member_name.ends_with(".o") {
                continue; // `lib.rmeta`: metadata, no code
            }
            let bytes = member
                .data(&*data)
                .context(|| format!("{}: could not read {member_name}", rlib.display()))?;
            objects.push(self.pool.add_bytes(bytes)?);
        }
        self.libraries.push(CapturedLibrary {
            crate_name: crate_name.to_owned(),
            rlib: rlib.to_owned(),
            objects,
        });
        Ok(())
    }

    /// Writes `revision.json` and makes the revision visible in one rename, then prunes
    /// older revisions of the same target.
    pub fn commit(mut self, record: RevisionRecord) -> Result<Revision> {
        let final_dir = self.store.revisions_dir().join(self.id.as_str());
        let mut revision = Revision {
            format: STORE_FORMAT,
            id: self.id.clone(),
            created_unix_ms: crate::now_unix_ms(),
            target: record.target,
            capture_only: record.capture_only,
            link_line: record.link_line,
            objects: std::mem::take(&mut self.objects),
            libraries: std::mem::take(&mut self.libraries),
            exe: record.exe,
            build_id: record.build_id,
            rustc: record.rustc,
            dir: final_dir.clone(),
        };
        write_json_atomically(&self.temp_dir.join(RECORD_FILE), &revision)?;
        fs::rename(&self.temp_dir, &final_dir).context(|| {
            format!(
                "could not move {} to {}",
                self.temp_dir.display(),
                final_dir.display()
            )
        })?;
        self.committed = true;
        if revision.capture_only {
            self.store.prune_revisions(&revision.target)?;
        } else {
            self.store.prune(&revision.target)?;
        }
        revision.dir = final_dir;
        Ok(revision)
    }
}

impl Drop for RevisionWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.temp_dir);
        }
    }
}

fn write_json_atomically(path: &Path, value: &impl Serialize) -> Result<()> {
    let dir = path.parent().expect("store files live in a directory");
    fs::create_dir_all(dir).context(|| format!("could not create {}", dir.display()))?;
    let temp = dir.join(format!(
        ".{}.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    let json = serde_json::to_vec_pretty(value).expect("store records serialise");
    fs::write(&temp, json).context(|| format!("could not write {}", temp.display()))?;
    fs::rename(&temp, path)
        .context(|| format!("could not move {} to {}", temp.display(), path.display()))
}

/// File names in `dir`; an absent directory has none.
fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    match fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::new(format!("could not list {}: {e}", dir.display()))),
        Ok(entries) => Ok(entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()),
    }
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::new(format!(
            "could not delete {}: {e}",
            dir.display()
        ))),
        _ => Ok(()),
    }
}

fn process_is_alive(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::revision::TargetKind;
    use crate::{CargoLinkEnv, LinkLine};

    fn target(name: &str) -> TargetKey {
        TargetKey {
            package: name.into(),
            kind: TargetKind::Bin,
            name: name.into(),
            profile: "dev".into(),
        }
    }

    fn record(target: TargetKey) -> RevisionRecord {
        RevisionRecord {
            target,
            capture_only: false,
            link_line: LinkLine {
                linker: "cc".into(),
                args: vec![],
                cwd: "/".into(),
                cargo: CargoLinkEnv::default(),
            },
            exe: None,
            build_id: Some("abcd".into()),
            rustc: None,
        }
    }

    fn commit(store: &Store, millis: u64, target: TargetKey) -> Revision {
        let id = RevisionId::parse(&format!("{millis:013}-{}", std::process::id())).unwrap();
        store.begin(id).unwrap().commit(record(target)).unwrap()
    }

    #[test]
    fn committed_revision_loads_with_its_objects() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_target_dir(dir.path());
        let object = dir.path().join("a.rcgu.o");
        fs::write(&object, b"bytes").unwrap();
        let mut writer = store.begin(RevisionId::new_now()).unwrap();
        writer.capture_object(&object).unwrap();
        let revision = writer.commit(record(target("app"))).unwrap();
        let loaded = store.load(&revision.id).unwrap();
        assert_eq!(loaded, revision);
        assert_eq!(fs::read(&loaded.object_paths()[0]).unwrap(), b"bytes");
        assert_eq!(
            store.latest(&target("app")).unwrap().unwrap().id,
            revision.id
        );
        assert!(store.latest(&target("other")).unwrap().is_none());
    }

    #[test]
    fn abandoned_writer_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_target_dir(dir.path());
        drop(store.begin(RevisionId::new_now()).unwrap());
        assert!(store.list().unwrap().is_empty());
        assert!(read_dir_names(&store.revisions_dir()).unwrap().is_empty());
    }

    #[test]
    fn pruning_keeps_the_newest_and_the_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_target_dir(dir.path());
        let first = commit(&store, 1, target("app"));
        store.pin(&first.id, std::process::id()).unwrap();
        let other = commit(&store, 2, target("other"));
        let app: Vec<_> = (3..10)
            .map(|millis| commit(&store, millis, target("app")))
            .collect();
        let kept: Vec<_> = store
            .list_for(&target("app"))
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let mut expected = vec![first.id.clone()];
        expected.extend(
            app[app.len() - KEEP_PER_TARGET..]
                .iter()
                .map(|r| r.id.clone()),
        );
        assert_eq!(kept, expected);
        assert!(
            store.load(&other.id).is_ok(),
            "other targets are pruned separately"
        );

        store.unpin(&first.id, std::process::id()).unwrap();
        store.prune(&target("app")).unwrap();
        assert!(store.load(&first.id).is_err());
    }

    #[test]
    fn pins_of_dead_processes_lapse() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_target_dir(dir.path());
        let revision = commit(&store, 1, target("app"));
        fs::create_dir_all(store.pins_dir()).unwrap();
        fs::write(
            store
                .pins_dir()
                .join(format!("{}@{}", revision.id, u32::MAX)),
            b"",
        )
        .unwrap();
        assert!(store.pinned().unwrap().is_empty());
        store.pin(&revision.id, std::process::id()).unwrap();
        assert_eq!(
            store.pinned().unwrap().into_iter().collect::<Vec<_>>(),
            [revision.id]
        );
    }

    #[test]
    fn loading_a_missing_revision_says_where_it_looked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::for_target_dir(dir.path());
        let err = store.load(&RevisionId::parse("1-1").unwrap()).unwrap_err();
        assert!(
            err.message().contains("revision 1-1 is not in the store"),
            "{err}"
        );
    }
}
