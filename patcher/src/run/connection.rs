//! The patcher's end of the socket the running program's agent connects to.
//!
//! The socket lives in a fresh directory only this user can open (0700) and is itself 0600,
//! so no one else can deliver patches to the program.

use crate::leftovers::remove_dirs_of_ended_processes;
use hotreload_abi::protocol::{
    receive, send, EntryChange, Hello, PatchImage, Reply, Request, SlotUpdate, ATTACH_DIR_PREFIX,
    PROTOCOL_VERSION,
};
use linker_shim::{Context, Error, Result};
use std::io::BufReader;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The socket directories' names start with this, then hotpatch's pid.
const SOCKET_DIR_PREFIX: &str = "hotpatch-";

/// A listening socket waiting for the program to say hello.
pub struct AppListener {
    listener: UnixListener,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Listens on a socket `name` (0600) in a fresh directory only this user can open (0700),
/// removed when the returned directory is dropped.
pub(super) fn bind_private(name: &str) -> Result<(UnixListener, PathBuf, tempfile::TempDir)> {
    // Named after this process, so the next hotpatch removes it if this one is killed.
    remove_dirs_of_ended_processes(&std::env::temp_dir(), SOCKET_DIR_PREFIX);
    remove_dirs_of_ended_processes(&std::env::temp_dir(), ATTACH_DIR_PREFIX);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{SOCKET_DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
        .context(|| "could not create the socket directory".into())?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .context(|| format!("could not protect {}", dir.path().display()))?;
    let path = dir.path().join(name);
    let listener =
        UnixListener::bind(&path).context(|| format!("could not listen on {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("could not protect {}", path.display()))?;
    Ok((listener, path, dir))
}

impl AppListener {
    pub fn bind() -> Result<AppListener> {
        let (listener, path, dir) = bind_private("agent.sock")?;
        listener
            .set_nonblocking(true)
            .context(|| "could not configure the socket".into())?;
        Ok(AppListener {
            listener,
            path,
            _dir: dir,
        })
    }

    /// The path to hand the program in `HOTPATCH_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the program's agent to connect and say hello. Gives up after `patience`, or
    /// as soon as `still_running` says the program is gone.
    pub fn accept(
        &self,
        patience: Duration,
        mut still_running: impl FnMut() -> bool,
    ) -> Result<AppConnection> {
        let deadline = Instant::now() + patience;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => return AppConnection::handshake(stream),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    return Err(Error::new(format!(
                        "accepting the program's connection failed: {error}"
                    )))
                }
            }
            if !still_running() {
                return Err(Error::new("the program exited before connecting"));
            }
            if Instant::now() > deadline {
                return Err(Error::new(format!(
                    "the program's agent did not connect within {} s",
                    patience.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// How long hotpatch waits for the hello of a program that connected.
const HELLO_PATIENCE: Duration = Duration::from_secs(30);

/// A connected program. Requests go out from here; answers come back on a thread of their
/// own ([`AppConnection::forward_replies`]), so hotpatch stays responsive while one is awaited.
pub struct AppConnection {
    pub hello: Hello,
    replies: Option<BufReader<UnixStream>>,
    requests: UnixStream,
    next_id: u64,
}

impl AppConnection {
    pub(super) fn handshake(stream: UnixStream) -> Result<AppConnection> {
        let configure = |stream: &UnixStream, timeout| {
            stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_read_timeout(timeout))
                .context(|| "could not configure the connection".into())
        };
        configure(&stream, Some(HELLO_PATIENCE))?;
        let mut replies = BufReader::new(
            stream
                .try_clone()
                .context(|| "could not clone the connection".into())?,
        );
        let hello = match receive::<Reply>(&mut replies)
            .context(|| "the program's hello was unreadable".into())?
        {
            Some(Reply::Hello(hello)) => hello,
            other => {
                return Err(Error::new(format!(
                    "the program sent {other:?} instead of a hello"
                )))
            }
        };
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(Error::new(format!(
                "the program's hotreload speaks protocol {} and this hotpatch {PROTOCOL_VERSION}: use the same version of both",
                hello.protocol_version
            )));
        }
        // From here answers are awaited by the run loop, with its own patience.
        configure(&stream, None)?;
        Ok(AppConnection {
            hello,
            replies: Some(replies),
            requests: stream,
            next_id: 1,
        })
    }

    /// Passes each answer of the program to `deliver` on a thread of its own, then `None`
    /// once the connection ends (or an answer is unreadable: the stream is then out of step).
    /// Called once.
    pub(super) fn forward_replies(
        &mut self,
        deliver: impl Fn(Option<Reply>) -> bool + Send + 'static,
    ) {
        let Some(mut replies) = self.replies.take() else {
            return;
        };
        std::thread::spawn(move || {
            while let Ok(Some(reply)) = receive::<Reply>(&mut replies) {
                if !deliver(Some(reply)) {
                    return;
                }
            }
            deliver(None);
        });
    }

    /// Sends one patch; its answer comes through [`AppConnection::forward_replies`] with the
    /// id returned.
    pub fn apply(
        &mut self,
        image: Option<PatchImage>,
        updates: Vec<SlotUpdate>,
        entries: Vec<EntryChange>,
        old_code: Vec<Range<u64>>,
    ) -> Result<u64> {
        let id = self.next_id();
        let request = Request::Apply {
            id,
            image,
            updates,
            entries,
            old_code,
        };
        send(&mut self.requests, &request).context(|| "could not send the patch".into())?;
        Ok(id)
    }

    /// Asks what the program runs now; answered by a [`Reply::State`] with the id returned.
    pub fn describe(&mut self) -> Result<u64> {
        let id = self.next_id();
        send(&mut self.requests, &Request::Describe { id })
            .context(|| "could not ask the program for its state".into())?;
        Ok(id)
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}
