//! What the person asks for: `r`/`u`/`q` lines on a terminal's stdin, and signals (always).

use super::Signal;
use linker_shim::{Context, Result};
use std::io::BufRead;
use std::sync::mpsc::Sender;

/// What the person (or a tool) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Request {
    Restart,
    Rollback,
    Quit,
    /// A line that is no command: say which ones there are.
    Help,
}

/// Turns keys (when stdin is a terminal) and signals into commands.
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
