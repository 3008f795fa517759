//! A full-screen terminal UI (ratatui on crossterm) under `hotpatch run`, with no flag, in a
//! real terminal: a tmux server of the test's own. The program owns the terminal — every key
//! typed reaches it, no hotpatch line is drawn over its screen — while an edit patches it with
//! its state kept, and `hotpatch log`, `undo` and `quit`, run beside it as from another
//! terminal, drive the session. Needs `tmux` (`.ci/run` installs it).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use testkit::checkout::checkout_dir;
use testkit::fixture::FixtureCrate;
use tests::hotpatch_exe;
use tests::live::PATIENCE;

/// The first build compiles ratatui and its dependencies, beside the other tests' builds.
const FIRST_BUILD_PATIENCE: Duration = Duration::from_secs(600);

/// A tmux server of its own (`-L`, no configuration) with one 80×24 window running a command;
/// killed when dropped.
struct Tmux {
    server: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in the window; the window stays once the
    /// command ends, so its screen can be read.
    fn start(command: &str) -> Tmux {
        let tmux = Tmux {
            server: format!("hotpatch-test-{}", std::process::id()),
        };
        let output = tmux.run(&[
            "start-server",
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
            ";",
            "new-session",
            "-d",
            "-x",
            "80",
            "-y",
            "24",
            "-s",
            "app",
            command,
        ]);
        assert!(
            output.status.success(),
            "tmux: {output:?} (is tmux installed?)"
        );
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.server, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("run tmux (is it installed?)")
    }

    /// What the window shows now, one line per row.
    fn screen(&self) -> String {
        let output = self.run(&["capture-pane", "-p", "-t", "app"]);
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Types `key` as a person would.
    fn press(&self, key: &str) {
        assert!(self.run(&["send-keys", "-t", "app", key]).status.success());
    }

    /// Waits until the screen shows what `wanted` looks for; returns it.
    fn wait_screen(&self, what: &str, patience: Duration, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let screen = self.screen();
            if wanted(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the screen did not show {what} within {patience:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// `s` quoted for the shell.
fn quoted(s: &Path) -> String {
    format!("'{}'", s.display().to_string().replace('\'', r"'\''"))
}

/// `hotpatch SUBCOMMAND` on the fixture's project, as typed in another terminal.
fn hotpatch(fixture: &FixtureCrate, subcommand: &str) -> Output {
    Command::new(hotpatch_exe())
        .arg(subcommand)
        .arg("--manifest-path")
        .arg(fixture.manifest_path())
        .arg("--target-dir")
        .arg(&fixture.target_dir)
        .output()
        .expect("run hotpatch")
}

/// Waits until the session's log (`hotpatch log`) has a line containing `needle`.
fn wait_log(fixture: &FixtureCrate, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let output = hotpatch(fixture, "log");
        let log = String::from_utf8_lossy(&output.stdout).into_owned();
        if log.contains(needle) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no `{needle}` in the log within {PATIENCE:?}: {log}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when every line of `screen` is the program's own (`label=…`, `presses=…`, blank).
fn only_the_program_s(screen: &str) -> bool {
    screen.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with("label=") || line.starts_with("presses=")
    })
}

#[test]
fn a_terminal_ui_gets_every_key_is_patched_and_never_drawn_over() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::copy_package(base, "tui", &checkout_dir().join("examples/tui"));
    // The shell says how hotpatch exited (tmux may see the window's end before its status).
    let command = format!(
        "{} run --manifest-path {} --target-dir {}; echo hotpatch-exit=$?",
        quoted(hotpatch_exe()),
        quoted(&fixture.manifest_path()),
        quoted(&fixture.target_dir)
    );
    let tmux = Tmux::start(&command);
    tmux.wait_screen("the program", FIRST_BUILD_PATIENCE, |screen| {
        screen.contains("label=before") && screen.contains("presses=0")
    });
    // hotpatch watches: it said so in its log, not on the program's screen.
    wait_log(&fixture, "Watching");

    for _ in 0..10 {
        tmux.press("x");
    }
    let counted = tmux.wait_screen("10 presses", PATIENCE, |s| s.contains("presses=10"));
    assert!(only_the_program_s(&counted), "{counted}");

    fixture.replace("label=before", "label=after");
    let patched = tmux.wait_screen("the patched label", PATIENCE, |screen| {
        screen.contains("label=after")
    });
    assert!(
        patched.contains("presses=10"),
        "the count is kept:\n{patched}"
    );
    wait_log(&fixture, "Patched");
    assert!(only_the_program_s(&tmux.screen()), "{}", tmux.screen());

    let undo = hotpatch(&fixture, "undo");
    assert!(undo.status.success(), "{undo:?}");
    tmux.wait_screen("the label restored", PATIENCE, |screen| {
        screen.contains("label=before") && screen.contains("presses=10")
    });
    tmux.press("x");
    tmux.wait_screen("11 presses", PATIENCE, |s| s.contains("presses=11"));
    assert!(only_the_program_s(&tmux.screen()), "{}", tmux.screen());

    let quit = hotpatch(&fixture, "quit");
    assert!(quit.status.success(), "{quit:?}");
    // hotpatch stopped the program (SIGTERM) and exits with its status (128 + 15); the program
    // left the terminal in raw mode on its alternate screen, and hotpatch gave the terminal
    // back and printed what it held.
    let after = tmux.wait_screen("hotpatch's exit", PATIENCE, |s| {
        s.contains("hotpatch-exit=")
    });
    assert!(after.contains("hotpatch-exit=143"), "{after}");
    assert!(
        after.contains("Patched tui") && after.contains("Exited tui"),
        "{after}"
    );
    let gone = hotpatch(&fixture, "quit");
    assert!(!gone.status.success(), "no session runs any more: {gone:?}");
}
