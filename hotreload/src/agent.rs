//! The agent: a background thread that receives patches from `hotpatch run`.
//!
//! It starts before `main` (from `.init_array`, so apps need no init call) and only when
//! [`SOCKET_ENV`] names a socket; otherwise no thread is started and nothing is opened.
//!
//! When that `hotpatch` goes away while the program runs on, the agent listens for another to
//! attach (`hotpatch attach`) and tells it what the program runs, so patching continues.
//!
//! The same agent runs whether the program links the runtime or `hotpatch run` preloaded it
//! (`hotreload-preload`): either way it takes the socket's variable, and its own `LD_PRELOAD`
//! entry if it was preloaded, out of the environment, so the program's children neither
//! connect to hotpatch nor load the agent.

use crate::identity;
use crate::loader::{self, LoadedImage};
use crate::patching::{
    forget_locks_in_forked_children, mode, publish, queue_for_safe_point, run_callbacks,
    ApplyError, Mode, PatchEvent,
};
use crate::protocol::{
    attach_socket, check_same_user, is_line_too_long, receive, send, EntryChange, Hello,
    MappedImage, PatchImage, Reply, Request, SlotInfo, SlotUpdate, PROTOCOL_VERSION, SOCKET_ENV,
};
use crate::redirect::redirects;
use crate::slot::slots;
use std::ffi::{CStr, OsStr, OsString};
use std::io::{self, BufReader};
use std::ops::Range;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

/// Run by the loader before `main`, like a C constructor. Its path is
/// [`hotreload_abi::protocol::AGENT_STATIC_PATH`]: how `hotpatch run` tells that an executable
/// links the runtime.
#[used]
#[link_section = ".init_array"]
static START_AGENT: extern "C" fn() = start_agent_if_asked;

extern "C" fn start_agent_if_asked() {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    hide_from_children();
    forget_locks_in_forked_children();
    let spawned = std::thread::Builder::new()
        .name("hotreload-agent".into())
        .spawn(move || serve_each_hotpatch(Path::new(&socket)));
    if let Err(error) = spawned {
        eprintln!("hotreload: could not start the agent thread: {error}");
    }
}

/// Serves the `hotpatch` that started the program; once it is gone (killed, its terminal
/// closed), listens for the next one to attach, and serves each in turn, so the program can be
/// patched again without a restart.
fn serve_each_hotpatch(socket: &Path) {
    let first = match UnixStream::connect(socket) {
        Ok(first) => first,
        Err(error) => {
            eprintln!(
                "hotreload: no hot patching for this run: {}: {error}",
                socket.display()
            );
            return;
        }
    };
    // An answer written as hotpatch dies fails: the next hotpatch can still attach.
    if let Err(error) = serve(first) {
        eprintln!("hotreload: the connection to hotpatch ended: {error}");
    }
    // The first socket's directory sits in hotpatch's temporary directory: the next one
    // looks there.
    let temp_dir = socket
        .parent()
        .and_then(Path::parent)
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let listener = match listen_for_attach(&temp_dir) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("hotreload: hotpatch is gone and no other can attach: {error}");
            return;
        }
    };
    eprintln!(
        "hotreload: hotpatch is gone; `hotpatch attach {}` patches this program again",
        std::process::id()
    );
    for stream in listener.incoming() {
        let served = stream.and_then(|stream| {
            check_same_user(&stream)?;
            serve(stream)
        });
        if let Err(error) = served {
            eprintln!("hotreload: an attached hotpatch was dropped: {error}");
        }
    }
}

/// Binds [`attach_socket`] for this process: a fresh directory only this user can open
/// (replacing one an earlier process with this pid left, if this user owns it), the socket
/// itself only this user can use.
fn listen_for_attach(temp_dir: &Path) -> io::Result<UnixListener> {
    let socket = attach_socket(temp_dir, std::process::id());
    let Some(dir) = socket.parent() else {
        return Err(io::Error::other("the attach socket has no directory"));
    };
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    let user = unsafe { libc::geteuid() };
    match std::fs::symlink_metadata(dir) {
        Ok(stale) if stale.is_dir() && stale.uid() == user => std::fs::remove_dir_all(dir)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not this user's", dir.display()),
            ))
        }
        Err(_) => {}
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)?;
    let listener = UnixListener::bind(&socket)?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Takes [`SOCKET_ENV`] out of the environment, and this library's entry out of `LD_PRELOAD`
/// when it was preloaded (other entries stay), so processes the program starts inherit neither.
///
/// Sound: only ever called from the `.init_array` constructor, before `main`, before the
/// agent thread exists: nothing else reads or writes the environment yet (the program's std and
/// this library's std each have their own environment lock, so only "before any other thread"
/// makes `unsetenv` safe here; edition 2024 would mark these calls `unsafe` for that reason).
fn hide_from_children() {
    std::env::remove_var(SOCKET_ENV);
    let (Some(preloads), Some(me)) = (std::env::var_os("LD_PRELOAD"), this_object_path()) else {
        return;
    };
    if !preload_entries(&preloads).any(|entry| entry == me.as_bytes()) {
        return; // not preloaded: linked into the executable
    }
    let others: Vec<&[u8]> = preload_entries(&preloads)
        .filter(|entry| *entry != me.as_bytes())
        .collect();
    if others.is_empty() {
        std::env::remove_var("LD_PRELOAD");
    } else {
        std::env::set_var("LD_PRELOAD", OsString::from_vec(others.join(&b':')));
    }
}

/// The file name the loader knows the object holding this code by: the path exactly as
/// `LD_PRELOAD` spelled it when preloaded, `argv[0]` when linked into the executable.
fn this_object_path() -> Option<OsString> {
    // SAFETY: `Dl_info` is plain data; `dladdr` fills it for an address of this object and
    // leaves `dli_fname` pointing at the loader's NUL-terminated name, valid while the object
    // stays loaded (for ever: it is running).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = hide_from_children as *const libc::c_void;
        if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        Some(OsString::from_vec(
            CStr::from_ptr(info.dli_fname).to_bytes().to_vec(),
        ))
    }
}

/// `LD_PRELOAD`'s entries: the loader separates them by spaces or colons.
fn preload_entries(preloads: &OsStr) -> impl Iterator<Item = &[u8]> {
    preloads
        .as_bytes()
        .split(|&byte| byte == b':' || byte == b' ')
        .filter(|entry| !entry.is_empty())
}

/// The write half of one hotpatch's connection. The agent thread and a safe point's thread
/// (answering a patch it applied) both write to it: one line at a time, under the lock, so
/// answers never interleave.
type Replies = Arc<Mutex<UnixStream>>;

fn answer(replies: &Replies, reply: &Reply) -> io::Result<()> {
    send(
        &mut *replies.lock().unwrap_or_else(PoisonError::into_inner),
        reply,
    )
}

/// Says hello, then serves each request until the socket closes. A patch queued for a safe
/// point does not hold up the loop: the safe point answers it, meanwhile `Describe` is
/// answered here (and says it is pending).
fn serve(stream: UnixStream) -> io::Result<()> {
    let mut requests = BufReader::new(stream.try_clone()?);
    let replies: Replies = Arc::new(Mutex::new(stream));
    answer(&replies, &Reply::Hello(hello()))?;
    loop {
        let request = match receive::<Request>(&mut requests) {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()), // hotpatch went away: keep running, unpatched from now on
            // The rest of that line is unread: whatever follows is no message boundary.
            Err(error) if is_line_too_long(&error) => return Err(error),
            Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                eprintln!("hotreload: ignoring a malformed request: {error}");
                continue;
            }
            Err(error) => return Err(error),
        };
        match request {
            Request::Apply {
                id,
                image,
                updates,
                entries,
                old_code,
            } => {
                let loaded = match load_image(image.as_ref()) {
                    Ok(loaded) => loaded,
                    Err(reason) => {
                        answer(&replies, &Reply::Refused { id, reason })?;
                        continue;
                    }
                };
                let mut patch = Patch {
                    id,
                    loaded,
                    updates,
                    entries,
                    old_code,
                    replies: Arc::clone(&replies),
                    queued: false,
                    answered: false,
                };
                if mode() == Mode::Immediate {
                    // hotpatch hears of the patch first: what the app does about it is the
                    // app's business.
                    if let Some(event) = patch.apply() {
                        run_callbacks(&event);
                    }
                } else {
                    RECORDS
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(id);
                    patch.queued = true;
                    queue_for_safe_point(Box::new(move || patch.apply_queued()));
                }
            }
            Request::Describe { id } => answer(&replies, &Reply::State { id, hello: hello() })?,
        }
    }
}

/// The ids of the patches queued for a safe point. Held while a safe point applies one and
/// records its image, so what [`hello`] says is never half a patch.
static RECORDS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Images some slot may point into. Never unmapped for now: freeing superseded images needs
/// to know that no thread is still inside them.
static LIVE_IMAGES: Mutex<Vec<LoadedImage>> = Mutex::new(Vec::new());

/// Maps the patch's image, if it has one. The build-id is checked before the file is even
/// opened.
fn load_image(image: Option<&PatchImage>) -> Result<Option<LoadedImage>, String> {
    let Some(image) = image else {
        return Ok(None);
    };
    let executable = identity::executable();
    if executable.build_id.is_empty() || image.build_id != executable.build_id {
        return Err(format!(
            "patch built for another executable (build-id {}, this program is {}): restart `hotpatch run`",
            image.build_id, executable.build_id
        ));
    }
    loader::load(Path::new(&image.path), executable.load_bias, image.checksum)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// A patch whose image (if any) is mapped, to apply now or at a safe point, and answer.
struct Patch {
    id: u64,
    loaded: Option<LoadedImage>,
    updates: Vec<SlotUpdate>,
    entries: Vec<EntryChange>,
    old_code: Vec<Range<u64>>,
    replies: Replies,
    /// Listed in [`RECORDS`] as pending.
    queued: bool,
    answered: bool,
}

impl Patch {
    /// Rewires the slots and redirects the entries: all or nothing. If the patch is refused
    /// its image is unmapped again. Answers hotpatch (which may be gone: then nobody hears
    /// it, and an attaching one learns the outcome from the hello) and returns the event for
    /// the callbacks.
    fn apply(mut self) -> Option<PatchEvent> {
        let (reply, event) = match publish(&self.updates, &self.entries, &self.old_code) {
            Ok((applied, event)) => {
                if let Some(loaded) = self.loaded.take() {
                    LIVE_IMAGES
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(loaded);
                }
                let reply = Reply::Applied {
                    id: self.id,
                    generation: applied.generation,
                    stopped_us: u64::try_from(applied.stopped_for.as_micros()).unwrap_or(u64::MAX),
                    old_code_running: applied.old_code_running,
                };
                (reply, Some(event))
            }
            Err(refusal) => (self.refuse(refusal.to_string()), None),
        };
        let _ = answer(&self.replies, &reply);
        self.answered = true;
        event
    }

    /// [`Patch::apply`] at a safe point: under [`RECORDS`], leaving it no longer pending.
    fn apply_queued(mut self) -> Option<PatchEvent> {
        let mut pending = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
        pending.retain(|&id| id != self.id);
        self.queued = false;
        let event = self.apply();
        drop(pending);
        event
    }

    /// The refusal, once the image is unmapped.
    fn refuse(&mut self, refusal: String) -> Reply {
        let reason = match self.loaded.take().map(|loaded| {
            // SAFETY: the refused patch moved no slot and wrote no entry, and nothing else
            // learned the image's addresses, so no code can be running in it.
            unsafe { loaded.unload() }
        }) {
            Some(Err(error)) => format!("{refusal} (and unmapping its image failed: {error})"),
            _ => refusal,
        };
        Reply::Refused {
            id: self.id,
            reason,
        }
    }
}

/// A queued patch dropped without being applied (its safe point's thread panicked) is
/// refused, not left pending for ever.
impl Drop for Patch {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        if self.queued {
            let id = self.id;
            RECORDS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|&pending| pending != id);
        }
        // Whether the panic came before or after the slots moved is unknown: the image stays.
        let reason = ApplyError::SafePointPanicked.to_string();
        let _ = answer(
            &self.replies,
            &Reply::Refused {
                id: self.id,
                reason,
            },
        );
    }
}

/// Everything the patcher needs to know about this process. Taken under [`RECORDS`], the
/// lock a safe point applies under: a queued patch shows either pending or applied with its
/// image, never in between.
pub fn hello() -> Hello {
    let pending = RECORDS.lock().unwrap_or_else(PoisonError::into_inner);
    let executable = identity::executable();
    Hello {
        protocol_version: PROTOCOL_VERSION,
        pid: std::process::id(),
        build_id: executable.build_id,
        load_bias: executable.load_bias,
        exe: std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        generation: crate::patching::generation(),
        images: LIVE_IMAGES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|image| MappedImage {
                path: image.path().display().to_string(),
                start: image.range().start,
                end: image.range().end,
            })
            .collect(),
        pending: pending.clone(),
        redirected: redirects()
            .into_iter()
            .map(|redirect| EntryChange {
                entry: redirect.entry,
                target: Some(redirect.target),
            })
            .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_static_path_names_the_constructor_static() {
        // Legacy mangling spells each path segment as its length and its name.
        let mangled: String = crate::protocol::AGENT_STATIC_PATH
            .split("::")
            .map(|segment| format!("{}{segment}", segment.len()))
            .collect();
        let symbols = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(
            symbols
                .windows(mangled.len())
                .any(|window| window == mangled.as_bytes()),
            "no symbol `{mangled}` in this test binary"
        );
    }

    #[test]
    fn preload_entries_are_split_on_spaces_and_colons() {
        let entries = |list: &str| {
            preload_entries(OsStr::new(list))
                .map(|entry| String::from_utf8(entry.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(entries("/t/agent.so"), ["/t/agent.so"]);
        assert_eq!(entries("/t/agent.so:/u/a.so"), ["/t/agent.so", "/u/a.so"]);
        assert_eq!(entries(" /u/a.so  /u/b.so::"), ["/u/a.so", "/u/b.so"]);
    }
}
