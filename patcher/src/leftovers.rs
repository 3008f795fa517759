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
        if ours && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
