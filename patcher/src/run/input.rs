//! What the person asks for: signals (always), `hotpatch restart|undo|quit` through the
//! control socket (always, see [`super::control`]), and `r`/`u`/`q` lines on stdin with
//! `--keys`. hotpatch reads no keys by default: the program owns the terminal, and a terminal
//! UI reads it directly (`/dev/tty`), so two readers would split its keys between them.

use super::Signal;
use linker_shim::{Context, Result};
use std::io::BufRead;
use std::sync::mpsc::Sender;

/// What the person (or a tool) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    Restart,
    Rollback,
    Quit,
    /// A line that is no command: say which ones there are.
    Help,
}

impl Request {
    /// The command's name: its subcommand, and its word on the control socket.
    pub(crate) fn word(self) -> &'static str {
        match self {
            Request::Restart => "restart",
            Request::Rollback => "undo",
            Request::Quit => "quit",
            Request::Help => "help",
        }
    }

    /// The command named `word` (not `help`: that one only answers a line that is no command).
    pub(super) fn from_word(word: &str) -> Option<Request> {
        [Request::Restart, Request::Rollback, Request::Quit]
            .into_iter()
            .find(|request| request.word() == word)
    }
}

/// Turns signals, and stdin's lines if `keys`, into commands.
pub(super) fn listen_for_commands(keys: bool, commands: Sender<Signal>) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGUSR1, SIGUSR2, SIGINT, SIGTERM])
        .context(|| "could not install signal handlers".into())?;
    let by_signal = commands.clone();
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let request = match signal {
                SIGUSR1 => Request::Restart,
                SIGUSR2 => Request::Rollback,
                _ => Request::Quit,
            };
            if by_signal.send(Signal::Command(request)).is_err() {
                break;
            }
        }
    });
    if keys {
        std::thread::spawn(move || {
            for line in std::io::stdin()
                .lock()
                .lines()
                .map_while(std::result::Result::ok)
            {
                let request = match line.trim() {
                    "r" => Request::Restart,
                    "u" => Request::Rollback,
                    "q" => Request::Quit,
                    _ => Request::Help,
                };
                if commands.send(Signal::Command(request)).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}
