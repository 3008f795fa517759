//! `hotpatch attach`: finding the programs whose `hotpatch` is gone (killed, its terminal
//! closed) while they run on, their agents listening for the next one, and connecting to one.

use super::connection::AppConnection;
use crate::capture::build::matching_revision;
use crate::leftovers::has_ended;
use hotreload_abi::protocol::{attach_socket, check_same_user, ATTACH_DIR_PREFIX};
use linker_shim::{read_build_id, Context, Error, Result, Store, TargetKey};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// The pids of the running programs of `target` that wait for a `hotpatch` to attach: their
/// agent listens, and their executable is a build of `target` recorded in `store`.
pub(super) fn waiting_programs(store: &Store, target: &TargetKey) -> Result<Vec<u32>> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Ok(Vec::new());
    };
    let mut waiting = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(ATTACH_DIR_PREFIX))
            .filter(|pid| !has_ended(pid))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // Another user's process, or one that exited meanwhile: not a candidate.
        let Ok(Some(build_id)) = read_build_id(Path::new(&format!("/proc/{pid}/exe"))) else {
            continue;
        };
        if matching_revision(store, target, Some(&build_id))?.is_some() {
            waiting.push(pid);
        }
    }
    waiting.sort_unstable();
    Ok(waiting)
}

/// Connects to the agent of program `pid`, which must run as this user.
pub(super) fn connect(pid: u32) -> Result<AppConnection> {
    let socket = attach_socket(&std::env::temp_dir(), pid);
    let stream = UnixStream::connect(&socket).context(|| {
        format!(
            "could not connect to program {pid} at {} (is it still running, started by `hotpatch run` with this version, and its hotpatch gone?)",
            socket.display()
        )
    })?;
    check_same_user(&stream)
        .context(|| format!("program {pid} may not be patched by this user"))?;
    let connection = AppConnection::handshake(stream)?;
    if connection.hello.pid != pid {
        return Err(Error::new(format!(
            "the agent at {} belongs to process {}, not {pid}",
            socket.display(),
            connection.hello.pid
        )));
    }
    Ok(connection)
}

/// The arguments program `pid` was started with (after its own name): what a restart gives
/// the new process.
pub(super) fn program_args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let cmdline = cmdline.strip_suffix(&[0]).unwrap_or(&cmdline);
            cmdline
                .split(|&byte| byte == 0)
                .skip(1)
                .map(|arg| String::from_utf8_lossy(arg).into_owned())
                .collect()
        })
        .unwrap_or_default()
}
