//! The control socket: how `hotpatch restart|undo|quit`, typed in another terminal, reach a
//! running `hotpatch run` without touching the terminal its program owns. One command per
//! connection: a word and a newline in, `ok` (or what was wrong) out. The socket is 0600 in a
//! directory only this user can open, and the peer's user is checked as well.

use super::connection::bind_private;
use super::input::Request;
use super::Signal;
use hotreload_abi::protocol::check_same_user;
use linker_shim::{Context, Error, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::Duration;

/// The longest command line read: the words are short.
const MAX_LINE: u64 = 64;
/// How long either end waits for the other's line.
const PATIENCE: Duration = Duration::from_secs(5);

/// The listening socket; its directory goes when this is dropped.
pub(super) struct ControlSocket {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ControlSocket {
    /// Listens on a thread of its own and turns each command into a [`Signal::Command`].
    pub(super) fn listen(commands: Sender<Signal>) -> Result<ControlSocket> {
        let (listener, path, dir) = bind_private("control.sock")?;
        std::thread::spawn(move || serve(&listener, &commands));
        Ok(ControlSocket { path, _dir: dir })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

fn serve(listener: &UnixListener, commands: &Sender<Signal>) {
    for stream in listener.incoming().flatten() {
        match answer(&stream) {
            Ok(Some(request)) => {
                if commands.send(Signal::Command(request)).is_err() {
                    return; // the session is over
                }
                let _ = writeln!(&stream, "ok");
            }
            Ok(None) => {}
            Err(error) => {
                let _ = writeln!(&stream, "{error}");
            }
        }
    }
}

/// The request one connection makes; `None` if it went before saying one.
fn answer(stream: &UnixStream) -> std::io::Result<Option<Request>> {
    check_same_user(stream)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut line = String::new();
    BufReader::new(stream.take(MAX_LINE)).read_line(&mut line)?;
    let word = line.trim();
    if word.is_empty() {
        return Ok(None);
    }
    Request::from_word(word).map(Some).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("unknown command `{word}`: restart, undo or quit"),
        )
    })
}

/// Sends `request` to the session listening on `socket` and waits for it to be taken.
pub(super) fn send(socket: &Path, request: Request) -> Result<()> {
    let stream = UnixStream::connect(socket)
        .context(|| format!("could not reach the session at {}", socket.display()))?;
    check_same_user(&stream).context(|| format!("{} is not ours", socket.display()))?;
    stream
        .set_read_timeout(Some(PATIENCE))
        .context(|| "could not configure the connection".into())?;
    writeln!(&stream, "{}", request.word()).context(|| "could not send the command".into())?;
    let mut reply = String::new();
    BufReader::new(stream.take(MAX_LINE * 4))
        .read_line(&mut reply)
        .context(|| "the session did not answer".into())?;
    match reply.trim() {
        "ok" => Ok(()),
        "" => Err(Error::new("the session ended before taking the command")),
        other => Err(Error::new(format!("the session refused: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn each_command_reaches_the_session_and_unknown_ones_are_refused() {
        let (sender, commands) = mpsc::channel();
        let socket = ControlSocket::listen(sender).unwrap();
        for request in [Request::Restart, Request::Rollback, Request::Quit] {
            send(socket.path(), request).unwrap();
            match commands.recv().unwrap() {
                Signal::Command(received) => assert_eq!(received, request),
                _ => panic!("not a command"),
            }
        }
        let stream = UnixStream::connect(socket.path()).unwrap();
        writeln!(&stream, "reboot").unwrap();
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply).unwrap();
        assert_eq!(reply, "unknown command `reboot`: restart, undo or quit\n");
    }

    #[test]
    fn the_socket_is_private_and_goes_with_the_session() {
        use std::os::unix::fs::PermissionsExt;
        let (sender, _commands) = mpsc::channel();
        let socket = ControlSocket::listen(sender).unwrap();
        let path = socket.path().to_path_buf();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(socket);
        assert!(!path.exists());
        let error = send(&path, Request::Quit).unwrap_err().to_string();
        assert!(error.contains("could not reach"), "{error}");
    }
}
