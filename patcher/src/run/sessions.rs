//! A running `hotpatch run` (or `attach`) announces itself in its store, so that `hotpatch
//! restart|undo|quit|log`, typed in another terminal of the same project, find it:
//! `<store>/sessions/<pid>/` (0700) holds `session.json` (its target and control socket) and
//! `log` (its human lines). The directory is removed when the session ends, and swept by the
//! next session once that pid is gone ([`crate::leftovers`]): a killed hotpatch can't clean up.

use super::control;
use super::input::Request;
use crate::capture::workspace::Workspace;
use crate::commands::args::TargetSelection;
use crate::leftovers::{has_ended, remove_dirs_of_ended_processes};
use linker_shim::{Context, Error, Result, Store, TargetKey};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store's directory of session directories.
const SESSIONS: &str = "sessions";
const RECORD: &str = "session.json";
const LOG: &str = "log";
/// How often `hotpatch log --follow` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// What a session says about itself in `session.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// hotpatch's pid.
    pub pid: u32,
    pub target: TargetKey,
    /// Its control socket ([`control`]).
    pub control: PathBuf,
}

/// This process's session directory, removed when dropped.
pub(super) struct SessionEntry {
    dir: PathBuf,
}

impl SessionEntry {
    /// Announces this session of `target` in `store`; returns its entry and its log, open for
    /// appending.
    pub(super) fn create(
        store: &Store,
        target: &TargetKey,
        control: &Path,
    ) -> Result<(SessionEntry, File)> {
        let root = store.root().join(SESSIONS);
        remove_dirs_of_ended_processes(&root, "");
        std::fs::create_dir_all(&root)
            .context(|| format!("could not create {}", root.display()))?;
        let pid = std::process::id();
        let dir = root.join(pid.to_string());
        // Left by an earlier process with this pid, never swept: this pid is alive again.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .context(|| format!("could not create {}", dir.display()))?;
        let entry = SessionEntry { dir };
        let log_path = entry.dir.join(LOG);
        let log = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)
            .context(|| format!("could not create {}", log_path.display()))?;
        let record = SessionRecord {
            pid,
            target: target.clone(),
            control: control.to_path_buf(),
        };
        // Written aside, then renamed: a reader never sees half of it.
        let aside = entry.dir.join(format!(".{RECORD}"));
        let json = serde_json::to_vec(&record).expect("a record serialises");
        std::fs::write(&aside, json)
            .and_then(|()| std::fs::rename(&aside, entry.dir.join(RECORD)))
            .context(|| format!("could not write {}", entry.dir.join(RECORD).display()))?;
        Ok((entry, log))
    }
}

impl Drop for SessionEntry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A live session found in a store.
pub(crate) struct FoundSession {
    pub record: SessionRecord,
    dir: PathBuf,
}

impl FoundSession {
    /// The session `selection` designates: the only one running in its store, or the one of
    /// the target the flags (or the current directory) select when several run.
    pub(crate) fn find(selection: &TargetSelection) -> Result<FoundSession> {
        let workspace = Workspace::load(selection.manifest_path.as_deref())?;
        let store = workspace.store(selection);
        let mut sessions = live_sessions(&store);
        let named =
            selection.package.is_some() || selection.bin.is_some() || selection.example.is_some();
        if named || selection.release || sessions.len() > 1 {
            match workspace.resolve(selection) {
                Ok(target) => sessions.retain(|session| {
                    let wanted = &session.record.target;
                    (wanted.package == target.package
                        && wanted.kind == target.kind
                        && wanted.name == target.name)
                        && (!selection.release || wanted.profile == target.profile)
                }),
                Err(error) if named => return Err(error),
                Err(_) => {}
            }
        }
        match sessions.len() {
            1 => Ok(sessions.remove(0)),
            0 => Err(Error::new(format!(
                "no `hotpatch run` of this selection runs (sessions announce themselves in {})",
                store.root().join(SESSIONS).display()
            ))),
            _ => {
                let list: Vec<String> = sessions
                    .iter()
                    .map(|s| format!("{} (hotpatch pid {})", s.record.target, s.record.pid))
                    .collect();
                Err(Error::new(format!(
                    "several `hotpatch run`s: {}; choose one with -p, --bin, --example or --release",
                    list.join(", ")
                )))
            }
        }
    }

    /// Has the session do `request`; returns once it has taken it.
    pub(crate) fn send(&self, request: Request) -> Result<()> {
        control::send(&self.record.control, request)
    }

    /// Copies the session's log to stdout; with `follow`, then its new lines as they come,
    /// until the session ends.
    pub(crate) fn show_log(&self, follow: bool) -> Result<()> {
        let path = self.dir.join(LOG);
        // Open once: the file stays readable after the session removes its directory.
        let mut log = File::open(&path).context(|| format!("could not open {}", path.display()))?;
        let mut stdout = std::io::stdout();
        loop {
            let ended = has_ended(&self.record.pid.to_string());
            let mut text = Vec::new();
            log.read_to_end(&mut text)
                .context(|| format!("could not read {}", path.display()))?;
            stdout
                .write_all(&text)
                .and_then(|()| stdout.flush())
                .context(|| "could not write the log".into())?;
            if !follow || ended {
                return Ok(());
            }
            std::thread::sleep(FOLLOW_POLL);
        }
    }
}

/// The sessions of `store` whose hotpatch still runs, by pid.
fn live_sessions(store: &Store) -> Vec<FoundSession> {
    let Ok(entries) = std::fs::read_dir(store.root().join(SESSIONS)) else {
        return Vec::new();
    };
    let mut sessions: Vec<FoundSession> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = entry.path();
            let record: SessionRecord =
                serde_json::from_slice(&std::fs::read(dir.join(RECORD)).ok()?).ok()?;
            (!has_ended(&record.pid.to_string())).then_some(FoundSession { record, dir })
        })
        .collect();
    sessions.sort_by_key(|session| session.record.pid);
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;
    use linker_shim::TargetKind;

    fn target(name: &str) -> TargetKey {
        TargetKey {
            package: name.into(),
            kind: TargetKind::Bin,
            name: name.into(),
            profile: "dev".into(),
        }
    }

    #[test]
    fn a_session_is_found_while_it_runs_and_gone_after() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path());
        let (entry, mut log) =
            SessionEntry::create(&store, &target("app"), Path::new("/x/control.sock")).unwrap();
        writeln!(log, "Patched app").unwrap();
        let found = live_sessions(&store);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].record.pid, std::process::id());
        assert_eq!(found[0].record.target, target("app"));
        assert_eq!(
            std::fs::read_to_string(found[0].dir.join(LOG)).unwrap(),
            "Patched app\n"
        );
        drop(entry);
        assert!(live_sessions(&store).is_empty());
    }

    #[test]
    fn an_ended_session_is_ignored_and_swept() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::open(root.path());
        // A pid above the kernel's maximum (4194304) never runs.
        let dead = store.root().join(SESSIONS).join("4194305");
        std::fs::create_dir_all(&dead).unwrap();
        let record = SessionRecord {
            pid: 4194305,
            target: target("old"),
            control: "/x/control.sock".into(),
        };
        std::fs::write(dead.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
        assert!(live_sessions(&store).is_empty());
        let _entry = SessionEntry::create(&store, &target("app"), Path::new("/x")).unwrap();
        assert!(!dead.exists());
    }
}
