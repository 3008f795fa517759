//! The terminal session: alternate screen and hidden cursor while running, everything restored
//! on exit, including after Ctrl-C.

use std::io::{self, Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Alternate screen, hidden cursor, no line wrapping (a narrow terminal clips instead of
/// scrambling the picture), cleared.
const ENTER: &str = "\x1b[?1049h\x1b[?25l\x1b[?7l\x1b[2J";
/// Undoes `ENTER`, in reverse.
const LEAVE: &str = "\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l";

/// Set by the SIGINT/SIGTERM handler; the frame loop polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Makes the first Ctrl-C (or SIGTERM) ask the frame loop to stop, so the screen gets
/// restored. A second one kills the process as usual, in case an edit hung the loop.
pub fn stop_on_interrupt() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `action` starts zeroed (a valid `sigaction`), gets a handler with the
        // signature `sa_handler` expects and an initialised empty mask. The handler only stores
        // to an atomic, which is async-signal-safe. SA_RESETHAND restores the default action
        // after one delivery.
        let status = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note_interrupt as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if status != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether Ctrl-C (or SIGTERM) has arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The terminal while the animation owns it; dropping it gives the terminal back.
pub struct Screen {
    stdout: Stdout,
}

impl Screen {
    /// Switches to the alternate screen and hides the cursor.
    pub fn enter() -> io::Result<Screen> {
        let mut stdout = io::stdout();
        stdout.write_all(ENTER.as_bytes())?;
        stdout.flush()?;
        Ok(Screen { stdout })
    }

    /// Draws `picture` from the top-left corner in one write, so frames never tear.
    pub fn show(&mut self, picture: &str) -> io::Result<()> {
        let mut out = self.stdout.lock();
        out.write_all(b"\x1b[H")?;
        out.write_all(picture.as_bytes())?;
        out.write_all(b"\x1b[J")?;
        out.flush()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        // Nothing useful to do if the terminal is gone.
        let _ = self.stdout.write_all(LEAVE.as_bytes());
        let _ = self.stdout.flush();
    }
}
