//! The runtime's agent in a real child process over a real Unix socket: handshake, applied
//! and refused patches, safe-point mode, and no thread at all without a socket.

use hotreload::protocol::{
    receive, send, Hello, Reply, Request, SlotInfo, SlotUpdate, PROTOCOL_VERSION, SOCKET_ENV,
};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FIXTURE: &str = env!("CARGO_BIN_EXE_agent_fixture");
const PATIENCE: Duration = Duration::from_secs(20);

/// The fixture program, its stdin/stdout, and (when started with one) the socket it joined.
struct Fixture {
    child: Child,
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    agent: Option<(BufReader<UnixStream>, UnixStream)>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn start(with_socket: bool) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let mut command = Command::new(FIXTURE);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .env_remove(SOCKET_ENV);
        if with_socket {
            command.env(SOCKET_ENV, &socket);
        }
        let mut child = command.spawn().unwrap();
        let (lines, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            out.lines()
                .map_while(Result::ok)
                .try_for_each(|l| lines.send(l))
        });
        let agent = with_socket.then(|| {
            let (stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            (BufReader::new(stream.try_clone().unwrap()), stream)
        });
        Fixture {
            stdin: child.stdin.take().unwrap(),
            child,
            stdout,
            agent,
            _dir: dir,
        }
    }

    fn line(&self) -> String {
        self.stdout
            .recv_timeout(PATIENCE)
            .expect("the fixture answers")
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.line()
    }

    fn receive(&mut self) -> Reply {
        let (replies, _) = self.agent.as_mut().unwrap();
        receive(replies).unwrap().expect("the agent answers")
    }

    fn hello(&mut self) -> Hello {
        match self.receive() {
            Reply::Hello(hello) => hello,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// What the program runs, as `Describe` (with `id`) answers it.
    fn describe(&mut self, id: u64) -> Hello {
        self.send(&Request::Describe { id });
        match self.receive() {
            Reply::State {
                id: answered,
                hello,
            } if answered == id => hello,
            other => panic!("expected the state, got {other:?}"),
        }
    }

    fn send(&mut self, request: &Request) {
        send(&mut self.agent.as_mut().unwrap().1, request).unwrap();
    }

    fn apply(&mut self, id: u64, updates: Vec<SlotUpdate>) -> Reply {
        self.send(&Request::Apply {
            id,
            image: None,
            updates,
            entries: Vec::new(),
            old_code: Vec::new(),
        });
        self.receive()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn slot<'h>(hello: &'h Hello, name: &str) -> &'h SlotInfo {
    let path = format!("agent_fixture::{name}");
    hello
        .slots
        .iter()
        .find(|s| s.path == path)
        .unwrap_or_else(|| panic!("{path} in {hello:?}"))
}

fn redirect(from: &SlotInfo, to: &SlotInfo) -> SlotUpdate {
    SlotUpdate {
        slot: from.slot,
        fingerprint: from.fingerprint,
        target: to.original,
    }
}

fn build_id_on_disk(exe: &str) -> String {
    let notes = Command::new("readelf")
        .args(["-n", exe])
        .output()
        .expect("readelf");
    let notes = String::from_utf8(notes.stdout).unwrap();
    let line = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("a build-id note");
    line.trim().to_string()
}

#[test]
fn handshake_then_patches_over_a_real_socket() {
    let mut app = Fixture::start(true);
    let hello = app.hello();
    assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
    assert_eq!(hello.pid, app.child.id());
    assert_eq!(hello.build_id, build_id_on_disk(FIXTURE));
    assert_ne!(hello.load_bias, 0);
    let mut paths: Vec<_> = hello.slots.iter().map(|s| s.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "agent_fixture::number",
            "agent_fixture::other_word",
            "agent_fixture::word"
        ]
    );
    assert!(hello.slots.iter().all(|s| s.current == s.original));
    let (word, other_word, number) = (
        slot(&hello, "word"),
        slot(&hello, "other_word"),
        slot(&hello, "number"),
    );

    assert_eq!(app.ask("word"), "word=old number=1");
    assert_eq!(
        app.apply(1, vec![redirect(word, other_word)]),
        Reply::Applied {
            id: 1,
            generation: 1,
            stopped_us: 0,
            old_code_running: Vec::new(),
        }
    );
    assert_eq!(
        app.line(),
        "on_patch generation=1 rewired=agent_fixture::word"
    );
    assert_eq!(app.ask("word"), "word=new number=1");

    // Refusals change nothing and say why.
    let wrong_signature = SlotUpdate {
        slot: word.slot,
        fingerprint: number.fingerprint,
        target: number.original,
    };
    let refusals = [
        (
            wrong_signature,
            "signature of `agent_fixture::word` changed",
        ),
        (
            SlotUpdate {
                slot: 0x1234,
                ..redirect(word, other_word)
            },
            "no #[hotreload] slot at 0x1234",
        ),
        (
            SlotUpdate {
                target: word.slot,
                ..redirect(word, other_word)
            },
            "is not in executable memory",
        ),
    ];
    for (id, (update, reason)) in (2..).zip(refusals) {
        match app.apply(id, vec![update]) {
            Reply::Refused {
                id: got,
                reason: why,
            } => assert!(got == id && why.contains(reason), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let half_bad = vec![
        redirect(number, number),
        SlotUpdate {
            slot: 0x10,
            ..redirect(word, word)
        },
    ];
    assert!(
        matches!(app.apply(9, half_bad), Reply::Refused { .. }),
        "all or nothing"
    );
    assert_eq!(app.ask("word"), "word=new number=1");

    // A malformed line is skipped; the next patch (a rollback) still applies.
    app.agent
        .as_mut()
        .unwrap()
        .1
        .write_all(b"{nonsense\n")
        .unwrap();
    assert_eq!(
        app.apply(10, vec![redirect(word, word)]),
        Reply::Applied {
            id: 10,
            generation: 2,
            stopped_us: 0,
            old_code_running: Vec::new(),
        }
    );
    assert_eq!(
        app.line(),
        "on_patch generation=2 rewired=agent_fixture::word"
    );
    assert_eq!(app.ask("word"), "word=old number=1");

    // hotpatch going away leaves the program running.
    app.agent = None;
    assert_eq!(app.ask("word"), "word=old number=1");
}

#[test]
fn safe_point_mode_applies_only_at_safe_points() {
    let mut app = Fixture::start(true);
    let hello = app.hello();
    assert_eq!(app.ask("safe-point-mode"), "mode=safe-point");
    app.send(&Request::Apply {
        id: 1,
        image: None,
        updates: vec![redirect(slot(&hello, "word"), slot(&hello, "other_word"))],
        entries: Vec::new(),
        old_code: Vec::new(),
    });
    // The agent answers while the patch waits: it says the patch is queued, nothing applied.
    let state = app.describe(2);
    assert_eq!((state.pending, state.generation), (vec![1], 0));
    // Until a safe point takes it, the patch waits: every call still runs the old code, and
    // each safe point before the agent has queued it finds nothing to apply.
    let mut safe_points = 0;
    loop {
        assert_eq!(
            app.ask("word"),
            "word=old number=1",
            "no change between safe points"
        );
        match app.ask("safe-point").as_str() {
            "safe-point generation=0" => {
                safe_points += 1;
                assert!(safe_points < 400, "the agent never queued the patch");
                std::thread::sleep(Duration::from_millis(25));
            }
            applied => {
                assert_eq!(applied, "on_patch generation=1 rewired=agent_fixture::word");
                break;
            }
        }
    }
    assert_eq!(app.line(), "safe-point generation=1");
    assert_eq!(
        app.receive(),
        Reply::Applied {
            id: 1,
            generation: 1,
            stopped_us: 0,
            old_code_running: Vec::new(),
        }
    );
    assert_eq!(app.ask("word"), "word=new number=1");
    let state = app.describe(3);
    assert_eq!((&state.pending[..], state.generation), (&[][..], 1));
    assert_eq!(
        slot(&state, "word").current,
        slot(&hello, "other_word").original
    );
}

#[test]
fn without_a_socket_no_thread_is_started() {
    let mut app = Fixture::start(false);
    assert_eq!(app.ask("threads"), "threads=1");
    assert_eq!(app.ask("word"), "word=old number=1");
    let mut with = Fixture::start(true);
    with.hello();
    assert_eq!(
        with.ask("threads"),
        "threads=2",
        "the agent is the only extra thread"
    );
}
