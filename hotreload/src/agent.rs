//! The agent: a background thread that receives patches from `hotpatch run`.
//!
//! It starts before `main` (from `.init_array`, so apps need no init call) and only when
//! [`SOCKET_ENV`] names a socket; otherwise no thread is started and nothing is opened.

use crate::identity;
use crate::loader::{self, LoadedImage};
use crate::patching::{apply_in_mode, Applied};
use crate::protocol::{
    receive, send, EntryChange, Hello, PatchImage, Reply, Request, SlotInfo, SlotUpdate,
    PROTOCOL_VERSION, SOCKET_ENV,
};
use crate::slot::slots;
use std::io::{self, BufReader};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// Run by the loader before `main`, like a C constructor.
#[used]
#[link_section = ".init_array"]
static START_AGENT: extern "C" fn() = start_agent_if_asked;

extern "C" fn start_agent_if_asked() {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("hotreload-agent".into())
        .spawn(move || {
            if let Err(error) = serve(Path::new(&socket)) {
                eprintln!(
                    "hotreload: no hot patching for this run: {}: {error}",
                    Path::new(&socket).display()
                );
            }
        });
    if let Err(error) = spawned {
        eprintln!("hotreload: could not start the agent thread: {error}");
    }
}

/// Connects, says hello, then applies each patch and answers it until the socket closes.
fn serve(socket: &Path) -> io::Result<()> {
    let stream = UnixStream::connect(socket)?;
    let mut requests = BufReader::new(stream.try_clone()?);
    let mut replies = stream;
    send(&mut replies, &Reply::Hello(hello()))?;
    loop {
        let request = match receive::<Request>(&mut requests) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()), // hotpatch went away: keep running, unpatched from now on
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                eprintln!("hotreload: ignoring a malformed request: {error}");
                continue;
            }
            Err(error) => return Err(error),
        };
        let reply = match request {
            Request::Apply {
                id,
                image,
                updates,
                entries,
            } => match apply_patch(image.as_ref(), updates, entries) {
                Ok(applied) => Reply::Applied {
                    id,
                    generation: applied.generation,
                    stopped_us: u64::try_from(applied.stopped_for.as_micros()).unwrap_or(u64::MAX),
                },
                Err(reason) => Reply::Refused { id, reason },
            },
        };
        send(&mut replies, &reply)?;
    }
}

/// Images some slot may point into. Never unmapped for now: freeing superseded images needs
/// to know that no thread is still inside them.
static LIVE_IMAGES: Mutex<Vec<LoadedImage>> = Mutex::new(Vec::new());

/// Maps the patch's image (if any), then rewires the slots and redirects the entries into
/// it: all or nothing. The build-id is checked before the file is even opened; if the patch
/// is refused the image is unmapped again. Slots and entries move only where `apply_in_mode`
/// says (a safe point, maybe).
fn apply_patch(
    image: Option<&PatchImage>,
    updates: Vec<SlotUpdate>,
    entries: Vec<EntryChange>,
) -> Result<Applied, String> {
    let Some(image) = image else {
        return apply_in_mode(updates, entries).map_err(|error| error.to_string());
    };
    let executable = identity::executable();
    if executable.build_id.is_empty() || image.build_id != executable.build_id {
        return Err(format!(
            "patch built for another executable (build-id {}, this program is {}): restart `hotpatch run`",
            image.build_id, executable.build_id
        ));
    }
    let loaded = loader::load(Path::new(&image.path), executable.load_bias, image.checksum)
        .map_err(|e| e.to_string())?;
    match apply_in_mode(updates, entries) {
        Ok(applied) => {
            LIVE_IMAGES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(loaded);
            Ok(applied)
        }
        Err(refusal) => {
            // SAFETY: the refused patch moved no slot and wrote no entry, and nothing else
            // learned the image's addresses, so no code can be running in it.
            match unsafe { loaded.unload() } {
                Ok(()) => Err(refusal.to_string()),
                Err(error) => Err(format!(
                    "{refusal} (and unmapping its image failed: {error})"
                )),
            }
        }
    }
}

/// Everything the patcher needs to know about this process.
pub fn hello() -> Hello {
    let executable = identity::executable();
    Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        build_id: executable.build_id,
        load_bias: executable.load_bias,
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        slots: slots()
            .iter()
            .map(|entry| SlotInfo {
                path: entry.path.to_string(),
                fingerprint: entry.fingerprint,
                slot: entry.slot.address() as u64,
                original: entry.original.get() as u64,
                current: entry.slot.current() as u64,
            })
            .collect(),
    }
}
