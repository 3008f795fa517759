//! Directories a session leaves behind: each is named after the process it belongs to
//! (`<prefix><pid>-…`), and is removed by whichever hotpatch starts next once that process is
//! gone — so a session killed with SIGKILL (no chance to clean up) costs nothing for long.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Removes the directories in `root` named `<prefix><pid>-…` whose process has ended and that
/// belong to this user.
pub(crate) fn remove_dirs_of_ended_processes(root: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.split('-').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let ours = entry
            .metadata()
            .is_ok_and(|metadata| metadata.is_dir() && metadata.uid() == user);
        if ours && has_ended(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// True when process `pid` is gone or a zombie (ended, not yet reaped: in a container whose
/// first process reaps nothing, an orphan stays one).
pub(crate) fn has_ended(pid: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")) else {
        return true;
    };
    // `pid (command) state …`: the command may hold spaces and parentheses.
    stat.rsplit_once(") ")
        .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
}
