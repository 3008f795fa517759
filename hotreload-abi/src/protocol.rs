//! Messages between the runtime's agent (in the app) and `hotpatch` (the patcher).
//!
//! Both sides use these types (the runtime re-exports them as `hotreload::protocol`, the
//! patcher as `patcher::protocol`), so they cannot drift apart. The wire format is one JSON
//! object per line over the Unix socket named by [`SOCKET_ENV`]: easy to log and debug,
//! and patches are rare and small compared to what JSON costs.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Read, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// How long the runtime waits for the other threads to leave the code a patch replaces
/// ([`Request::Apply`]'s `old_code`) before it applies the patch anyway and says so
/// ([`Reply::Applied`]'s `old_code_running`).
pub const OLD_CODE_PATIENCE: Duration = Duration::from_secs(2);

/// Bumped whenever a message changes shape; the patcher refuses a peer with another version.
pub const PROTOCOL_VERSION: u32 = 3;

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
    /// Ids of the `Apply` requests queued for the next safe point, not applied yet: until
    /// they are, what runs may still change (an attaching hotpatch's own ids start afresh,
    /// so it waits for this list to empty).
    #[serde(default)]
    pub pending: Vec<u64>,
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
        /// The code the patch replaces: `[start, end)` of each version running now (a slot's
        /// current implementation, the copies whose entries get a jump). The runtime applies
        /// the patch when no other thread runs any of it, waiting a while if one does.
        #[serde(default)]
        old_code: Vec<Range<u64>>,
    },
    /// What does the program run now? Answered by [`Reply::State`] at once, even while a
    /// patch waits for a safe point: how hotpatch learns the truth after an answer took too
    /// long.
    Describe { id: u64 },
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
        /// How long the program's other threads were stopped to apply the patch, in µs.
        #[serde(default)]
        stopped_us: u64,
        /// Starts of the `old_code` ranges a thread was still running when the runtime
        /// stopped waiting and applied the patch anyway: that thread finishes its call in the
        /// old version, which may call the new code of the same patch.
        #[serde(default)]
        old_code_running: Vec<u64>,
    },
    /// Nothing was changed; `reason` says why.
    Refused {
        id: u64,
        reason: String,
    },
    /// The answer to [`Request::Describe`]: what the program runs, as a hello says it. An
    /// answer to an `Apply` is always sent before a `State` that shows it applied.
    State {
        id: u64,
        hello: Hello,
    },
}

/// Writes one message as a JSON line and flushes it.
pub fn send<T: Serialize>(out: &mut impl Write, message: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

/// The longest line [`receive`] accepts, newline included. The largest real message is the
/// `Hello` of a big program, about 200 bytes per slot: 16 MiB is some 80 000 slots, far more
/// than any program has, while a peer that never sends a newline can't make the reader hold
/// more than this.
pub const MAX_LINE: usize = 16 << 20;

/// The error inside the [`io::ErrorKind::InvalidData`] error [`receive`] returns for a line
/// longer than [`MAX_LINE`]. The rest of that line is still unread, so the stream is out of
/// step with the message boundaries: a reader should drop the connection (unlike after a
/// malformed but complete line, where the next message starts at the next byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong;

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "message line longer than {MAX_LINE} bytes")
    }
}

impl std::error::Error for LineTooLong {}

/// Whether `error` is [`receive`]'s refusal of a line longer than [`MAX_LINE`].
pub fn is_line_too_long(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<LineTooLong>())
}

/// Reads one JSON-line message; `Ok(None)` at end of stream. Reads at most [`MAX_LINE`]
/// bytes: a longer line is an [`io::ErrorKind::InvalidData`] error holding [`LineTooLong`].
pub fn receive<T: for<'de> Deserialize<'de>>(input: &mut impl BufRead) -> io::Result<Option<T>> {
    let mut line = Vec::new();
    input.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Ok(None);
    }
    if line.len() == MAX_LINE && line.last() != Some(&b'\n') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, LineTooLong));
    }
    serde_json::from_slice(&line).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad message {:?}: {e}", String::from_utf8_lossy(&line)),
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
            old_code: vec![0x1000..0x1040, 0x2000..0x2010],
        };
        let mut wire = Vec::new();
        send(&mut wire, &request).unwrap();
        send(
            &mut wire,
            &Reply::Applied {
                id: 7,
                generation: 1,
                stopped_us: 0,
                old_code_running: vec![0x1000],
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
                old_code_running: vec![0x1000],
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
    fn a_line_longer_than_the_limit_is_refused_without_reading_on() {
        // A peer that never sends a newline: the reader stops after MAX_LINE bytes.
        let mut endless = io::BufReader::new(io::repeat(b'x'));
        let err = receive::<Request>(&mut endless).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(is_line_too_long(&err), "{err}");

        // Exactly MAX_LINE bytes with the newline is still read (and judged as JSON).
        let mut longest = vec![b' '; MAX_LINE - 3];
        longest.extend_from_slice(b"{}\n");
        let err = receive::<Request>(&mut &longest[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(!is_line_too_long(&err), "{err}");
        let mut too_long = longest.clone();
        too_long.insert(0, b' ');
        assert!(is_line_too_long(
            &receive::<Request>(&mut &too_long[..]).unwrap_err()
        ));
    }

    #[test]
    fn a_last_line_without_newline_is_a_message() {
        let mut input = &br#"{"type":"refused","id":3,"reason":"no"}"#[..];
        assert_eq!(
            receive::<Reply>(&mut input).unwrap(),
            Some(Reply::Refused {
                id: 3,
                reason: "no".into()
            })
        );
        assert_eq!(receive::<Reply>(&mut input).unwrap(), None);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut input = io::BufReader::new(&b"{not json\n"[..]);
        let err = receive::<Request>(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    /// Property-based fuzzing of [`receive`]: whatever a peer sends, the reader returns
    /// messages or errors and never panics. `PROPTEST_CASES` raises the number of cases.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn config(cases: u32) -> ProptestConfig {
            let config = ProptestConfig::default();
            match std::env::var_os("PROPTEST_CASES") {
                Some(_) => config, // the default configuration reads it
                None => ProptestConfig { cases, ..config },
            }
        }

        /// Reads `wire` as the agent does (malformed lines skipped, an over-long line ends
        /// it) and returns the messages; each call consumes input, so it terminates.
        fn read_all<T: for<'de> Deserialize<'de>>(wire: &[u8]) -> Vec<T> {
            let mut input = io::BufReader::new(wire);
            let mut messages = Vec::new();
            loop {
                match receive::<T>(&mut input) {
                    Ok(Some(message)) => messages.push(message),
                    Ok(None) => return messages,
                    Err(error) if is_line_too_long(&error) => return messages,
                    Err(error) => assert_eq!(error.kind(), io::ErrorKind::InvalidData),
                }
            }
        }

        fn request() -> impl Strategy<Value = Request> {
            let image = prop::option::of((".{0,40}", "[0-9a-f]{0,40}", any::<u64>()).prop_map(
                |(path, build_id, checksum)| PatchImage {
                    path,
                    build_id,
                    checksum,
                },
            ));
            let update =
                any::<(u64, u64, u64)>().prop_map(|(slot, fingerprint, target)| SlotUpdate {
                    slot,
                    fingerprint,
                    target,
                });
            let entry = (any::<u64>(), any::<Option<u64>>())
                .prop_map(|(entry, target)| EntryChange { entry, target });
            let apply = (
                any::<u64>(),
                image,
                prop::collection::vec(update, 0..4),
                prop::collection::vec(entry, 0..4),
                prop::collection::vec(any::<(u64, u64)>(), 0..4),
            )
                .prop_map(|(id, image, updates, entries, old_code)| Request::Apply {
                    id,
                    image,
                    updates,
                    entries,
                    old_code: old_code
                        .into_iter()
                        .map(|(start, end)| start..end)
                        .collect(),
                });
            prop_oneof![apply, any::<u64>().prop_map(|id| Request::Describe { id })]
        }

        fn reply() -> impl Strategy<Value = Reply> {
            let slot = (".{0,30}", any::<[u64; 4]>()).prop_map(
                |(path, [fingerprint, slot, original, current])| SlotInfo {
                    path,
                    fingerprint,
                    slot,
                    original,
                    current,
                },
            );
            let image = (".{0,30}", any::<(u64, u64)>())
                .prop_map(|(path, (start, end))| MappedImage { path, start, end });
            let redirect = any::<(u64, u64)>().prop_map(|(entry, target)| EntryChange {
                entry,
                target: Some(target),
            });
            let hello = (
                any::<(u32, u32, u64, u64)>(),
                "[0-9a-f]{0,40}",
                ".{0,30}",
                prop::collection::vec(slot, 0..3),
                prop::collection::vec(image, 0..3),
                prop::collection::vec(redirect, 0..3),
                prop::collection::vec(any::<u64>(), 0..3),
            )
                .prop_map(
                    |(
                        (protocol_version, pid, load_bias, generation),
                        build_id,
                        exe,
                        slots,
                        images,
                        redirected,
                        pending,
                    )| Hello {
                        protocol_version,
                        pid,
                        build_id,
                        load_bias,
                        exe,
                        slots,
                        generation,
                        images,
                        redirected,
                        pending,
                    },
                );
            prop_oneof![
                hello.clone().prop_map(Reply::Hello),
                (any::<u64>(), hello).prop_map(|(id, hello)| Reply::State { id, hello }),
                (
                    any::<(u64, u64, u64)>(),
                    prop::collection::vec(any::<u64>(), 0..3)
                )
                    .prop_map(
                        |((id, generation, stopped_us), old_code_running)| {
                            Reply::Applied {
                                id,
                                generation,
                                stopped_us,
                                old_code_running,
                            }
                        }
                    ),
                (any::<u64>(), ".{0,40}").prop_map(|(id, reason)| Reply::Refused { id, reason }),
            ]
        }

        /// A change to a message's bytes: (where, as a fraction of the length; what).
        #[derive(Debug, Clone)]
        enum Mutation {
            Set(prop::sample::Index, u8),
            Insert(prop::sample::Index, u8),
            Remove(prop::sample::Index),
            Truncate(prop::sample::Index),
        }

        fn mutation() -> impl Strategy<Value = Mutation> {
            // JSON's own bytes are likelier to reach deep into the parser than random ones.
            let byte = prop_oneof![
                any::<u8>(),
                prop::sample::select(b"{}[]\":,\\-0e9nt \n".to_vec())
            ];
            prop_oneof![
                (any::<prop::sample::Index>(), byte.clone())
                    .prop_map(|(at, b)| Mutation::Set(at, b)),
                (any::<prop::sample::Index>(), byte).prop_map(|(at, b)| Mutation::Insert(at, b)),
                any::<prop::sample::Index>().prop_map(Mutation::Remove),
                any::<prop::sample::Index>().prop_map(Mutation::Truncate),
            ]
        }

        fn mutate(mut wire: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
            for mutation in mutations {
                if wire.is_empty() {
                    break;
                }
                match mutation {
                    Mutation::Set(at, byte) => *at.get_mut(&mut wire) = *byte,
                    Mutation::Insert(at, byte) => wire.insert(at.index(wire.len()), *byte),
                    Mutation::Remove(at) => {
                        wire.remove(at.index(wire.len()));
                    }
                    Mutation::Truncate(at) => wire.truncate(at.index(wire.len())),
                }
            }
            wire
        }

        proptest! {
            #![proptest_config(config(10_000))]

            #[test]
            fn arbitrary_bytes_are_messages_or_errors(wire in prop::collection::vec(any::<u8>(), 0..512)) {
                read_all::<Request>(&wire);
                read_all::<Reply>(&wire);
            }

            #[test]
            fn arbitrary_lines_are_messages_or_errors(lines in prop::collection::vec("[ -~]{0,80}|\\PC{0,40}", 0..6)) {
                let wire = lines.join("\n");
                read_all::<Request>(wire.as_bytes());
                read_all::<Reply>(wire.as_bytes());
            }

            #[test]
            fn mutated_messages_are_messages_or_errors(
                requests in prop::collection::vec(request(), 1..4),
                replies in prop::collection::vec(reply(), 1..4),
                mutations in prop::collection::vec(mutation(), 0..6),
            ) {
                let mut requests_wire = Vec::new();
                for request in &requests {
                    send(&mut requests_wire, request).unwrap();
                }
                let mut replies_wire = Vec::new();
                for reply in &replies {
                    send(&mut replies_wire, reply).unwrap();
                }
                // Unmutated, every message comes back as it was sent.
                prop_assert_eq!(&read_all::<Request>(&requests_wire), &requests);
                prop_assert_eq!(&read_all::<Reply>(&replies_wire), &replies);
                read_all::<Request>(&mutate(requests_wire, &mutations));
                read_all::<Reply>(&mutate(replies_wire, &mutations));
            }
        }
    }
}
