//! The patch build: re-run the recorded rustc invocations, without cargo and with identical
//! flags (symbol names depend on them) — of the edited local libraries and the local crates
//! that depend on them, dependencies first, then of the binary crate, whose link is skipped:
//! only the objects are recorded (the binary's, and the recompiled libraries' from their
//! new rlibs).

pub mod crates;

use crate::leftovers::remove_dirs_of_ended_processes;
use crates::{extern_paths, CrateIndex, LocalCrates};
use linker_shim::{
    Context, Error, LinkRequest, LocalLibrary, Revision, RevisionId, RoleRequest, RustcInvocation,
    Store, LINK_REQUEST_ENV,
};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A capture-only revision made from the current sources.
#[derive(Debug, Clone)]
pub struct Recompiled {
    pub revision: Revision,
    /// Wall time of the compiler runs (including the shim copying the objects).
    pub duration: Duration,
    /// Rendered warnings, in the compiler's order.
    pub warnings: Vec<String>,
    /// Each crate compiled, in order (the binary crate last), with its compiler time.
    pub crates: Vec<CrateBuild>,
}

/// One crate compiled for a patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrateBuild {
    pub name: String,
    pub duration: Duration,
}

/// The patch builds of one session: its local crates, the scratch directory their outputs go
/// to (never cargo's target directory), and the libraries rebuilt so far — their current
/// rlibs are in the scratch directory, and every later build links against those.
#[derive(Debug)]
pub struct PatchBuilds {
    pub crates: LocalCrates,
    scratch: PathBuf,
    /// Held while the session uses `scratch`, when it is the target's lasting directory.
    _scratch_lock: Option<std::fs::File>,
    rebuilt: BTreeSet<CrateIndex>,
    /// The warm-up build, while it may still run (see [`PatchBuilds::warm_up`]).
    warm_up: Option<WarmUp>,
}

/// A build of the unchanged binary crate into the scratch directory, in the background.
#[derive(Debug)]
struct WarmUp {
    thread: JoinHandle<()>,
    /// The compiler while it runs.
    compiler: Compiler,
}

/// A compiler process shared with whoever may have to stop it.
type Compiler = Arc<Mutex<Option<Child>>>;

/// How nice (niceness) the warm-up's compiler is: it gives way to the program and the person.
const WARM_UP_NICENESS: libc::c_int = 10;

impl PatchBuilds {
    /// The builds of `crates` for the session patching `base`.
    pub fn new(store: &Store, base: &Revision, crates: LocalCrates) -> Result<PatchBuilds, Error> {
        let (scratch, lock) = scratch_dir(store, base)?;
        Ok(PatchBuilds {
            crates,
            scratch,
            _scratch_lock: lock,
            rebuilt: BTreeSet::new(),
            warm_up: None,
        })
    }

    /// Compiles the local libraries and the binary crate, unchanged, into the scratch
    /// directory in the background at low priority: the first build in a new output directory
    /// redoes most of rustc's codegen, so without this the session's first edit costs several
    /// times a later one. `then` gets the build's revision and the libraries it rebuilt,
    /// still on the background thread (see [`PatchBuilds::adopt_libraries`]). The first edit
    /// that comes before the compilers are done stops them ([`PatchBuilds::stop_warm_up`])
    /// rather than wait for niced compilers.
    pub fn warm_up(
        &mut self,
        store: &Store,
        base: &Revision,
        hotpatch_exe: &Path,
        then: impl FnOnce(Revision, BTreeSet<CrateIndex>) + Send + 'static,
    ) {
        let compiler = Compiler::default();
        let mut builds = PatchBuilds {
            crates: self.crates.clone(),
            scratch: self.scratch.clone(),
            _scratch_lock: None,
            rebuilt: BTreeSet::new(),
            warm_up: None,
        };
        let (store, base, hotpatch_exe) = (store.clone(), base.clone(), hotpatch_exe.to_owned());
        let running = Arc::clone(&compiler);
        let thread = std::thread::spawn(move || {
            // A failure here (the sources don't compile yet, say) is the first edit's to report.
            let libraries = builds.crates.libraries();
            if build_libraries(&mut builds, &libraries, &hotpatch_exe, Some(&running)).is_err() {
                return;
            }
            if let Ok((revision, _)) =
                build_binary(&store, &base, &mut builds, &hotpatch_exe, Some(&running))
            {
                then(revision, std::mem::take(&mut builds.rebuilt));
            }
        });
        self.warm_up = Some(WarmUp { thread, compiler });
    }

    /// Takes over the libraries the warm-up rebuilt: later builds link their fresh rlibs, as
    /// the warm-up's build of the binary did.
    pub fn adopt_libraries(&mut self, rebuilt: BTreeSet<CrateIndex>) {
        self.rebuilt.extend(rebuilt);
    }

    /// Ends the warm-up: kills its compiler if it still runs (its partial outputs are
    /// overwritten by the next build; rustc's incremental state survives a killed compiler)
    /// and waits for its thread (and so for what it does with a finished build).
    pub fn stop_warm_up(&mut self) {
        let Some(warm_up) = self.warm_up.take() else {
            return;
        };
        if let Some(compiler) = warm_up
            .compiler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let _ = compiler.kill();
        }
        let _ = warm_up.thread.join();
    }

    /// The dep-info of the latest patch build of crate `index`, if it was compiled.
    pub fn latest_dep_info(&self, index: CrateIndex) -> Option<PathBuf> {
        let invocation = &self.crates.get(index).invocation;
        let out_dir = if index == self.crates.binary() {
            self.scratch.clone()
        } else if self.rebuilt.contains(&index) {
            self.library_dir(index)
        } else {
            return None;
        };
        Some(invocation.dep_info_in(&out_dir)).filter(|path| path.exists())
    }

    /// The output directory of a library's patch builds.
    fn library_dir(&self, index: CrateIndex) -> PathBuf {
        let invocation = &self.crates.get(index).invocation;
        self.scratch.join(format!(
            "lib-{}{}",
            invocation.crate_name,
            invocation.extra_filename()
        ))
    }

    /// `invocation`'s arguments for a patch build into `out_dir`, against the outputs of the
    /// libraries rebuilt so far.
    fn arguments(&self, invocation: &RustcInvocation, out_dir: &Path, shim: &Path) -> Vec<String> {
        let fresh: Vec<PathBuf> = self.rebuilt.iter().map(|&i| self.library_dir(i)).collect();
        let args = redirect_out_dir(invocation.compiler_args(shim), out_dir);
        let args = redirect_incremental(args, &self.scratch.join("incremental"));
        link_fresh_libraries(args, &fresh)
    }
}

impl Drop for PatchBuilds {
    /// A session that ends leaves no compiler running.
    fn drop(&mut self) {
        self.stop_warm_up();
    }
}

/// Recorded compiler arguments made to use fresh builds of local libraries instead of
/// cargo's: each `--extern` whose file exists in one of `fresh_dirs` points there, and those
/// directories are searched for indirect dependencies (`-L dependency=`).
pub fn link_fresh_libraries(mut args: Vec<String>, fresh_dirs: &[PathBuf]) -> Vec<String> {
    let mut index = 0;
    while index + 1 < args.len() {
        if args[index] == "--extern" {
            let replaced = extern_paths(&args[index..index + 2])
                .next()
                .and_then(|path| {
                    let name = path.file_name()?;
                    let dir = fresh_dirs.iter().find(|dir| dir.join(name).exists())?;
                    Some(dir.join(name))
                });
            if let Some(replaced) = replaced {
                let (prefix, _) = args[index + 1].split_once('=').expect("has a path");
                args[index + 1] = format!("{prefix}={}", replaced.display());
            }
            index += 1;
        }
        index += 1;
    }
    for dir in fresh_dirs {
        args.push("-L".into());
        args.push(format!("dependency={}", dir.display()));
    }
    args
}

/// Why a recompilation produced no revision.
#[derive(Debug)]
pub enum RecompileError {
    /// The code does not compile: the compiler's rendered diagnostics, errors and warnings.
    Compile { diagnostics: Vec<String> },
    /// Anything else (missing invocation, I/O, the compiler could not start).
    Other(Error),
}

impl fmt::Display for RecompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecompileError::Compile { diagnostics } => {
                write!(f, "the code does not compile:\n{}", diagnostics.join(""))
            }
            RecompileError::Other(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for RecompileError {}

impl From<Error> for RecompileError {
    fn from(error: Error) -> Self {
        RecompileError::Other(error)
    }
}

/// Recompiles the binary crate of `base` with its recorded invocation and records the objects
/// as a new capture-only revision of the same target. `hotpatch_exe` acts as the linker.
pub fn recompile(
    store: &Store,
    base: &Revision,
    hotpatch_exe: &Path,
) -> Result<Recompiled, RecompileError> {
    let crates = LocalCrates::new(binary_invocation(base)?, &[]);
    let mut builds = PatchBuilds::new(store, base, crates)?;
    recompile_edit(store, base, &mut builds, &BTreeSet::new(), hotpatch_exe)
}

/// Recompiles what an edit of the `edited` crates touches: those of them that are libraries
/// and the libraries depending on them, each into its own scratch directory, then the binary
/// crate of `base`, capture-only: the new revision holds its objects and those of every
/// library rebuilt in this session. `hotpatch_exe` acts as the linker.
///
/// Outputs other than the objects go to the session's scratch directory, so cargo's artifacts
/// (and the running executable) are never touched; each crate keeps its incremental cache.
pub fn recompile_edit(
    store: &Store,
    base: &Revision,
    builds: &mut PatchBuilds,
    edited: &BTreeSet<CrateIndex>,
    hotpatch_exe: &Path,
) -> Result<Recompiled, RecompileError> {
    builds.stop_warm_up();
    let started = Instant::now();
    let libraries = builds.crates.libraries_to_rebuild(edited);
    let (mut crates, mut warnings) = build_libraries(builds, &libraries, hotpatch_exe, None)?;
    let (revision, binary) = build_binary(store, base, builds, hotpatch_exe, None)?;
    warnings.extend(binary.1);
    crates.push(binary.0);
    Ok(Recompiled {
        revision,
        duration: started.elapsed(),
        warnings,
        crates,
    })
}

/// Compiles the local `libraries` (dependencies first) into their scratch directories, each
/// against those rebuilt before it: their builds, and their warnings. `niced`: as for
/// [`build_binary`].
fn build_libraries(
    builds: &mut PatchBuilds,
    libraries: &[CrateIndex],
    hotpatch_exe: &Path,
    niced: Option<&Compiler>,
) -> Result<(Vec<CrateBuild>, Vec<String>), RecompileError> {
    let mut crates = Vec::new();
    let mut warnings = Vec::new();
    for &index in libraries {
        let invocation = &builds.crates.get(index).invocation;
        let out_dir = builds.library_dir(index);
        std::fs::create_dir_all(&out_dir)
            .context(|| format!("could not create {}", out_dir.display()))?;
        let compiling = Instant::now();
        let output = run_compiler(
            invocation,
            builds.arguments(invocation, &out_dir, hotpatch_exe),
            None,
            niced,
        )?;
        warnings.extend(diagnostics_of(&output)?);
        crates.push(CrateBuild {
            name: invocation.crate_name.clone(),
            duration: compiling.elapsed(),
        });
        builds.rebuilt.insert(index);
    }
    Ok((crates, warnings))
}

/// Compiles the binary crate of `base` against the libraries rebuilt so far, capture-only:
/// the new revision, and the build with its warnings. `niced`: run the compiler at
/// [`WARM_UP_NICENESS`], kept there while it runs, its diagnostics dropped.
fn build_binary(
    store: &Store,
    base: &Revision,
    builds: &mut PatchBuilds,
    hotpatch_exe: &Path,
    niced: Option<&Compiler>,
) -> Result<(Revision, (CrateBuild, Vec<String>)), RecompileError> {
    let invocation = binary_invocation(base)?;
    let id = RevisionId::new_now();
    let scratch = &builds.scratch;
    let invocation_file = scratch.join("rustc.json");
    let json = serde_json::to_vec_pretty(invocation).expect("invocations serialise");
    std::fs::write(&invocation_file, json)
        .context(|| format!("could not write {}", invocation_file.display()))?;
    let link = LinkRequest {
        store: store.root().to_owned(),
        target: base.target.clone(),
        real_linker: base.link_line.linker.clone(),
        capture_only: true,
        revision_id: Some(id.clone()),
        invocation: Some(invocation_file),
        libraries: builds
            .rebuilt
            .iter()
            .map(|&index| LocalLibrary {
                crate_name: builds.crates.get(index).name().to_owned(),
                rlib: builds
                    .crates
                    .get(index)
                    .invocation
                    .rlib_in(&builds.library_dir(index)),
            })
            .collect(),
    };
    let compiling = Instant::now();
    let output = run_compiler(
        invocation,
        builds.arguments(invocation, scratch, hotpatch_exe),
        Some(&link),
        niced,
    )?;
    let warnings = diagnostics_of(&output)?;
    let build = CrateBuild {
        name: invocation.crate_name.clone(),
        duration: compiling.elapsed(),
    };
    Ok((store.load(&id)?, (build, warnings)))
}

/// The binary crate's invocation, which `base` recorded.
fn binary_invocation(base: &Revision) -> Result<&RustcInvocation, Error> {
    base.rustc.as_ref().ok_or_else(|| {
        Error::new(format!(
            "revision {} has no recorded rustc invocation; build it with `hotpatch build` first",
            base.id
        ))
    })
}

/// Runs the compiler as `invocation` ran it (environment, directory) with `args`, linking
/// through the shim with `link` when given; `niced`: at [`WARM_UP_NICENESS`], kept there
/// while it runs (so it can be killed), its output dropped.
fn run_compiler(
    invocation: &RustcInvocation,
    args: Vec<String>,
    link: Option<&LinkRequest>,
    niced: Option<&Compiler>,
) -> Result<Output, Error> {
    let mut command = Command::new(&invocation.rustc);
    command
        .args(args)
        .env_clear()
        .envs(&invocation.env)
        .current_dir(&invocation.cwd);
    if let Some(link) = link {
        command.env(LINK_REQUEST_ENV, link.to_env_value());
    }
    let Some(compiler) = niced else {
        return command
            .output()
            .context(|| format!("could not run {}", invocation.rustc.display()));
    };
    // SAFETY: setpriority(2) is async-signal-safe and touches no memory: fine between fork
    // and exec. It lowers only the child's own priority.
    unsafe {
        command.pre_exec(|| {
            libc::setpriority(libc::PRIO_PROCESS, 0, WARM_UP_NICENESS);
            Ok(())
        })
    };
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(|| format!("could not run {}", invocation.rustc.display()))?;
    *compiler.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    // Polled under the lock rather than waited for: whoever stops it kills it through the
    // same `Child`, which never signals a pid it has reaped.
    loop {
        let mut running = compiler.lock().unwrap_or_else(PoisonError::into_inner);
        let child = running.as_mut().expect("only this loop takes it out");
        if let Some(status) = child
            .try_wait()
            .context(|| format!("could not wait for {}", invocation.rustc.display()))?
        {
            *running = None;
            return Ok(Output {
                status,
                stdout: Vec::new(),
                stderr: Vec::new(),
            });
        }
        drop(running);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The compiler's rendered warnings, or its errors when it failed.
fn diagnostics_of(output: &Output) -> Result<Vec<String>, RecompileError> {
    let diagnostics = rendered_diagnostics(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        Ok(diagnostics)
    } else {
        Err(RecompileError::Compile { diagnostics })
    }
}

/// The directory a session's patch builds write to: the target's own, kept from one session
/// to the next (`<store>/patch-builds/<name>-<profile>/`) with its own incremental cache, so
/// a session's warm-up finds the last one's codegen and neither disturbs cargo's; while
/// another session of the same target holds it, one of this session's own (removed once
/// this process is gone). Returns the lock that holds it.
fn scratch_dir(store: &Store, base: &Revision) -> Result<(PathBuf, Option<std::fs::File>), Error> {
    let target = &base.target;
    let kept = store
        .root()
        .join("patch-builds")
        .join(format!("{}-{}", target.name, target.profile));
    std::fs::create_dir_all(&kept).context(|| format!("could not create {}", kept.display()))?;
    let lock_path = kept.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .context(|| format!("could not open {}", lock_path.display()))?;
    if lock.try_lock().is_ok() {
        return Ok((kept, Some(lock)));
    }
    let root = store.root().join("scratch");
    remove_dirs_of_ended_processes(&root, "");
    let own = root.join(format!(
        "{}-{}-{}",
        std::process::id(),
        target.name,
        target.profile
    ));
    std::fs::create_dir_all(&own).context(|| format!("could not create {}", own.display()))?;
    Ok((own, None))
}

/// Replaces the value of `--out-dir` (the output directory does not influence symbol names).
pub fn redirect_out_dir(mut args: Vec<String>, out_dir: &Path) -> Vec<String> {
    let out_dir = out_dir.display().to_string();
    let mut index = 0;
    while index < args.len() {
        if args[index] == "--out-dir" && index + 1 < args.len() {
            args[index + 1] = out_dir.clone();
            index += 1;
        } else if args[index].starts_with("--out-dir=") {
            args[index] = format!("--out-dir={out_dir}");
        }
        index += 1;
    }
    args
}

/// Replaces the directory of `-C incremental` (where rustc keeps what it may reuse; the
/// recorded build's is cargo's). A build without it stays without.
pub fn redirect_incremental(mut args: Vec<String>, dir: &Path) -> Vec<String> {
    let value = format!("incremental={}", dir.display());
    for index in 0..args.len() {
        if args[index].starts_with("incremental=") && index > 0 && args[index - 1] == "-C" {
            args[index].clone_from(&value);
        } else if args[index].starts_with("-Cincremental=") {
            args[index] = format!("-C{value}");
        }
    }
    args
}

/// The `rendered` text of each JSON diagnostic on rustc's stderr (cargo asks rustc for JSON);
/// lines that are not JSON diagnostics are kept as they are.
fn rendered_diagnostics(stderr: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct Diagnostic {
        #[serde(rename = "$message_type")]
        message_type: Option<String>,
        rendered: Option<String>,
    }
    stderr
        .lines()
        .filter_map(|line| match serde_json::from_str::<Diagnostic>(line) {
            Ok(diagnostic) if diagnostic.message_type.as_deref() == Some("diagnostic") => {
                diagnostic.rendered
            }
            Ok(_) => None,
            Err(_) if line.trim().is_empty() => None,
            Err(_) => Some(format!("{line}\n")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_dir_is_redirected_in_both_spellings() {
        let args = ["--out-dir", "/t/deps", "-C", "x", "--out-dir=/t/deps"]
            .map(String::from)
            .to_vec();
        let redirected = redirect_out_dir(args, Path::new("/s"));
        assert_eq!(redirected, ["--out-dir", "/s", "-C", "x", "--out-dir=/s"]);
    }

    #[test]
    fn the_incremental_cache_is_redirected_in_both_spellings_and_never_added() {
        let args = [
            "-C",
            "incremental=/t/incr",
            "-Cincremental=/t/incr",
            "-C",
            "opt-level=0",
        ]
        .map(String::from)
        .to_vec();
        let redirected = redirect_incremental(args, Path::new("/s/incr"));
        assert_eq!(
            redirected,
            [
                "-C",
                "incremental=/s/incr",
                "-Cincremental=/s/incr",
                "-C",
                "opt-level=0"
            ]
        );
        let without = ["-C", "opt-level=3"].map(String::from).to_vec();
        assert_eq!(
            redirect_incremental(without.clone(), Path::new("/s")),
            without
        );
    }

    #[test]
    fn externs_found_in_fresh_directories_point_there() {
        let fresh = tempfile::tempdir().unwrap();
        std::fs::write(fresh.path().join("libcore_lib-a1.rmeta"), "").unwrap();
        let args = [
            "--extern",
            "core_lib=/t/deps/libcore_lib-a1.rmeta",
            "--extern",
            "noprelude:other=/t/deps/libother-b2.rlib",
        ]
        .map(String::from)
        .to_vec();
        let dir = fresh.path().to_owned();
        let linked = link_fresh_libraries(args, std::slice::from_ref(&dir));
        let core = dir.join("libcore_lib-a1.rmeta");
        assert_eq!(
            linked,
            [
                "--extern".to_string(),
                format!("core_lib={}", core.display()),
                "--extern".into(),
                "noprelude:other=/t/deps/libother-b2.rlib".into(),
                "-L".into(),
                format!("dependency={}", dir.display()),
            ]
        );
    }

    #[test]
    fn diagnostics_are_rendered_and_artifacts_skipped() {
        let stderr = concat!(
            r#"{"$message_type":"artifact","artifact":"x.d","emit":"dep-info"}"#,
            "\n",
            r#"{"$message_type":"diagnostic","message":"m","rendered":"error: m\n"}"#,
            "\nplain text\n\n"
        );
        assert_eq!(rendered_diagnostics(stderr), ["error: m\n", "plain text\n"]);
    }
}
