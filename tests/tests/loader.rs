//! The patch-image loader on real images: linked at test time by rustc + rust-lld the way
//! the patcher links them, loaded into this test process (and, through the agent, into a
//! child), run, unwound through, refused when they must be.

use hotreload::loader::{load, LoadedImage};
use hotreload::protocol::{receive, send, Hello, PatchImage, Reply, Request, SlotUpdate};
use object::{Object, ObjectSymbol};
use std::ffi::c_void;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tests::image::{link_image, link_sample, ImageSpec};

/// Bumped by the image's code: proves it binds to *this* executable's static.
#[no_mangle]
pub static LOADER_TEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// −256, −512 and −768 MiB in the executable's link-time coordinates: distinct per test, since
/// the tests of this file share one address space.
const BASE_FOR_RUNNING: u64 = 0xffff_ffff_f000_0000;
const BASE_FOR_REFUSALS: u64 = 0xffff_ffff_e000_0000;
const BASE_FOR_CRAFTED: u64 = 0xffff_ffff_d000_0000;

/// Link-time address of `name` in the ELF file at `path`, from its `.symtab`.
fn symbol_value(path: &Path, name: &str) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let file = object::File::parse(&*bytes).unwrap();
    file.symbols()
        .find(|symbol| symbol.name() == Ok(name))
        .unwrap_or_else(|| panic!("{name} in {}", path.display()))
        .address()
}

/// Builds the patch for this test process at `base`.
fn link_patch_for_this_process(dir: &Path, base: u64) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    link_sample(dir, base, symbol_value(&exe, "LOADER_TEST_COUNTER"))
}

fn load_bias() -> u64 {
    hotreload::identity::executable().load_bias
}

/// libgcc's view of the frames it can unwind.
#[repr(C)]
struct DwarfEhBases {
    text: *mut c_void,
    data: *mut c_void,
    function: *mut c_void,
}

extern "C" {
    fn _Unwind_Find_FDE(pc: *const c_void, bases: *mut DwarfEhBases) -> *const c_void;
}

fn unwinder_knows(address: u64) -> bool {
    let mut bases = DwarfEhBases {
        text: std::ptr::null_mut(),
        data: std::ptr::null_mut(),
        function: std::ptr::null_mut(),
    };
    // SAFETY: `_Unwind_Find_FDE` only reads the unwinder's tables and fills `bases`.
    !unsafe { _Unwind_Find_FDE(address as *const c_void, &mut bases) }.is_null()
}

/// Permissions of the mapping holding `address`, as `/proc/self/maps` shows them.
fn mapping_permissions(address: u64) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        let (range, rest) = line.split_once(' ')?;
        let (start, end) = range.split_once('-')?;
        let range = u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?;
        range.contains(&address).then(|| rest[..4].to_string())
    })
}

extern "C-unwind" fn forty_one() -> u64 {
    41
}

extern "C-unwind" fn panics() -> u64 {
    panic!("raised below a patched frame")
}

#[test]
fn loads_relocates_runs_and_unloads_a_real_image() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = link_patch_for_this_process(dir.path(), BASE_FOR_RUNNING);
    let bias = load_bias();
    let started = Instant::now();
    let image =
        load(&image_path, bias, file_checksum(&image_path)).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("loaded {} in {:?}", image_path.display(), started.elapsed());
    let at = |name| bias.wrapping_add(symbol_value(&image_path, name));
    assert_eq!(image.range().start, bias.wrapping_add(BASE_FOR_RUNNING));
    assert!(image.range().contains(&at("total_length")));

    // SAFETY: each address is the runtime address of an image function with this
    // signature (see `tests::image::SAMPLE_SOURCE`); the image stays mapped until `unload` below.
    let (word_initial, total_length, bump_counter, call_and_add_one) = unsafe {
        (
            std::mem::transmute::<u64, extern "C" fn(usize) -> u8>(at("word_initial")),
            std::mem::transmute::<u64, extern "C" fn() -> usize>(at("total_length")),
            std::mem::transmute::<u64, extern "C" fn() -> u64>(at("bump_counter")),
            std::mem::transmute::<u64, extern "C-unwind" fn(extern "C-unwind" fn() -> u64) -> u64>(
                at("call_and_add_one"),
            ),
        )
    };
    assert_eq!(
        [0, 1, 2, 3].map(|index| word_initial(index)),
        [b'a', b'b', b'g', 0]
    );
    assert_eq!(total_length(), "alphabetagamma".len());
    LOADER_TEST_COUNTER.store(41, Ordering::SeqCst);
    assert_eq!(bump_counter(), 42);
    assert_eq!(LOADER_TEST_COUNTER.load(Ordering::SeqCst), 42);

    assert_eq!(call_and_add_one(forty_one), 42);
    let caught = std::panic::catch_unwind(|| call_and_add_one(panics)).unwrap_err();
    assert_eq!(
        caught.downcast_ref::<&str>(),
        Some(&"raised below a patched frame")
    );
    assert!(unwinder_knows(at("call_and_add_one")));

    assert_eq!(
        mapping_permissions(image.range().start).as_deref(),
        Some("r--p")
    );
    assert_eq!(
        mapping_permissions(at("total_length")).as_deref(),
        Some("r-xp")
    );
    // The table of pointers and the GOT were relocated, then made read-only.
    let relro = program_header(&image_path, object::elf::PT_GNU_RELRO).expect("PT_GNU_RELRO");
    assert_eq!(
        mapping_permissions(bias.wrapping_add(relro.vaddr)).as_deref(),
        Some("r--p")
    );

    let range = image.range();
    // SAFETY: the functions above returned and are not called again.
    unsafe { image.unload() }.unwrap();
    assert!(!unwinder_knows(at("call_and_add_one")));
    assert_eq!(mapping_permissions(range.start), None);
    assert_eq!(mapping_permissions(range.end - 1), None);
}

/// Where a program header of the ELF image at `path` sits in the file, and its address.
struct ProgramHeaderAt {
    offset: usize,
    vaddr: u64,
}

fn program_header(path: &Path, p_type: u32) -> Option<ProgramHeaderAt> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let bytes = std::fs::read(path).unwrap();
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(&*bytes).unwrap();
    let endian = object::LittleEndian;
    let table = header.e_phoff(endian) as usize;
    header
        .program_headers(endian, &*bytes)
        .unwrap()
        .iter()
        .enumerate()
        .find(|(_, program)| program.p_type(endian) == p_type)
        .map(|(index, program)| ProgramHeaderAt {
            offset: table + index * size_of::<object::elf::ProgramHeader64<object::LittleEndian>>(),
            vaddr: program.p_vaddr(endian),
        })
}

/// File offset of the header of the section named `name`.
fn section_header_offset(bytes: &[u8], name: &str) -> usize {
    use object::read::elf::FileHeader;
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(bytes).unwrap();
    let endian = object::LittleEndian;
    let sections = header.sections(endian, bytes).unwrap();
    let (index, _) = sections.section_by_name(endian, name.as_bytes()).unwrap();
    header.e_shoff(endian) as usize
        + index.0 * size_of::<object::elf::SectionHeader64<object::LittleEndian>>()
}

/// Why `path` is refused when its checksum is right (the other checks are under test).
fn refusal(path: &Path) -> String {
    refusal_with_checksum(path, file_checksum(path))
}

fn refusal_with_checksum(path: &Path, checksum: u64) -> String {
    match load(path, load_bias(), checksum) {
        Ok(image) => panic!("{} was loaded at {:x?}", path.display(), image.range()),
        Err(error) => error.to_string(),
    }
}

fn file_checksum(path: &Path) -> u64 {
    hotreload::protocol::checksum(&std::fs::read(path).unwrap())
}

fn copy_with_mode(from: &Path, to: &Path, mode: u32) {
    std::fs::copy(from, to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn refuses_unsafe_files_corrupt_images_and_taken_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = link_patch_for_this_process(dir.path(), BASE_FOR_REFUSALS);
    let image_bytes = std::fs::read(&image_path).unwrap();

    let group_writable = dir.path().join("group-writable.elf");
    copy_with_mode(&image_path, &group_writable, 0o664);
    let reason = refusal(&group_writable);
    assert!(
        reason.contains("has mode 664: writable by group or others"),
        "{reason}"
    );

    let foreign = dir.path().join("foreign.elf");
    copy_with_mode(&image_path, &foreign, 0o644);
    match std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)) {
        Ok(()) => {
            let reason = refusal(&foreign);
            assert!(reason.contains("is owned by uid 65534"), "{reason}");
        }
        Err(error) => eprintln!("skipped the foreign-owner case (not root?): {error}"),
    }

    let truncated = dir.path().join("truncated.elf");
    std::fs::write(&truncated, &image_bytes[..image_bytes.len() / 2]).unwrap();
    let reason = refusal(&truncated);
    assert!(reason.contains("is corrupt"), "{reason}");
    // What the patcher announced is the whole file: a truncated copy fails the checksum first.
    let reason = refusal_with_checksum(&truncated, hotreload::protocol::checksum(&image_bytes));
    assert!(
        reason.contains("is truncated or damaged: checksum"),
        "{reason}"
    );

    let garbage = dir.path().join("garbage.elf");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).unwrap();
    let reason = refusal(&garbage);
    assert!(reason.contains("is corrupt: not an ELF64"), "{reason}");

    let first: LoadedImage = load(&image_path, load_bias(), file_checksum(&image_path))
        .unwrap_or_else(|e| panic!("{e}"));
    let reason = refusal(&image_path);
    assert!(
        reason.contains(&format!(
            "address range {:#x}..{:#x} is no longer free",
            first.range().start,
            first.range().end
        )),
        "{reason}"
    );
    // SAFETY: nothing ever ran in or pointed into this image.
    unsafe { first.unload() }.unwrap();
}

/// `bytes` with the little-endian `value` written at `offset`, as a file the loader may read.
fn with_word(dir: &Path, name: &str, bytes: &[u8], offset: usize, value: u64) -> PathBuf {
    let mut bytes = bytes.to_vec();
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn refuses_addresses_and_sizes_that_wrap_around() {
    let dir = tempfile::tempdir().unwrap();
    let image_path = link_patch_for_this_process(dir.path(), BASE_FOR_CRAFTED);
    let bytes = std::fs::read(&image_path).unwrap();
    // Offsets of fields in Elf64_Shdr and Elf64_Phdr. The first PT_LOAD holds .eh_frame.
    let (sh_addr, sh_size, p_vaddr, p_memsz) = (16, 32, 16, 40);
    let eh_frame = section_header_offset(&bytes, ".eh_frame");
    let relro = program_header(&image_path, object::elf::PT_GNU_RELRO).unwrap();
    let first_load = program_header(&image_path, object::elf::PT_LOAD).unwrap();
    let cases = [
        (
            "eh-frame-at-the-top",
            eh_frame + sh_addr,
            u64::MAX - 8,
            ".eh_frame at 0xfffffffffffffff7",
        ),
        (
            "eh-frame-endless",
            eh_frame + sh_size,
            u64::MAX,
            "is not inside the file bytes of one readable PT_LOAD",
        ),
        (
            // p_type PT_LOAD, p_flags none: the segment holding .eh_frame is unreadable, and
            // __register_frame would fault on it (found by loader_fuzz).
            "eh-frame-unreadable",
            first_load.offset,
            u64::from(object::elf::PT_LOAD),
            "is not inside the file bytes of one readable PT_LOAD",
        ),
        (
            "relro-endless",
            relro.offset + p_memsz,
            u64::MAX - 0x10,
            "PT_GNU_RELRO at",
        ),
        (
            "load-at-the-top",
            first_load.offset + p_vaddr,
            u64::MAX - 0x100,
            "PT_LOAD at 0xfffffffffffffeff",
        ),
        (
            "load-endless",
            first_load.offset + p_memsz,
            u64::MAX - 0x100,
            "memory size 0xfffffffffffffeff",
        ),
    ];
    for (name, offset, value, expected) in cases {
        let reason = refusal(&with_word(dir.path(), name, &bytes, offset, value));
        assert!(
            reason.contains("is corrupt: ") && reason.contains(expected),
            "{name}: {reason}"
        );
    }
    // The untouched image loads: the refusals were about the words changed.
    let image = load(&image_path, load_bias(), file_checksum(&image_path)).unwrap();
    // SAFETY: nothing ever ran in or pointed into this image.
    unsafe { image.unload() }.unwrap();
}

/// The agent fixture under a socket: its stdin/stdout and both ends of the socket.
struct AgentFixture {
    child: std::process::Child,
    stdout: BufReader<ChildStdout>,
    replies: BufReader<UnixStream>,
    requests: UnixStream,
    hello: Hello,
}

impl AgentFixture {
    fn start(socket: &Path) -> AgentFixture {
        let listener = UnixListener::bind(socket).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agent_fixture"))
            .env(hotreload::protocol::SOCKET_ENV, socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let (requests, _) = listener.accept().unwrap();
        requests
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut replies = BufReader::new(requests.try_clone().unwrap());
        let Some(Reply::Hello(hello)) = receive(&mut replies).unwrap() else {
            panic!("the agent says hello first")
        };
        AgentFixture {
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            replies,
            requests,
            hello,
        }
    }

    fn apply(&mut self, id: u64, image: PatchImage, update: SlotUpdate) -> Reply {
        let request = Request::Apply {
            id,
            image: Some(image),
            updates: vec![update],
            entries: Vec::new(),
            old_code: Vec::new(),
        };
        send(&mut self.requests, &request).unwrap();
        receive(&mut self.replies).unwrap().expect("a reply")
    }

    /// Sends one stdin command and returns the next stdout line.
    fn say(&mut self, command: &str) -> String {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        self.next_line()
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }
}

impl Drop for AgentFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn refusal_reason(reply: Reply) -> String {
    match reply {
        Reply::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn apply_with_an_image_checks_build_id_then_maps_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = AgentFixture::start(&dir.path().join("agent.sock"));
    let image_path = link_image(
        dir.path(),
        &ImageSpec {
            name: "word",
            source:
                "#![no_std]\n#[no_mangle]\npub fn patched_word() -> &'static str { \"patched\" }\n",
            base: BASE_FOR_RUNNING,
            exe_symbols: &[],
            roots: &["patched_word"],
        },
    );
    let word = app
        .hello
        .slots
        .iter()
        .find(|slot| slot.path == "agent_fixture::word")
        .unwrap()
        .clone();
    let to_patched_word = SlotUpdate {
        slot: word.slot,
        fingerprint: word.fingerprint,
        target: app
            .hello
            .load_bias
            .wrapping_add(symbol_value(&image_path, "patched_word")),
    };
    let image = |build_id: &str| PatchImage {
        path: image_path.display().to_string(),
        build_id: build_id.to_string(),
        checksum: file_checksum(&image_path),
    };
    let own_build_id = app.hello.build_id.clone();

    let reason = refusal_reason(app.apply(1, image("00ff"), to_patched_word.clone()));
    assert_eq!(
        reason,
        format!("patch built for another executable (build-id 00ff, this program is {own_build_id}): restart `hotpatch run`")
    );
    assert_eq!(app.say("word"), "word=old number=1");

    let wrong_signature = SlotUpdate {
        fingerprint: word.fingerprint ^ 1,
        ..to_patched_word.clone()
    };
    let reason = refusal_reason(app.apply(2, image(&own_build_id), wrong_signature));
    assert!(
        reason.contains("signature of `agent_fixture::word` changed"),
        "{reason}"
    );
    assert_eq!(app.say("word"), "word=old number=1");

    // Same image, same range again: only possible because the refusal above unmapped it.
    assert_eq!(
        app.apply(3, image(&own_build_id), to_patched_word.clone()),
        Reply::Applied {
            id: 3,
            generation: 1,
            stopped_us: 0,
            old_code_running: Vec::new(),
        }
    );
    assert_eq!(
        app.next_line(),
        "on_patch generation=1 rewired=agent_fixture::word"
    );
    assert_eq!(app.say("word"), "word=patched number=1");

    // An applied image stays mapped, so its range is taken now.
    let reason = refusal_reason(app.apply(4, image(&own_build_id), to_patched_word));
    assert!(reason.contains("is no longer free"), "{reason}");
    assert_eq!(app.say("word"), "word=patched number=1");
}
