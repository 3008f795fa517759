//! The programs the bench patches, written into one scratch cargo workspace so that the
//! runtime's dependencies are compiled once for all of them.
//!
//! Each program is a binary crate of generated modules (structs, impls, trait objects, generic
//! helpers, closures, formatting) driven by a frame loop that calls a `#[hotreload]` function.
//! That function calls `edit_site::tint`, whose `let version = "N";` line is the edit: the
//! program prints `first-call site=bin version=N t=<CLOCK_REALTIME ns>` the first time version N
//! runs, and `first-frame t=…` after its first frame (for the restart measurement).
//!
//! The `crates` program's libraries form a chain (each depends on the one before it); the
//! deepest holds a second edit site (`site=lib`), which the binary reaches every frame through
//! each library's `relay`.
//!
//! The `deps` program is the 1k one plus widely used crates on the frame path (serde +
//! serde_json, regex, tokio): its frames run as tokio tasks and use the others, so its
//! executable links them and `cargo build` + restart pays a realistic link.

use linker_shim::{Context, Result};
use std::path::{Path, PathBuf};
use testkit::fixture::write_atomically;

const MODULE: &str = include_str!("templates/module.rs.in");
const MAIN: &str = include_str!("templates/main.rs.in");
const CLOCK: &str = include_str!("templates/clock.rs.in");
const EDIT_SITE: &str = include_str!("templates/edit_site.rs.in");
const CALL_OVERHEAD: &str = include_str!("templates/call_overhead.rs.in");
const STOP_TIME: &str = include_str!("templates/stop_time.rs.in");
const BUSY_WORK: &str = include_str!("templates/busy_work.rs.in");
const LIBRARY_CHAIN: &str = include_str!("templates/library_chain.rs.in");
const SOAK: &str = include_str!("templates/soak.rs.in");
const DEPENDENCIES: &str = include_str!("templates/dependencies.rs.in");

/// The library crates the `crates` program depends on, a chain.
const LIBRARY_CRATES: usize = 3;
/// The binary crate of the `crates` and `deps` programs, in lines: the size of the 1k program,
/// so that what they add is what differs.
const DEMO_SIZED_LINES: usize = 1_000;

/// The registry crates the `deps` program uses, with their `[dependencies]` entries: tokio
/// with what a small async program takes (a current-thread runtime, its timer, channels and
/// `#[tokio::main]`), the others with their default features.
const POPULAR_CRATES: [(&str, &str); 4] = [
    ("serde", r#"{ version = "1", features = ["derive"] }"#),
    ("serde_json", r#""1""#),
    ("regex", r#""1""#),
    (
        "tokio",
        r#"{ version = "1", default-features = false, features = ["rt", "time", "sync", "macros"] }"#,
    ),
];

/// The package that measures the `#[hotreload]` call overhead (built at opt-level 3).
pub const CALL_OVERHEAD_PACKAGE: &str = "call-overhead";

/// The package whose busy threads the stop-time measurement patches.
pub const STOP_TIME_PACKAGE: &str = "stop-time";
/// Threads of the stop-time program that call the edited function without pause.
pub const BUSY_THREADS: usize = 8;

/// The package the soak patches again and again, each time with new code.
pub const SOAK_PACKAGE: &str = "soak";

/// Which program to generate, as spelled on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgramSpec {
    /// A binary crate of about this many lines (`1k`, `10k`, `50k`).
    Lines(usize),
    /// A 1k-line binary crate that depends on a chain of workspace-local library crates,
    /// edited where [`CratesEdit`] says.
    WithCrates(CratesEdit),
    /// A 1k-line binary crate whose frames use [`POPULAR_CRATES`] (`deps`).
    WithDependencies,
}

/// What a program's frames use besides its own code and the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThirdParty {
    /// The standard library only: frames run on the main thread, which sleeps between them.
    StdOnly,
    /// [`POPULAR_CRATES`]: each frame a task of a current-thread tokio runtime, which sleeps
    /// on tokio's timer between them, and the `dependencies` module in every frame.
    PopularCrates,
}

impl ThirdParty {
    /// Names of the registry crates it depends on.
    fn crate_names(self) -> Vec<&'static str> {
        match self {
            ThirdParty::StdOnly => Vec::new(),
            ThirdParty::PopularCrates => POPULAR_CRATES.iter().map(|(name, _)| *name).collect(),
        }
    }

    /// Its `[dependencies]` lines.
    fn manifest_lines(self) -> String {
        match self {
            ThirdParty::StdOnly => String::new(),
            ThirdParty::PopularCrates => POPULAR_CRATES
                .iter()
                .map(|(name, entry)| format!("{name} = {entry}\n"))
                .collect(),
        }
    }

    /// The module that uses the crates, as `(name, source)`.
    fn module(self) -> Option<(&'static str, &'static str)> {
        match self {
            ThirdParty::StdOnly => None,
            ThirdParty::PopularCrates => Some(("dependencies", DEPENDENCIES)),
        }
    }

    /// How `main.rs` declares `main`, runs a frame and waits for the next one.
    fn frame_loop(self) -> [(&'static str, &'static str); 3] {
        match self {
            ThirdParty::StdOnly => [
                ("__MAIN__", "fn main()"),
                ("__RUN_FRAME__", "frame(number)"),
                ("__WAIT_FOR_NEXT_FRAME__", "std::thread::sleep(FRAME_PERIOD)"),
            ],
            ThirdParty::PopularCrates => [
                (
                    "__MAIN__",
                    "#[tokio::main(flavor = \"current_thread\")]\nasync fn main()",
                ),
                (
                    "__RUN_FRAME__",
                    "tokio::spawn(async move { frame(number) })\n            .await\n            .expect(\"a frame task panicked\")",
                ),
                (
                    "__WAIT_FOR_NEXT_FRAME__",
                    "tokio::time::sleep(FRAME_PERIOD).await",
                ),
            ],
        }
    }
}

/// Which crate of the `crates` program the bench edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CratesEdit {
    /// The binary crate (`crates`).
    Binary,
    /// The deepest library, which the others depend on (`crates-lib`).
    DeepestLibrary,
}

impl std::str::FromStr for ProgramSpec {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "crates" => return Ok(ProgramSpec::WithCrates(CratesEdit::Binary)),
            "crates-lib" => return Ok(ProgramSpec::WithCrates(CratesEdit::DeepestLibrary)),
            "deps" => return Ok(ProgramSpec::WithDependencies),
            _ => {}
        }
        text.strip_suffix('k')
            .and_then(|thousands| thousands.parse::<usize>().ok())
            .filter(|thousands| *thousands > 0)
            .map(|thousands| ProgramSpec::Lines(thousands * 1_000))
            .ok_or_else(|| {
                format!("`{text}`: expected a size like `10k`, `crates`, `crates-lib` or `deps`")
            })
    }
}

impl ProgramSpec {
    /// As spelled on the command line: `1k`, `10k`, `crates`, `crates-lib`, `deps`.
    pub fn label(&self) -> String {
        match self {
            ProgramSpec::Lines(lines) => format!("{}k", lines / 1_000),
            ProgramSpec::WithCrates(CratesEdit::Binary) => "crates".into(),
            ProgramSpec::WithCrates(CratesEdit::DeepestLibrary) => "crates-lib".into(),
            ProgramSpec::WithDependencies => "deps".into(),
        }
    }

    /// The row's name in the tables.
    pub fn title(&self) -> String {
        match self {
            ProgramSpec::WithCrates(CratesEdit::DeepestLibrary) => {
                "crates (edit in the deepest library)".into()
            }
            ProgramSpec::WithDependencies => {
                let names = self.third_party().crate_names().join(", ");
                format!("{} (1k + {names})", self.label())
            }
            _ => self.label(),
        }
    }

    /// The package: both edits of the `crates` program patch the same one.
    pub fn package(&self) -> String {
        match self {
            ProgramSpec::WithCrates(_) => "bench-crates".into(),
            _ => format!("bench-{}", self.label()),
        }
    }

    /// About how many lines its binary crate has.
    fn binary_lines(&self) -> usize {
        match self {
            ProgramSpec::Lines(lines) => *lines,
            ProgramSpec::WithCrates(_) | ProgramSpec::WithDependencies => DEMO_SIZED_LINES,
        }
    }

    /// The workspace-local library crates the program depends on, deepest first.
    fn libraries(&self) -> Vec<String> {
        match self {
            ProgramSpec::WithCrates(_) => (0..LIBRARY_CRATES)
                .map(|index| format!("{}-lib-{index}", self.package()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What its frames use besides its own code and the runtime.
    fn third_party(&self) -> ThirdParty {
        match self {
            ProgramSpec::WithDependencies => ThirdParty::PopularCrates,
            _ => ThirdParty::StdOnly,
        }
    }

    /// Where the bench edits the program, generated under `root`.
    fn edit_site(&self, root: &Path) -> EditSite {
        let (package, site) = match self {
            ProgramSpec::WithCrates(CratesEdit::DeepestLibrary) => {
                (self.libraries().remove(0), LIBRARY_SITE)
            }
            _ => (self.package(), BINARY_SITE),
        };
        EditSite {
            file: root.join(&package).join("src/edit_site.rs"),
            crate_name: crate_name(&package),
            site,
        }
    }
}

/// The `site=` of the binary crate's edit site.
const BINARY_SITE: &str = "bin";
/// The `site=` of the deepest library's edit site.
const LIBRARY_SITE: &str = "lib";

/// The line the bench rewrites: its file, the crate that file belongs to, and the `site=` of
/// the `first-call` lines its versions print.
#[derive(Debug, Clone)]
pub struct EditSite {
    pub file: PathBuf,
    pub crate_name: String,
    pub site: &'static str,
}

/// The `--crate-name` cargo gives a package's library or binary.
pub fn crate_name(package: &str) -> String {
    package.replace('-', "_")
}

/// A generated program, ready to build.
#[derive(Debug, Clone)]
pub struct GeneratedProgram {
    pub spec: ProgramSpec,
    pub package: String,
    /// Lines of the binary crate (what a patch recompiles).
    pub lines: usize,
    /// Lines of the workspace-local library crates it depends on.
    pub library_lines: usize,
    pub edit: EditSite,
}

impl GeneratedProgram {
    /// Writes the edit site at `version`: the one line that differs between versions.
    pub fn write_version(&self, version: u32) -> Result<()> {
        save(&self.edit.file, &edit_site_source(self.edit.site, version))
    }
}

/// The stop-time program: [`BUSY_THREADS`] threads calling `busy_work::mix`.
#[derive(Debug, Clone)]
pub struct StopTimeProgram {
    pub dir: PathBuf,
}

impl StopTimeProgram {
    /// Writes `busy_work.rs` at `version`.
    pub fn write_version(&self, version: u32) -> Result<()> {
        save(
            &self.dir.join("src/busy_work.rs"),
            &busy_work_source(version),
        )
    }
}

/// The soak program: `value()` returns the version written.
#[derive(Debug, Clone)]
pub struct SoakProgram {
    pub dir: PathBuf,
}

impl SoakProgram {
    /// Writes `main.rs` with `value()` returning `version`.
    pub fn write_version(&self, version: u32) -> Result<()> {
        save(&self.dir.join("src/main.rs"), &soak_source(version))
    }
}

fn soak_source(version: u32) -> String {
    SOAK.replace("__VALUE__", &version.to_string())
}

/// Writes `text` as an editor saves: the watcher never sees a half-written file.
fn save(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, text).context(|| format!("could not write {}", path.display()))
}

/// The scratch workspace: every program plus the call-overhead, stop-time and soak packages.
#[derive(Debug, Clone)]
pub struct BenchWorkspace {
    pub manifest_path: PathBuf,
    pub programs: Vec<GeneratedProgram>,
    pub stop_time: StopTimeProgram,
    pub soak: SoakProgram,
}

/// Writes the workspace under `root` (replacing earlier sources, keeping `Cargo.lock` and
/// anything else) with one program per spec; programs depend on `hotreload_dir` by path.
/// `lockfile` seeds `Cargo.lock` (see [`seed_lockfile`]), so dependencies resolve to the
/// versions this repository already uses.
pub fn generate(
    root: &Path,
    specs: &[ProgramSpec],
    hotreload_dir: &Path,
    lockfile: &Path,
) -> Result<BenchWorkspace> {
    let hotreload = format!("hotreload = {{ path = {:?} }}\n", hotreload_dir.display());
    let mut members = vec![
        CALL_OVERHEAD_PACKAGE.to_string(),
        STOP_TIME_PACKAGE.to_string(),
        SOAK_PACKAGE.to_string(),
    ];
    let mut programs: Vec<GeneratedProgram> = Vec::new();
    for spec in specs {
        let package = spec.package();
        let (lines, library_lines) = match programs.iter().find(|p| p.package == package) {
            Some(same_package) => (same_package.lines, same_package.library_lines),
            None => {
                members.extend(spec.libraries());
                members.push(package.clone());
                write_program(root, spec, &hotreload)?
            }
        };
        programs.push(GeneratedProgram {
            spec: spec.clone(),
            edit: spec.edit_site(root),
            package,
            lines,
            library_lines,
        });
    }
    write_package(
        &root.join(CALL_OVERHEAD_PACKAGE),
        CALL_OVERHEAD_PACKAGE,
        &hotreload,
        &[("src/main.rs", CALL_OVERHEAD.to_string())],
    )?;
    let stop_time = StopTimeProgram {
        dir: root.join(STOP_TIME_PACKAGE),
    };
    write_package(
        &stop_time.dir,
        STOP_TIME_PACKAGE,
        &hotreload,
        &[
            (
                "src/main.rs",
                STOP_TIME.replace("__BUSY_THREADS__", &BUSY_THREADS.to_string()),
            ),
            ("src/busy_work.rs", busy_work_source(0)),
        ],
    )?;
    let soak = SoakProgram {
        dir: root.join(SOAK_PACKAGE),
    };
    write_package(
        &soak.dir,
        SOAK_PACKAGE,
        &hotreload,
        &[("src/main.rs", soak_source(0))],
    )?;
    let manifest_path = root.join("Cargo.toml");
    write(&manifest_path, &workspace_manifest(&members))?;
    let registry_crates: Vec<&str> = specs
        .iter()
        .flat_map(|spec| spec.third_party().crate_names())
        .collect();
    seed_lockfile(lockfile, &root.join("Cargo.lock"), &registry_crates)?;
    Ok(BenchWorkspace {
        manifest_path,
        programs,
        stop_time,
        soak,
    })
}

/// Copies the checkout's `lockfile` to `workspace_lock` when that is missing or locks none of
/// some of `registry_crates`: cargo then resolves them to the versions this repository
/// already uses (downloaded already, the same in every run) rather than to the newest. cargo
/// drops what the workspace doesn't use when it writes the lock, so a run without the `deps`
/// program leaves a lock the next run with it seeds again.
fn seed_lockfile(lockfile: &Path, workspace_lock: &Path, registry_crates: &[&str]) -> Result<()> {
    let locked = std::fs::read_to_string(workspace_lock).ok();
    let up_to_date = locked.is_some_and(|locked| {
        registry_crates
            .iter()
            .all(|name| locks_package(&locked, name))
    });
    if !up_to_date {
        std::fs::copy(lockfile, workspace_lock)
            .context(|| format!("could not copy {}", lockfile.display()))?;
    }
    Ok(())
}

/// Whether the `Cargo.lock` text `lock` has a package named `name`.
fn locks_package(lock: &str, name: &str) -> bool {
    lock.lines()
        .any(|line| line == format!("name = \"{name}\""))
}

/// Writes the program of `spec` and its libraries (replacing earlier sources); its lines and
/// its libraries' lines.
fn write_program(root: &Path, spec: &ProgramSpec, hotreload: &str) -> Result<(usize, usize)> {
    let (package, libraries, third_party) = (spec.package(), spec.libraries(), spec.third_party());
    let module_count = modules_for(spec.binary_lines(), third_party);
    let dir = root.join(&package);
    let _ = std::fs::remove_dir_all(&dir);
    let mut library_lines = 0;
    let mut dependencies = hotreload.to_string() + &third_party.manifest_lines();
    for (index, (library, sources)) in library_sources(&libraries, module_count)
        .into_iter()
        .enumerate()
    {
        library_lines += sources
            .iter()
            .map(|(_, text)| text.lines().count())
            .sum::<usize>();
        let below = index
            .checked_sub(1)
            .map_or(String::new(), |below| path_dependency(&libraries[below]));
        write_package(&root.join(library), library, &below, &sources)?;
        dependencies.push_str(&path_dependency(library));
    }
    let sources = binary_sources(&package, module_count, &libraries, third_party);
    let lines = sources.iter().map(|(_, text)| text.lines().count()).sum();
    write_package(&dir, &package, &dependencies, &sources)?;
    Ok((lines, library_lines))
}

/// A `[dependencies]` line on workspace package `package`.
fn path_dependency(package: &str) -> String {
    format!("{package} = {{ path = \"../{package}\" }}\n")
}

/// How many generated modules make a binary crate of about `lines` lines, counting the
/// module that uses `third_party`'s crates.
fn modules_for(lines: usize, third_party: ThirdParty) -> usize {
    let fixed = [MAIN, CLOCK, EDIT_SITE]
        .into_iter()
        .chain(third_party.module().map(|(_, source)| source))
        .map(|text| text.lines().count())
        .sum::<usize>();
    let per_module = MODULE.lines().count() + 2; // its `mod` line and its `STEPS` entry
    let modules = (lines.saturating_sub(fixed) as f64 / per_module as f64).round();
    (modules as usize).max(1)
}

/// Module `index` of the template; constants vary so no two modules compile to the same code.
fn module_source(index: usize) -> String {
    MODULE
        .replace("__K__", &index.to_string())
        .replace("__SEED__", &(index * 7919 + 17).to_string())
        .replace("__MASS__", &(2 + index % 7).to_string())
        .replace("__HEAVY__", &(4 + index % 5).to_string())
        .replace("__WORD_LIMIT__", &(8 + index % 9).to_string())
}

/// `src/…` of each library of the chain (deepest first), which continues the modules after the
/// binary crate's `modules`: the deepest has the library edit site (at version 0) and a clock,
/// each has a `relay` calling the one below.
fn library_sources(libraries: &[String], modules: usize) -> Vec<(&String, Vec<(String, String)>)> {
    libraries
        .iter()
        .enumerate()
        .map(|(index, library)| {
            let next = match index.checked_sub(1) {
                None => "edit_site::tint".to_string(),
                Some(below) => format!("{}::relay", crate_name(&libraries[below])),
            };
            let chain = LIBRARY_CHAIN
                .replace("__NEXT__", &next)
                .replace("__K__", &(index + 1).to_string());
            let mut lib = module_source(modules + index);
            let mut sources = Vec::new();
            if index == 0 {
                lib.push_str("\npub mod clock;\npub mod edit_site;\n");
                sources.push(("src/clock.rs".to_string(), CLOCK.to_string()));
                sources.push((
                    "src/edit_site.rs".to_string(),
                    edit_site_source(LIBRARY_SITE, 0),
                ));
            }
            lib.push_str(&chain);
            sources.insert(0, ("src/lib.rs".to_string(), lib));
            (library, sources)
        })
        .collect()
}

/// `src/…` of the binary crate: main, clock, the edit site at version 0, the modules, and the
/// module that uses `third_party`'s crates. The frame loop steps through the modules and the
/// libraries' `step` functions, and calls the top of the library chain and that module's
/// `step` every frame.
fn binary_sources(
    package: &str,
    modules: usize,
    libraries: &[String],
    third_party: ThirdParty,
) -> Vec<(String, String)> {
    let names: Vec<String> = (0..modules).map(|index| format!("m{index:04}")).collect();
    let every_frame_module = third_party.module();
    let declarations: String = names
        .iter()
        .map(String::as_str)
        .chain(every_frame_module.map(|(name, _)| name))
        .map(|name| format!("mod {name};\n"))
        .collect();
    let steps: String = names
        .iter()
        .cloned()
        .chain(libraries.iter().map(|library| crate_name(library)))
        .map(|path| format!("    {path}::step,\n"))
        .collect();
    let every_frame: String = libraries
        .last()
        .map(|top| format!(" ^ {}::relay(number)", crate_name(top)))
        .into_iter()
        .chain(every_frame_module.map(|(name, _)| format!(" ^ {name}::step(number)")))
        .collect();
    let main = third_party.frame_loop().into_iter().fold(
        MAIN.replace("__PACKAGE__", package)
            .replace("__FRAME_ALSO__", &every_frame)
            .replace("__STEP_COUNT__", &(modules + libraries.len()).to_string())
            .replace("__MODULES__", &declarations)
            .replace("__STEPS__", &steps),
        |main, (placeholder, code)| main.replace(placeholder, code),
    );
    let mut sources = vec![
        ("src/main.rs".to_string(), main),
        ("src/clock.rs".to_string(), CLOCK.to_string()),
        (
            "src/edit_site.rs".to_string(),
            edit_site_source(BINARY_SITE, 0),
        ),
    ];
    sources.extend(
        names
            .iter()
            .enumerate()
            .map(|(index, name)| (format!("src/{name}.rs"), module_source(index))),
    );
    sources.extend(
        every_frame_module.map(|(name, source)| (format!("src/{name}.rs"), source.to_string())),
    );
    sources
}

/// The edit site with `let version = "<version>";`, printing `site=<site>`.
pub fn edit_site_source(site: &str, version: u32) -> String {
    EDIT_SITE
        .replace("__SITE__", site)
        .replace("__VERSION__", &version.to_string())
}

/// The factor `busy_work::mix` multiplies by at `version`, which `mix(0)` returns: two
/// bodies alternate after the first edit, so every other edit recreates code an earlier
/// patch already mapped (as editing back and forth does).
pub fn busy_work_factor(version: u32) -> u64 {
    match version {
        0 => 3,
        odd if odd % 2 == 1 => 5,
        _ => 7,
    }
}

/// The stop-time program's `busy_work.rs` at `version`.
fn busy_work_source(version: u32) -> String {
    BUSY_WORK.replace("__FACTOR__", &busy_work_factor(version).to_string())
}

/// The workspace manifest. The call-overhead package alone is optimised: the slot's load and
/// indirect call are inlined into the caller, so its own opt-level is what counts.
fn workspace_manifest(members: &[String]) -> String {
    let members: Vec<String> = members.iter().map(|m| format!("{m:?}")).collect();
    format!(
        "[workspace]\nresolver = \"2\"\nmembers = [{}]\n\n\
         [profile.dev.package.{CALL_OVERHEAD_PACKAGE}]\nopt-level = 3\ndebug-assertions = false\noverflow-checks = false\n",
        members.join(", ")
    )
}

fn write_package(
    dir: &Path,
    name: &str,
    dependencies: &str,
    sources: &[(impl AsRef<str>, String)],
) -> Result<()> {
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n{dependencies}"
    );
    write(&dir.join("Cargo.toml"), &manifest)?;
    for (path, text) in sources {
        write(&dir.join(path.as_ref()), text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .context(|| format!("could not create {}", parent.display()))?;
    }
    std::fs::write(path, text).context(|| format!("could not write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_from_the_command_line() {
        assert_eq!("10k".parse(), Ok(ProgramSpec::Lines(10_000)));
        assert_eq!(
            "crates".parse(),
            Ok(ProgramSpec::WithCrates(CratesEdit::Binary))
        );
        let library_edit: ProgramSpec = "crates-lib".parse().unwrap();
        assert_eq!(library_edit.label(), "crates-lib");
        assert_eq!(library_edit.title(), "crates (edit in the deepest library)");
        assert_eq!(library_edit.package(), "bench-crates", "the same program");
        assert!("10".parse::<ProgramSpec>().is_err());
        assert!("0k".parse::<ProgramSpec>().is_err());
        assert_eq!(ProgramSpec::Lines(50_000).package(), "bench-50k");
        let deps: ProgramSpec = "deps".parse().unwrap();
        assert_eq!(
            (deps.label(), deps.package()),
            ("deps".into(), "bench-deps".into())
        );
        assert_eq!(deps.title(), "deps (1k + serde, serde_json, regex, tokio)");
    }

    #[test]
    fn programs_have_about_the_lines_asked_for() {
        let sizes = [1_000, 10_000, 50_000].map(|lines| (lines, ThirdParty::StdOnly));
        for (lines, third_party) in sizes
            .into_iter()
            .chain([(1_000, ThirdParty::PopularCrates)])
        {
            let modules = modules_for(lines, third_party);
            let generated: usize = binary_sources("p", modules, &[], third_party)
                .iter()
                .map(|(_, text)| text.lines().count())
                .sum();
            let off = generated.abs_diff(lines) as f64 / lines as f64;
            assert!(off < 0.2, "{generated} lines for a {lines}-line program");
        }
    }

    #[test]
    fn the_deps_program_uses_the_crates_every_frame_on_tokio() {
        let spec = ProgramSpec::WithDependencies;
        let sources = binary_sources("p", 2, &[], spec.third_party());
        let main = &sources[0].1;
        assert!(main.contains("mod dependencies;\n"), "{main}");
        assert!(
            main.contains("edit_site::tint(number) ^ dependencies::step(number)\n"),
            "{main}"
        );
        assert!(main.contains("#[tokio::main(flavor = \"current_thread\")]\nasync fn main() {"));
        assert!(main.contains("tokio::spawn(async move { frame(number) })"));
        assert!(main.contains("tokio::time::sleep(FRAME_PERIOD).await;"));
        assert!(sources
            .iter()
            .any(|(path, _)| path == "src/dependencies.rs"));
        for (path, text) in &sources {
            assert!(!text.contains("__"), "{path} keeps a placeholder");
        }
        let manifest = spec.third_party().manifest_lines();
        for name in ["serde", "serde_json", "regex", "tokio"] {
            let entry = format!("{name} = ");
            assert!(
                manifest.lines().any(|line| line.starts_with(&entry)),
                "{manifest}"
            );
        }
        let root = Path::new("/w");
        assert_eq!(
            spec.edit_site(root).file,
            root.join("bench-deps/src/edit_site.rs")
        );
        assert_eq!(spec.edit_site(root).site, "bin");
    }

    #[test]
    fn the_lock_is_seeded_again_when_it_lacks_a_registry_crate() {
        let dir = std::env::temp_dir().join(format!("bench-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (checkout, workspace) = (dir.join("checkout.lock"), dir.join("Cargo.lock"));
        std::fs::write(&checkout, "[[package]]\nname = \"tokio\"\n").unwrap();
        seed_lockfile(&checkout, &workspace, &[]).unwrap();
        assert!(locks_package(
            &std::fs::read_to_string(&workspace).unwrap(),
            "tokio"
        ));
        std::fs::write(&workspace, "[[package]]\nname = \"tokio-macros\"\n").unwrap();
        seed_lockfile(&checkout, &workspace, &[]).unwrap();
        let kept = std::fs::read_to_string(&workspace).unwrap();
        assert!(!locks_package(&kept, "tokio"), "nothing needed: kept");
        seed_lockfile(&checkout, &workspace, &["tokio"]).unwrap();
        assert!(locks_package(
            &std::fs::read_to_string(&workspace).unwrap(),
            "tokio"
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_placeholder_survives_and_modules_differ() {
        let sources = binary_sources("p", 2, &["p-lib-0".into()], ThirdParty::StdOnly);
        for (path, text) in &sources {
            assert!(!text.contains("__"), "{path} keeps a placeholder");
        }
        let main = &sources[0].1;
        assert!(main.contains("mod m0001;") && main.contains("    p_lib_0::step,\n"));
        assert_ne!(module_source(0), module_source(1));
    }

    #[test]
    fn library_edit_site_is_in_the_deepest_library() {
        let root = Path::new("/w");
        let binary = ProgramSpec::WithCrates(CratesEdit::Binary).edit_site(root);
        assert_eq!(binary.file, root.join("bench-crates/src/edit_site.rs"));
        assert_eq!(
            (binary.crate_name.as_str(), binary.site),
            ("bench_crates", "bin")
        );
        let library = ProgramSpec::WithCrates(CratesEdit::DeepestLibrary).edit_site(root);
        assert_eq!(
            library.file,
            root.join("bench-crates-lib-0/src/edit_site.rs")
        );
        assert_eq!(
            (library.crate_name.as_str(), library.site),
            ("bench_crates_lib_0", "lib")
        );
        assert!(edit_site_source(library.site, 2).contains(r#"first_call("lib", version)"#));
    }

    #[test]
    fn the_binary_reaches_the_library_edit_site_through_the_chain() {
        let libraries: Vec<String> = (0..3).map(|index| format!("p-lib-{index}")).collect();
        let sources = library_sources(&libraries, 2);
        let file = |library: usize, path: &str| {
            let (_, files) = &sources[library];
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, text)| text.clone())
        };
        let deepest = file(0, "src/lib.rs").unwrap();
        assert!(
            deepest.contains("pub mod edit_site;") && deepest.contains("edit_site::tint(frame)")
        );
        assert!(file(0, "src/edit_site.rs").is_some() && file(1, "src/edit_site.rs").is_none());
        assert!(file(1, "src/lib.rs")
            .unwrap()
            .contains("p_lib_0::relay(frame)"));
        assert!(file(2, "src/lib.rs")
            .unwrap()
            .contains("p_lib_1::relay(frame)"));
        let main = &binary_sources("p", 2, &libraries, ThirdParty::StdOnly)[0].1;
        assert!(
            main.contains("edit_site::tint(number) ^ p_lib_2::relay(number)"),
            "{main}"
        );
        for (_, files) in &sources {
            for (path, text) in files {
                assert!(!text.contains("__"), "{path} keeps a placeholder");
            }
        }
    }

    #[test]
    fn busy_work_alternates_two_bodies_after_the_original() {
        let factors: Vec<_> = (0..5).map(busy_work_factor).collect();
        assert_eq!(factors, [3, 5, 7, 5, 7]);
        assert!(busy_work_source(1).contains("x.wrapping_mul(5).rotate_left(5) ^ 5"));
        assert!(!STOP_TIME.replace("__BUSY_THREADS__", "8").contains("__"));
    }

    #[test]
    fn versions_differ_in_exactly_one_line() {
        let (before, after) = (edit_site_source("lib", 3), edit_site_source("lib", 4));
        let differing: Vec<_> = before
            .lines()
            .zip(after.lines())
            .filter(|(a, b)| a != b)
            .collect();
        assert_eq!(
            differing,
            [("    let version = \"3\";", "    let version = \"4\";")]
        );
    }
}
