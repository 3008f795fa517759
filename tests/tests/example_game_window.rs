//! `examples/game-window` in a real X server (Xvfb): the square's color is edited while the
//! game loop runs, and screenshots of the screen, taken from outside the program, show the
//! square in the old color, then in the new one; the loop's frame count goes on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::session::Event;
use tests::examples::start_example;
use tests::live::{number, PATIENCE};

/// The square's side in the example: its pixels in one color.
const SQUARE: usize = 40 * 40;
const RED: [u8; 3] = [0xff, 0x00, 0x00];
const BLUE: [u8; 3] = [0x00, 0x80, 0xff];

#[test]
fn the_square_changes_color_in_the_window_while_the_game_loop_runs_on() {
    let xvfb = Xvfb::start();
    // The one test of this file: nothing else reads the environment meanwhile. hotpatch, and
    // so the program, inherit it.
    std::env::set_var("DISPLAY", &xvfb.display);
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut session = start_example(base, "game-window", &[]);
    let program = session.pid;

    let before = session.line_where(|line| number(line, "frame") >= 60);
    let shot = xvfb.screenshot_until(|shot| count(shot, RED) == SQUARE);
    assert_eq!(count(&shot, BLUE), 0, "nothing blue yet");

    let saved = Instant::now();
    let patch = session.edit("    0xff_00_00\n", "    0x00_80_ff\n");
    let Event::PatchApplied { ms, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    let shot = xvfb.screenshot_until(|shot| count(shot, BLUE) == SQUARE);
    let shown = saved.elapsed();
    assert_eq!(count(&shot, RED), 0, "no red square left");

    // The loop goes on from where it was: the same process, its count never started over.
    let after = session.line_where(|_| true);
    assert_eq!(session.pid, program, "the same process");
    let (frame_before, frame_after) = (number(&before, "frame"), number(&after, "frame"));
    assert!(frame_after > frame_before, "{after} continues {before}");
    assert_eq!(frame_after % 30, 0, "in the same sequence: {after}");
    assert_eq!(number(&after, "x"), frame_after % 280, "{after}");
    eprintln!(
        "square color patched at frame ~{frame_after}: applied in {} ms (rustc {}), new pixels on screen {} ms after the save",
        ms.total,
        ms.rustc,
        shown.as_millis()
    );
}

/// A virtual X server on a display number it picked itself; killed when dropped.
struct Xvfb {
    child: Child,
    /// `:N`.
    display: String,
}

impl Xvfb {
    /// Starts Xvfb and waits until it accepts clients (it prints its display number then).
    fn start() -> Xvfb {
        let mut child = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "640x480x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (`apt-get install xvfb`; .ci/run installs it)");
        let mut number = String::new();
        BufReader::new(child.stdout.take().expect("Xvfb's stdout"))
            .read_line(&mut number)
            .expect("Xvfb's display number");
        assert!(!number.trim().is_empty(), "Xvfb did not start");
        Xvfb {
            child,
            display: format!(":{}", number.trim()),
        }
    }

    /// The whole screen's RGB pixels (from ImageMagick's `import`), the first screenshot for
    /// which `wanted` holds.
    fn screenshot_until(&self, wanted: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let output = Command::new("import")
                .args([
                    "-display",
                    &self.display,
                    "-window",
                    "root",
                    "-depth",
                    "8",
                    "ppm:-",
                ])
                .output()
                .expect("ImageMagick's import (.ci/run installs it)");
            assert!(output.status.success(), "import: {output:?}");
            let pixels = ppm_pixels(&output.stdout).to_vec();
            if wanted(&pixels) {
                return pixels;
            }
            assert!(Instant::now() < deadline, "no such screen in {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The RGB bytes of a binary PPM with 8-bit channels (`P6 W H 255`, then one whitespace).
fn ppm_pixels(ppm: &[u8]) -> &[u8] {
    let mut rest = ppm;
    for expected in ["P6", "", "", "255"] {
        rest = rest.trim_ascii_start();
        let end = rest
            .iter()
            .position(u8::is_ascii_whitespace)
            .expect("a PPM header");
        let token = std::str::from_utf8(&rest[..end]).expect("a PPM header");
        assert!(
            expected.is_empty() || token == expected,
            "PPM header {token}"
        );
        rest = &rest[end..];
    }
    &rest[1..]
}

/// How many pixels of `pixels` (RGB) are `color`.
fn count(pixels: &[u8], color: [u8; 3]) -> usize {
    pixels
        .chunks_exact(3)
        .filter(|pixel| *pixel == color)
        .count()
}
