//! Messages between the runtime's agent (in the app) and `hotpatch` (the patcher).
//!
//! Both sides use these types (the runtime re-exports them as `hotreload::protocol`, the
//! patcher as `patcher::protocol`), so they cannot drift apart. The wire format is one JSON
//! object per line over the Unix socket named by [`SOCKET_ENV`]: easy to log and debug,
//! and patches are rare and small compared to what JSON costs.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Environment variable through which `hotpatch run` tells the app where to connect.
/// When it is absent the runtime starts no thread and opens nothing.
pub const SOCKET_ENV: &str = "HOTPATCH_SOCKET";

/// Once its first `hotpatch` has gone, the agent listens for the next one (`hotpatch attach`)
/// on the socket [`attach_socket`] names: in a directory only its user can open, beside the
/// first socket's directory, named after the program's pid so whoever looks for it finds it
/// and the next `hotpatch` removes it once the program is gone.
pub const ATTACH_DIR_PREFIX: &str = "hotpatch-program-";

/// The socket a program with pid `pid` listens on for `hotpatch attach`, under `temp_dir`.
pub fn attach_socket(temp_dir: &Path, pid: u32) -> PathBuf {
    temp_dir
        .join(format!("{ATTACH_DIR_PREFIX}{pid}"))
        .join("agent.sock")
}

/// The user id of the process at the other end of `stream` (`SO_PEERCRED`): both ends speak
/// only with their own user, whatever the socket's file mode says.
pub fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut credentials = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut length = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `length` bytes into `credentials`, a live `ucred`
    // of exactly that size, and the descriptor is open for the borrow of `stream`.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut credentials).cast(),
            &mut length,
        )
    };
    if result == 0 {
        Ok(credentials.uid)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Refuses a peer of another user than this process's (see [`peer_uid`]).
pub fn check_same_user(stream: &UnixStream) -> io::Result<()> {
    let peer = peer_uid(stream)?;
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if peer == me {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the peer runs as user {peer}, not as this process's user {me}"),
        ))
    }
}

/// The packages of the runtime itself. hotpatch never patches them — the code that applies a
/// patch can't be rewritten by one — so, even as path dependencies, they are built and
/// captured like registry crates: not watched, not recompiled, not diffed.
pub const RUNTIME_PACKAGES: [&str; 4] = [
    "hotreload",
    "hotreload-abi",
    "hotreload-macro",
    "hotreload-preload",
];

/// Demangled path (without hash) of the static that starts the runtime's agent. An executable
/// whose symbol table defines it links the runtime, whose agent connects; `hotpatch run` preloads
/// the runtime (`hotreload-preload`) only into programs that don't, so exactly one agent runs.
pub const AGENT_STATIC_PATH: &str = "hotreload::agent::START_AGENT";

/// Bumped whenever a message changes shape; the patcher refuses a peer with another version.
pub const PROTOCOL_VERSION: u32 = 2;

/// One `#[hotreload]` slot as the running program sees it. Addresses are runtime addresses
/// in the app's address space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    /// Path of the annotated function, e.g. `demo_app::physics::step` or `<demo_app::Ball>::draw`.
    pub path: String,
    /// Hash of the normalised signature; a patch must target a slot with the same one.
    pub fingerprint: u64,
    /// Address of the slot itself (the atomic pointer the visible function calls through).
    pub slot: u64,
    /// Address of the implementation the program was built with.
    pub original: u64,
    /// Address the slot points at right now.
    pub current: u64,
}

/// Sent by the app once, right after connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    pub pid: u32,
    /// Hex of the executable's GNU build-id: a patch built for another executable is refused.
    pub build_id: String,
    /// What the loader added to the executable's link-time addresses (its ASLR offset).
    pub load_bias: u64,
    pub exe: String,
    pub slots: Vec<SlotInfo>,
    /// Patches applied so far (not zero when a `hotpatch` re-attaches).
    #[serde(default)]
    pub generation: u64,
    /// Patch images mapped so far, oldest first.
    #[serde(default)]
    pub images: Vec<MappedImage>,
    /// Function entries that jump elsewhere now (every `target` is `Some`).
    #[serde(default)]
    pub redirected: Vec<EntryChange>,
}

/// A patch image the program has mapped, as a re-attaching `hotpatch` learns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedImage {
    /// The file it was mapped from.
    pub path: String,
    /// The runtime addresses it occupies.
    pub start: u64,
    pub end: u64,
}

/// One slot to rewire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotUpdate {
    /// Runtime address of the slot (as announced in [`Hello`]).
    pub slot: u64,
    /// Fingerprint the patch was built for; must equal the slot's.
    pub fingerprint: u64,
    /// Runtime address of the new implementation.
    pub target: u64,
}

/// A patch image for the runtime to map before rewiring slots into it.
///
/// The image is linked at a fixed address in the executable's link-time coordinates, so one
/// file serves every run of that executable: the runtime maps it at `load_bias + vaddr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchImage {
    /// Absolute path of the ELF image (written once, never modified afterwards).
    pub path: String,
    /// Build-id of the executable the image was linked against; must equal the runtime's own.
    pub build_id: String,
    /// [`checksum`] of the file's bytes: a truncated or damaged file is refused before mapping.
    pub checksum: u64,
}

/// 64-bit FNV-1a of a patch file. Catches truncation and corruption (not tampering: that is
/// what the file's owner and mode checks are for). Both sides call this one function.
pub fn checksum(bytes: &[u8]) -> u64 {
    crate::hash::fnv1a(bytes)
}

/// Sent by the patcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Request {
    /// Map `image` (if any), then rewire these slots as one patch; answered by
    /// [`Reply::Applied`] or [`Reply::Refused`]. Targets are runtime addresses.
    Apply {
        id: u64,
        image: Option<PatchImage>,
        updates: Vec<SlotUpdate>,
        /// Function entries to redirect or restore, together with the slot updates.
        #[serde(default)]
        entries: Vec<EntryChange>,
    },
}

/// One function entry to redirect or restore, in runtime addresses: after it, every caller
/// of the function at `entry` (direct calls, fn pointers, vtables) reaches `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryChange {
    /// The first byte of the function whose callers move.
    pub entry: u64,
    /// `Some(t)`: the entry jumps to `t`. `None`: the entry gets its original bytes back.
    pub target: Option<u64>,
}

/// Sent by the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reply {
    Hello(Hello),
    /// The patch is live; `generation` is the number of patches applied so far.
    Applied {
        id: u64,
        generation: u64,
        /// How long the program's other threads were stopped to write entries, in µs.
        #[serde(default)]
        stopped_us: u64,
    },
    /// Nothing was changed; `reason` says why.
    Refused {
        id: u64,
        reason: String,
    },
}

/// Writes one message as a JSON line and flushes it.
pub fn send<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// Reads one JSON-line message; `Ok(None)` at end of stream.
pub fn receive<T: for<'de> Deserialize<'de>>(input: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = String::new();
    if input.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    serde_json::from_str(&line).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad message {line:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn messages_round_trip_as_json_lines() {
        let request = Request::Apply {
            id: 7,
            image: Some(PatchImage {
                path: "/tmp/p.so".into(),
                build_id: "ab".into(),
                checksum: 7,
            }),
            updates: vec![SlotUpdate {
                slot: 1,
                fingerprint: 2,
                target: 3,
            }],
            entries: vec![EntryChange {
                entry: 4,
                target: Some(5),
            }],
        };
        let mut wire = Vec::new();
        send(&mut wire, &request).unwrap();
        send(
            &mut wire,
            &Reply::Applied {
                id: 7,
                generation: 1,
                stopped_us: 0,
            },
        )
        .unwrap();
        assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 2);
        let mut input = io::BufReader::new(&wire[..]);
        assert_eq!(receive::<Request>(&mut input).unwrap(), Some(request));
        assert_eq!(
            receive::<Reply>(&mut input).unwrap(),
            Some(Reply::Applied {
                id: 7,
                generation: 1,
                stopped_us: 0,
            })
        );
        assert_eq!(receive::<Reply>(&mut input).unwrap(), None);
    }

    #[test]
    fn a_peer_of_this_user_is_accepted() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        check_same_user(&ours).unwrap();
        check_same_user(&theirs).unwrap();
    }

    /// Needs root, to connect as another user (CI runs as root); otherwise checks nothing more
    /// than [`a_peer_of_this_user_is_accepted`] and says so.
    #[test]
    fn a_peer_of_another_user_is_refused() {
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: can't connect as another user, skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("peer-uid-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let socket = dir.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let everyone = std::fs::Permissions::from_mode(0o777);
        std::fs::set_permissions(&dir, everyone.clone()).unwrap();
        std::fs::set_permissions(&socket, everyone).unwrap();
        let path = std::ffi::CString::new(socket.as_os_str().as_bytes()).unwrap();
        // SAFETY: the child runs only async-signal-safe calls (setgid, setuid, socket,
        // connect, read, _exit) on memory prepared before the fork, and never returns.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: as above; `address` is a zeroed sockaddr_un filled within its bounds.
            unsafe {
                if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                    libc::_exit(2);
                }
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                let mut address: libc::sockaddr_un = std::mem::zeroed();
                address.sun_family = libc::AF_UNIX as libc::sa_family_t;
                for (slot, byte) in address.sun_path.iter_mut().zip(path.as_bytes()) {
                    *slot = *byte as libc::c_char;
                }
                let length = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
                if libc::connect(fd, (&raw const address).cast(), length) != 0 {
                    libc::_exit(3);
                }
                let mut byte = 0u8;
                libc::read(fd, (&raw mut byte).cast(), 1);
                libc::_exit(0);
            }
        }
        let (stream, _) = listener.accept().unwrap();
        let refusal = check_same_user(&stream).unwrap_err();
        drop(stream);
        let mut status = 0;
        // SAFETY: waitpid(2) on the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(refusal.kind(), io::ErrorKind::PermissionDenied);
        assert!(refusal.to_string().contains("65534"), "{refusal}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut input = io::BufReader::new(&b"{not json\n"[..]);
        let err = receive::<Request>(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
