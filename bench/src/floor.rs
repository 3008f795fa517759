//! The compiler floor: what rustc alone needs for the same edit, measured in the same run.
//!
//! It is the recorded invocations of the edited crate and of every local crate depending on
//! it, up to the binary crate, dependencies first (patcher's crate graph decides which), exactly
//! as hotpatch recorded them (every flag, the environment, the working directory) with these
//! changes: `--out-dir` points at a scratch directory per crate, `-C incremental` at the
//! floor's own copy of the incremental cache, each dependent's `--extern` at the rlib the
//! floor just built, and the linker is `/bin/true` — parsing, analysis, codegen and the object
//! files, but no link. The copy is taken from the cache of `hotpatch build` before the
//! session starts, and compiled once unchanged (untimed: a first compile into a new output
//! directory reuses much less of the cache); each floor compile then follows the hotpatch
//! compile of the same edit, so both start from the previous version's cache.

use hotreload_abi::events::CrateMillis;
use linker_shim::{Context, Error, Result, RustcInvocation, Store};
use patcher::pipeline::recompile::crates::LocalCrates;
use patcher::pipeline::recompile::{link_fresh_libraries, redirect_out_dir};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Re-runs the recorded compilations an edit of one crate needs, without linking.
pub struct CompilerFloor {
    /// In order: the edited crate (if a library), the libraries depending on it, the binary.
    compiles: Vec<CrateCompile>,
}

/// One crate's recorded compilation with the floor's arguments.
struct CrateCompile {
    invocation: RustcInvocation,
    args: Vec<String>,
}

impl CompilerFloor {
    /// The floor for an edit of crate `edited` of the program whose binary crate is `binary`,
    /// built through hotpatch into `target_dir`; keeps its caches and outputs under `scratch`
    /// (emptied first).
    pub fn prepare(
        target_dir: &Path,
        binary: &str,
        edited: &str,
        scratch: &Path,
    ) -> Result<CompilerFloor> {
        let recorded = Store::for_target_dir(target_dir).invocations()?;
        let binary_invocation = recorded
            .iter()
            .find(|i| i.crate_name == binary && i.crate_types.iter().any(|t| t == "bin"))
            .ok_or_else(|| Error::new(format!("hotpatch recorded no invocation of {binary}")))?;
        let crates = LocalCrates::new(binary_invocation, &recorded);
        let edited_index = crates
            .iter()
            .find(|(_, krate)| krate.name() == edited)
            .map(|(index, _)| index)
            .ok_or_else(|| Error::new(format!("hotpatch recorded no invocation of {edited}")))?;
        let mut order = crates.libraries_to_rebuild(&BTreeSet::from([edited_index]));
        order.push(crates.binary());

        let _ = std::fs::remove_dir_all(scratch);
        let incremental = scratch.join("incremental");
        let mut floor = CompilerFloor {
            compiles: Vec::new(),
        };
        let mut fresh_dirs: Vec<PathBuf> = Vec::new();
        for index in order {
            let invocation = crates.get(index).invocation.clone();
            let name = &invocation.crate_name;
            let out_dir = scratch.join("out").join(name);
            std::fs::create_dir_all(&out_dir)
                .context(|| format!("could not create {}", out_dir.display()))?;
            let recorded_cache = codegen_option(&invocation.args, "incremental")
                .map(PathBuf::from)
                .ok_or_else(|| Error::new(format!("{name} is not compiled incrementally")))?;
            copy_crate_caches(&recorded_cache, name, &incremental)?;
            let args = redirect_out_dir(invocation.compiler_args(Path::new("/bin/true")), &out_dir);
            let args = link_fresh_libraries(args, &fresh_dirs);
            let args = with_codegen_option(args, "incremental", &incremental.display().to_string());
            let compile = CrateCompile { invocation, args };
            // rustc reuses far less of its cache the first time it compiles into an output
            // directory; the floor measures the steady state. This also leaves the rlib the
            // dependents' `--extern` now names.
            compile.run()?;
            floor.compiles.push(compile);
            fresh_dirs.push(out_dir);
        }
        Ok(floor)
    }

    /// Compiles the current sources once; each crate's compiler wall time, in order.
    pub fn compile(&self) -> Result<Vec<CrateMillis>> {
        self.compiles
            .iter()
            .map(|compile| {
                let started = Instant::now();
                compile.run()?;
                Ok(CrateMillis {
                    name: compile.invocation.crate_name.clone(),
                    ms: started.elapsed().as_secs_f64() * 1e3,
                })
            })
            .collect()
    }
}

impl CrateCompile {
    fn run(&self) -> Result<()> {
        let output = Command::new(&self.invocation.rustc)
            .args(&self.args)
            .env_clear()
            .envs(&self.invocation.env)
            .current_dir(&self.invocation.cwd)
            .output()
            .context(|| format!("could not run {}", self.invocation.rustc.display()))?;
        if !output.status.success() {
            return Err(Error::new(format!(
                "the floor compile of {} failed:\n{}",
                self.invocation.crate_name,
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }
}

/// The value of the last `-C name=value` (or `-Cname=value`) in `args`.
fn codegen_option<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    let mut found = None;
    for (index, arg) in args.iter().enumerate() {
        let option = match arg.strip_prefix("-C") {
            Some("") => args.get(index + 1).map(String::as_str),
            Some(joined) => Some(joined),
            None => None,
        };
        if let Some(value) = option.and_then(|option| option.strip_prefix(&prefix)) {
            found = Some(value);
        }
    }
    found
}

/// `args` with every `-C name=…` set to `value`.
fn with_codegen_option(args: Vec<String>, name: &str, value: &str) -> Vec<String> {
    let prefix = format!("{name}=");
    args.into_iter()
        .map(|arg| match arg.strip_prefix("-C") {
            Some(option) if option.starts_with(&prefix) => format!("-C{prefix}{value}"),
            _ if arg.starts_with(&prefix) => format!("{prefix}{value}"),
            _ => arg,
        })
        .collect()
}

/// How many times the copy of a crate's incremental cache is tried: the session's background
/// warm-up build may be compiling the same crate meanwhile, and rustc deletes a superseded
/// session directory, possibly while it is being copied.
const CACHE_COPY_ATTEMPTS: u32 = 5;
/// The pause before the copy is tried again.
const CACHE_COPY_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Copies the finished session directories of `crate_name` (`<crate>-<hash>/`) from an
/// incremental cache into `to`, again from the start if one vanished during the copy.
fn copy_crate_caches(cache: &Path, crate_name: &str, to: &Path) -> Result<()> {
    let mut attempt = 1;
    loop {
        match copy_finished_sessions(cache, crate_name, to) {
            Err(_) if attempt < CACHE_COPY_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(CACHE_COPY_RETRY_PAUSE);
            }
            copied => return copied,
        }
    }
}

/// One attempt of [`copy_crate_caches`]: replaces what an earlier one left, and leaves out
/// the session directories a compiler is still writing (`…-working`).
fn copy_finished_sessions(cache: &Path, crate_name: &str, to: &Path) -> Result<()> {
    let prefix = format!("{crate_name}-");
    let entries =
        std::fs::read_dir(cache).context(|| format!("could not list {}", cache.display()))?;
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let copy = to.join(entry.file_name());
            let _ = std::fs::remove_dir_all(&copy);
            copy_tree(&entry.path(), &copy, |name| name.ends_with("-working"))?;
        }
    }
    Ok(())
}

/// Copies directory `from` to `to`, leaving out the entries directly in `from` whose names
/// `left_out` picks.
fn copy_tree(from: &Path, to: &Path, left_out: fn(&str) -> bool) -> Result<()> {
    std::fs::create_dir_all(to).context(|| format!("could not create {}", to.display()))?;
    let entries =
        std::fs::read_dir(from).context(|| format!("could not list {}", from.display()))?;
    for entry in entries.flatten() {
        if left_out(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            copy_tree(&entry.path(), &target, |_| false)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .context(|| format!("could not copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_option_is_found_and_replaced_in_both_spellings() {
        let args = [
            "-C",
            "incremental=/t/inc",
            "-Copt-level=0",
            "-Cincremental=/t/2",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(codegen_option(&args, "incremental"), Some("/t/2"));
        assert_eq!(codegen_option(&args, "opt-level"), Some("0"));
        assert_eq!(
            with_codegen_option(args, "incremental", "/f"),
            ["-C", "incremental=/f", "-Copt-level=0", "-Cincremental=/f"]
        );
    }

    #[test]
    fn the_cache_copy_leaves_out_sessions_being_written_and_other_crates() {
        let root = std::env::temp_dir().join(format!("bench-floor-{}", std::process::id()));
        let (cache, to) = (root.join("incremental"), root.join("copy"));
        let files = [
            "app-1a/s-1-x-finished/query-cache.bin",
            "app-1a/s-1-x.lock",
            "app-1a/s-2-y-working/dep-graph.part.bin",
            "other-2b/s-1-z-finished/query-cache.bin",
        ];
        for file in files {
            let path = cache.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, file).unwrap();
        }
        std::fs::create_dir_all(to.join("app-1a/s-0-stale")).unwrap();
        copy_crate_caches(&cache, "app", &to).unwrap();
        let copied = |file: &str| to.join(file).exists();
        assert!(copied(files[0]) && copied(files[1]));
        assert!(!copied("app-1a/s-2-y-working"), "still being written");
        assert!(!copied("other-2b"), "another crate");
        assert!(
            !copied("app-1a/s-0-stale"),
            "an earlier attempt's copy is replaced"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
