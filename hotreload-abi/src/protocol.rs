//! Messages between the runtime's agent (in the app) and `hotpatch` (the patcher).
//!
//! Both sides use these types (the runtime re-exports them as `hotreload::protocol`, the
//! patcher as `patcher::protocol`), so they cannot drift apart. The wire format is one JSON
//! object per line over the Unix socket named by [`SOCKET_ENV`]: easy to log and debug,
//! and patches are rare and small compared to what JSON costs.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Write};
use std::ops::Range;
use std::time::Duration;

/// Environment variable through which `hotpatch run` tells the app where to connect.
/// When it is absent the runtime starts no thread and opens nothing.
pub const SOCKET_ENV: &str = "HOTPATCH_SOCKET";

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
    fn garbage_is_an_error_not_a_panic() {
        let mut input = io::BufReader::new(&b"{not json\n"[..]);
        let err = receive::<Request>(&mut input).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
