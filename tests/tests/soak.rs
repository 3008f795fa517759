//! Many patches in one session, each new code — so each maps an image of its own, more of them
//! than the 108 fixed address windows images once had: every patch applies and runs,
//! hotpatch's file descriptors stay flat, the program's memory grows by about its images'
//! pages, and quitting leaves nothing behind.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::process::{image_pages_kib, open_fds, status_kib};
use testkit::session::Event;
use tests::live::{session_dirs, LiveSession};

const PROGRAM: &str = include_str!("../fixtures/soak.rs");

/// Patches in the session (each a new image).
const PATCHES: u64 = 200;
/// Patches after which hotpatch's descriptors and the program's memory are first read: what
/// a session opens or allocates once is there by then.
const WARM_UP: u64 = 20;

#[test]
fn two_hundred_patches_each_with_a_new_image() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut session = LiveSession::start(FixtureCrate::create(base, "soak", PROGRAM), &[]);
    let (hotpatch, program) = (session.hotpatch_pid(), session.pid);
    let mut warm = (0, 0);
    let mut image_kb = 0;
    let mut stopped_ms = Vec::new();
    for patch in 1..=PATCHES {
        let value = 1000 + patch;
        let applied = session.edit(&format!("    {}\n", value - 1), &format!("    {value}\n"));
        let Event::PatchApplied {
            image: Some(image),
            reused: false,
            ms,
            ..
        } = &applied
        else {
            panic!("patch {patch} is new code, so a new image: {applied:?}");
        };
        stopped_ms.push(ms.stopped);
        let shown = format!("value={value}");
        session.line_where(|line| line == shown);
        if patch == WARM_UP {
            warm = (
                open_fds(hotpatch).unwrap(),
                status_kib(program, "VmRSS:").unwrap(),
            );
        } else if patch > WARM_UP {
            image_kb += image_pages_kib(image).unwrap();
        }
    }
    let (fds, rss) = (
        open_fds(hotpatch).unwrap(),
        status_kib(program, "VmRSS:").unwrap(),
    );
    let growth = rss as i64 - warm.1 as i64;
    eprintln!(
        "after {WARM_UP} patches: hotpatch {} fds, program RSS {} kB; after {PATCHES}: {fds} fds, \
         {rss} kB ({growth:+} kB; the {} images since map {image_kb} kB); threads stopped \
         {:.2} ms at patch {WARM_UP}, {:.2} ms at patch {PATCHES}",
        warm.0,
        warm.1,
        PATCHES - WARM_UP,
        stopped_ms[WARM_UP as usize - 1],
        stopped_ms[PATCHES as usize - 1],
    );
    assert!(
        fds <= warm.0 + 2,
        "hotpatch's descriptors stay flat: {} after {WARM_UP} patches, {fds} after {PATCHES}",
        warm.0
    );
    // Measured: 12 kB of pages per image, and about 1.5 kB more per patch (the runtime's
    // tables, the unwinder's registration). A bound 8 kB above that per patch still fails
    // if each image cost twice its pages.
    let bound = image_kb + 8 * (PATCHES - WARM_UP);
    assert!(
        growth <= bound as i64,
        "the program grows by about its images: {growth:+} kB over {} patches whose images map {image_kb} kB (bound {bound} kB)",
        PATCHES - WARM_UP
    );

    session.signal_hotpatch(libc::SIGTERM);
    session.wait_hotpatch_exit();
    assert_eq!(
        session_dirs(&session, hotpatch, program),
        Vec::<std::path::PathBuf>::new(),
        "quitting removes the socket's directory and every image"
    );
}
