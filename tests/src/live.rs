//! The tests' side of a [`Session`]: over a [`FixtureCrate`], with one patience for every wait,
//! panicking with what hotpatch printed when a wait fails.

use crate::hotpatch_exe;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;
use testkit::fixture::FixtureCrate;
use testkit::session::{Event, Launch, Session};

/// How long anything may take before the test fails (builds share two cores).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A running `hotpatch run --message-format json` over a fixture; the [`Session`] it derefs to
/// has the rest (`pid`, `drain_lines`, `signal_hotpatch`, `events_seen`…).
pub struct LiveSession {
    pub fixture: FixtureCrate,
    session: Session,
}

impl LiveSession {
    /// Starts the session and waits until the program runs and hotpatch is connected to it
    /// (its first output line has appeared).
    pub fn start(fixture: FixtureCrate, program_args: &[&str]) -> LiveSession {
        LiveSession::start_with(fixture, program_args, &Options::default())
    }

    /// [`LiveSession::start`] with hotpatch (and so the program) under the file mode creation
    /// mask `umask`.
    pub fn start_with_umask(
        fixture: FixtureCrate,
        program_args: &[&str],
        umask: Option<libc::mode_t>,
    ) -> LiveSession {
        LiveSession::start_with(
            fixture,
            program_args,
            &Options {
                umask,
                ..Options::default()
            },
        )
    }

    /// [`LiveSession::start`] giving the first build `first_build` (registry dependencies that
    /// may not be compiled yet), then the usual patience to every wait.
    pub fn start_first_build(
        fixture: FixtureCrate,
        program_args: &[&str],
        first_build: Duration,
    ) -> LiveSession {
        LiveSession::start_with(
            fixture,
            program_args,
            &Options {
                first_build,
                ..Options::default()
            },
        )
    }

    /// [`LiveSession::start`] with the program built by the release profile (`--release`).
    pub fn start_release(fixture: FixtureCrate, program_args: &[&str]) -> LiveSession {
        LiveSession::start_with(
            fixture,
            program_args,
            &Options {
                release: true,
                ..Options::default()
            },
        )
    }

    /// [`LiveSession::start`] with these environment variables for hotpatch.
    pub fn start_with_env(
        fixture: FixtureCrate,
        program_args: &[&str],
        env: &[(&str, &str)],
    ) -> LiveSession {
        LiveSession::start_with(
            fixture,
            program_args,
            &Options {
                env,
                ..Options::default()
            },
        )
    }

    fn start_with(fixture: FixtureCrate, program_args: &[&str], options: &Options) -> LiveSession {
        let manifest_path = fixture.manifest_path();
        let launch = launch(&fixture, &manifest_path, program_args, options);
        let mut session = Session::start(&launch).unwrap_or_else(|error| panic!("{error}"));
        session.patience = PATIENCE;
        let mut live = LiveSession { fixture, session };
        live.line_where(|_| true);
        live
    }

    /// Starts `hotpatch attach [PID]` on the fixture's program `pid` (without: the one that
    /// waits), whose `hotpatch run` is gone, and waits until it is attached and watching. The
    /// program's lines still reach the session that started it.
    pub fn attach(fixture: FixtureCrate, pid: Option<u32>) -> LiveSession {
        LiveSession::attach_with_env(fixture, pid, &[])
    }

    /// [`LiveSession::attach`] with these environment variables for hotpatch.
    pub fn attach_with_env(
        fixture: FixtureCrate,
        pid: Option<u32>,
        env: &[(&str, &str)],
    ) -> LiveSession {
        let manifest_path = fixture.manifest_path();
        let options = Options {
            env,
            ..Options::default()
        };
        let session = Session::attach(&launch(&fixture, &manifest_path, &[], &options), pid)
            .unwrap_or_else(|error| panic!("{error}"));
        LiveSession { fixture, session }
    }

    /// The next event named `name`; fails on `compile-error` or a refusal it did not ask for.
    pub fn event(&mut self, name: &str) -> Event {
        self.session
            .wait_event(name)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The next event named `name`, whatever comes before it.
    pub fn event_skipping(&mut self, name: &str) -> Event {
        self.session
            .wait_event_skipping(name)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// The next line of the program's stdout for which `wanted` holds.
    pub fn line_where(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        self.session
            .wait_line(wanted)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Waits for the program to be started again (after a restart) and watched.
    pub fn restarted(&mut self) {
        self.session
            .wait_started()
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Applies `from` → `to` to `src/main.rs` and waits for the patch to be applied.
    pub fn edit(&mut self, from: &str, to: &str) -> Event {
        self.edit_file("src/main.rs", from, to)
    }

    /// Applies `from` → `to` to `file` and waits for the patch to be applied.
    pub fn edit_file(&mut self, file: &str, from: &str, to: &str) -> Event {
        self.fixture.replace_in(file, from, to);
        let applied = self.event("patch-applied");
        self.drain_lines();
        applied
    }
}

impl Deref for LiveSession {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl DerefMut for LiveSession {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

/// How a session starts besides its fixture and program arguments.
pub struct Options<'a> {
    /// The file mode creation mask hotpatch runs with (`None`: this process's).
    pub umask: Option<libc::mode_t>,
    /// The patience for the first build and start.
    pub first_build: Duration,
    /// Environment variables for hotpatch.
    pub env: &'a [(&'a str, &'a str)],
    /// Build with the release profile.
    pub release: bool,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            umask: None,
            first_build: PATIENCE,
            env: &[],
            release: false,
        }
    }
}

/// What runs `fixture`'s program (through `manifest_path`, its manifest) as `options` say.
pub fn launch<'a>(
    fixture: &'a FixtureCrate,
    manifest_path: &'a std::path::Path,
    program_args: &'a [&'a str],
    options: &Options<'a>,
) -> Launch<'a> {
    Launch {
        hotpatch_exe: hotpatch_exe(),
        manifest_path,
        package: None,
        target_dir: &fixture.target_dir,
        program_args,
        patience: options.first_build,
        umask: options.umask,
        env: options.env,
        release: options.release,
    }
}

/// The directories a session of `hotpatch` (pid `hotpatch`) and its program (pid `program`)
/// own: the sockets' in the temporary directory (hotpatch's two, for the program and for
/// `hotpatch restart|undo|quit`, and the one the program listens on for `hotpatch attach`
/// once hotpatch is gone), the patch images' and the session's entry in the store.
pub fn session_dirs(session: &LiveSession, hotpatch: u32, program: u32) -> Vec<PathBuf> {
    let socket_dirs = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with(&format!("hotpatch-{hotpatch}-"))
                || name == format!("hotpatch-program-{program}")
        });
    let patches = session.fixture.target_dir.join("hotpatch/patches");
    let image_dirs = std::fs::read_dir(patches)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{program}-"))
        });
    let entry = session
        .fixture
        .target_dir
        .join(format!("hotpatch/sessions/{hotpatch}"));
    socket_dirs
        .chain(image_dirs)
        .map(|e| e.path())
        .chain(entry.exists().then_some(entry))
        .collect()
}

/// The value of `key=` in a `key=value key=value` line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    testkit::session::field(line, key).unwrap_or_else(|| panic!("no `{key}=` in {line:?}"))
}

/// `field` parsed as a number.
pub fn number(line: &str, key: &str) -> u64 {
    field(line, key)
        .parse()
        .unwrap_or_else(|_| panic!("`{key}` is not a number in {line:?}"))
}

/// Busy callers spin on two cores; at the lowest priority they still call in tight loops,
/// but the compiler that builds each patch gets the CPU first.
pub fn lower_priority(pid: u32) {
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the program's threads") {
        let tid: libc::id_t = task.unwrap().file_name().to_string_lossy().parse().unwrap();
        // SAFETY: setpriority(2) on a thread of the program this test started.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, 19) };
    }
}

/// The edit number `patch` (from 1) of a run that alternates the stress fixtures' `x * 2` and
/// `x * 3`: odd patches make it `x * 3`, even ones bring back `x * 2`.
pub fn alternating_edit(patch: u64) -> (&'static str, &'static str) {
    if patch % 2 == 1 {
        ("    x * 2\n", "    x * 3\n")
    } else {
        ("    x * 3\n", "    x * 2\n")
    }
}
