//! Where `hotpatch run`'s human lines go. The program owns the terminal: a full-screen terminal
//! UI switches it out of the mode hotpatch found it in (raw or no-echo: crossterm, ncurses and
//! every TUI library do, since they read keys one by one), and a line written then would be
//! drawn over its screen. So while the terminal is switched, lines are held, and printed once
//! the program gives the terminal back or ends. Every line also goes to the session's log,
//! which `hotpatch log --follow` shows in another terminal.
//!
//! The terminal's mode is the one signal every TUI gives without hotpatch standing between it
//! and the terminal: the alternate screen, by contrast, is visible only to whoever reads the
//! program's output, which would take a pseudo-terminal of hotpatch's own in front of it.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;

/// Where human status lines go (`hotpatch run --status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusMode {
    /// stderr, but held while the program has switched the terminal to raw or no-echo mode
    /// (a full-screen UI), and printed when it switches back or ends
    #[default]
    Auto,
    /// stderr, always (also over a full-screen UI)
    Stderr,
    /// only the session's log: `hotpatch log --follow` in another terminal
    Log,
}

/// The session's human lines: its log, and stderr as [`StatusMode`] says.
pub struct StatusLines {
    mode: StatusMode,
    /// stderr's terminal mode when hotpatch started; `None` when stderr is no terminal.
    found: Option<libc::termios>,
    log: RefCell<Log>,
    /// Lines not printed yet because the program has the terminal.
    held: RefCell<Vec<String>>,
}

/// The session's log file.
enum Log {
    /// Not open yet (the session learns where it goes after its first build): the lines
    /// written so far.
    Waiting(Vec<String>),
    Open(File),
    /// No log: `hotpatch build`'s lines, or a session that could not create one.
    None,
}

impl StatusLines {
    /// Lines of a session, which will have a log ([`StatusLines::set_log`]).
    pub fn new(mode: StatusMode) -> StatusLines {
        StatusLines::with_log(mode, Log::Waiting(Vec::new()))
    }

    /// Lines that go nowhere but where `mode` says.
    pub fn unlogged(mode: StatusMode) -> StatusLines {
        StatusLines::with_log(mode, Log::None)
    }

    fn with_log(mode: StatusMode, log: Log) -> StatusLines {
        StatusLines {
            mode,
            found: terminal_mode(),
            log: RefCell::new(log),
            held: RefCell::new(Vec::new()),
        }
    }

    /// From now on lines are appended to `file`, starting with those written so far; `None`:
    /// there will be no log.
    pub fn set_log(&self, file: Option<File>) {
        let earlier = self.log.replace(file.map_or(Log::None, Log::Open));
        if let (Log::Waiting(lines), Log::Open(file)) = (earlier, &mut *self.log.borrow_mut()) {
            for line in lines {
                let _ = writeln!(file, "{line}");
            }
        }
    }

    /// Writes one line (it may hold several, as a compile error does).
    pub fn write(&self, line: &str) {
        match &mut *self.log.borrow_mut() {
            Log::Waiting(lines) => lines.push(line.to_owned()),
            Log::Open(file) => {
                let _ = writeln!(file, "{line}");
            }
            Log::None => {}
        }
        match self.mode {
            StatusMode::Log => {}
            StatusMode::Stderr => eprintln!("{line}"),
            StatusMode::Auto if self.terminal_taken() => {
                self.held.borrow_mut().push(line.to_owned());
            }
            StatusMode::Auto => {
                self.print_held();
                eprintln!("{line}");
            }
        }
    }

    /// The program ended: if it left the terminal switched (killed, or crashed without
    /// restoring it), puts back the mode hotpatch found and leaves the alternate screen, as
    /// the program would have; then prints the lines held meanwhile.
    pub fn program_ended(&self) {
        if let Some(found) = self.found.as_ref().filter(|_| self.terminal_taken()) {
            // SAFETY: `found` is a termios tcgetattr(3) filled in for this same descriptor;
            // tcsetattr(3) only reads it.
            unsafe { libc::tcsetattr(libc::STDERR_FILENO, libc::TCSADRAIN, found) };
            // Normal screen buffer, cursor shown.
            eprint!("\x1b[?1049l\x1b[?25h");
        }
        self.print_held();
    }

    /// True when the program has switched stderr's terminal out of canonical or echo mode.
    fn terminal_taken(&self) -> bool {
        let (Some(found), Some(now)) = (&self.found, terminal_mode()) else {
            return false;
        };
        switched(found, &now)
    }

    fn print_held(&self) {
        for line in self.held.borrow_mut().drain(..) {
            eprintln!("{line}");
        }
    }
}

/// stderr's terminal mode, or `None` when stderr is not a terminal.
fn terminal_mode() -> Option<libc::termios> {
    let mut mode = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: tcgetattr(3) writes a whole termios into `mode` when it returns 0 (and fails
    // with ENOTTY, writing nothing we read, when stderr is not a terminal).
    if unsafe { libc::tcgetattr(libc::STDERR_FILENO, mode.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: tcgetattr returned 0, so it filled `mode` in.
    Some(unsafe { mode.assume_init() })
}

/// True when `now` has line editing or echo off where `found` had it on: what a program does
/// to read keys one by one.
fn switched(found: &libc::termios, now: &libc::termios) -> bool {
    found.c_lflag & !now.c_lflag & (libc::ICANON | libc::ECHO) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(c_lflag: libc::tcflag_t) -> libc::termios {
        // SAFETY: termios is plain integers and arrays of them: all zeroes is a valid value.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        mode.c_lflag = c_lflag;
        mode
    }

    #[test]
    fn raw_or_no_echo_is_a_switched_terminal() {
        let cooked = mode(libc::ICANON | libc::ECHO | libc::ISIG);
        assert!(!switched(&cooked, &cooked));
        assert!(switched(&cooked, &mode(libc::ISIG)), "raw");
        assert!(
            switched(&cooked, &mode(libc::ICANON | libc::ISIG)),
            "no echo"
        );
        // A terminal hotpatch found raw already: the program changed nothing.
        assert!(!switched(&mode(0), &mode(0)));
    }

    #[test]
    fn lines_written_before_the_log_opens_go_into_it_first() {
        let status = StatusLines::new(StatusMode::Log);
        status.write("Recorded app");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        status.set_log(Some(File::create(&path).unwrap()));
        status.write("Patched app");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "Recorded app\nPatched app\n"
        );
    }
}
