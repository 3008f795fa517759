//! `hotpatch build`: cargo builds the selected executable with hotpatch as rustc wrapper and
//! linker, into hotpatch's own target directory, and the link becomes a revision.

use crate::capture::workspace::{cargo_program, Workspace};
use crate::capture::wrapper::{WrapRequest, WRAP_REQUEST_ENV};
use crate::commands::args::{CargoArgs, MessageFormat};
use linker_shim::{
    read_build_id, Context, Error, Result, Revision, RoleRequest, RustcInvocation, Store, TargetKey,
};
use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a build produced.
#[derive(Debug, Clone)]
pub struct BuildOutcome {
    pub target: TargetKey,
    pub store: Store,
    /// The revision whose build-id matches the executable.
    pub revision: Revision,
    /// The executable to run (cargo's copy in `<target-dir>/hotpatch/cargo/<profile>/`).
    pub exe: PathBuf,
    /// The latest recorded rustc invocation of every local crate (workspace members and path
    /// dependencies) built through hotpatch.
    pub invocations: Vec<RustcInvocation>,
    /// False when cargo found everything fresh and the latest revision was reused.
    pub linked: bool,
    pub duration: Duration,
}

/// Builds the executable `args` select and records its revision. `hotpatch_exe` is the
/// `hotpatch` binary cargo and rustc will run as wrapper and linker.
pub fn build(args: &CargoArgs, hotpatch_exe: &Path) -> Result<BuildOutcome> {
    let started = Instant::now();
    let Located {
        target,
        store,
        local_packages,
    } = locate(args)?;
    let newest_before = store.latest(&target)?.map(|revision| revision.id);
    let cargo = Cargo {
        args,
        target: &target,
        store: &store,
        hotpatch_exe,
        local_packages: &local_packages,
    };

    let mut exe = cargo.run(&["build"])?;
    let mut build_id = read_build_id(&exe)?;
    let mut revision = matching_revision(&store, &target, build_id.as_deref())?
        .filter(|revision| recorded_here(revision, &store, &local_packages));
    if revision.is_none() {
        // Cargo considered the executable fresh, but its revision is gone (pruned, or the
        // store was deleted), or was recorded where the project was before it was moved or
        // copied (its paths name the old place): make cargo compile and link it again.
        cargo.run(&["clean"])?;
        exe = cargo.run(&["build"])?;
        build_id = read_build_id(&exe)?;
        revision = matching_revision(&store, &target, build_id.as_deref())?;
    }
    let revision = revision.ok_or_else(|| {
        Error::new(format!(
            "cargo built {} but hotpatch recorded no link of it in {}; is another linker or \
             `RUSTC_WORKSPACE_WRAPPER` configured for this project?",
            exe.display(),
            store.root().display()
        ))
    })?;
    Ok(BuildOutcome {
        linked: newest_before.as_ref() != Some(&revision.id),
        invocations: local_invocations(&store, &target, &local_packages)?,
        target,
        store,
        revision,
        exe,
        duration: started.elapsed(),
    })
}

/// The target `args` select, its store and the workspace's local packages, without building.
pub struct Located {
    pub target: TargetKey,
    pub store: Store,
    pub local_packages: Vec<PathBuf>,
}

/// Finds what `args` select, as [`build`] does before running cargo.
pub fn locate(args: &CargoArgs) -> Result<Located> {
    let selection = &args.selection;
    let workspace = Workspace::load(selection.manifest_path.as_deref())?;
    Ok(Located {
        target: workspace.resolve(selection)?,
        store: workspace.store(selection),
        local_packages: Workspace::local_package_dirs(selection.manifest_path.as_deref())?,
    })
}

/// The build of `located`'s target whose executable has `build_id`, as [`build`] returned it
/// then: what `hotpatch attach` patches a running program from, without building anything.
pub fn recorded_build(located: Located, build_id: &str) -> Result<BuildOutcome> {
    let Located {
        target,
        store,
        local_packages,
    } = located;
    let revision = matching_revision(&store, &target, Some(build_id))?.ok_or_else(|| {
        Error::new(format!(
            "no build of {target} with build-id {build_id} is stored in {} (pruned, or built elsewhere): restart the program with `hotpatch run`",
            store.root().display()
        ))
    })?;
    let exe = revision
        .exe
        .clone()
        .ok_or_else(|| Error::new(format!("revision {} records no executable", revision.id)))?;
    Ok(BuildOutcome {
        invocations: local_invocations(&store, &target, &local_packages)?,
        linked: false,
        target,
        store,
        revision,
        exe,
        duration: Duration::ZERO,
    })
}

/// The latest recorded rustc invocation of each of `local_packages` for `target`'s profile.
fn local_invocations(
    store: &Store,
    target: &TargetKey,
    local_packages: &[PathBuf],
) -> Result<Vec<RustcInvocation>> {
    Ok(store
        .invocations()?
        .into_iter()
        .filter(|invocation| {
            invocation.profile == target.profile
                && invocation
                    .env
                    .get("CARGO_MANIFEST_DIR")
                    .is_some_and(|dir| local_packages.iter().any(|local| local == Path::new(dir)))
        })
        .collect())
}

/// True when `revision` was recorded for this checkout: its executable lies in `store`, and
/// its binary crate was compiled from one of `local_packages`. A project moved or copied with
/// its target directory keeps revisions whose paths name the old place.
fn recorded_here(revision: &Revision, store: &Store, local_packages: &[PathBuf]) -> bool {
    let manifest_dir = revision
        .rustc
        .as_ref()
        .and_then(|invocation| invocation.env.get("CARGO_MANIFEST_DIR"));
    // Compared resolved (a relative or symlinked `--target-dir`); an executable that is gone
    // was recorded elsewhere.
    let root = std::fs::canonicalize(store.root());
    let exe = revision.exe.as_deref().map(std::fs::canonicalize);
    matches!((exe, root), (Some(Ok(exe)), Ok(root)) if exe.starts_with(&root))
        && manifest_dir
            .is_some_and(|dir| local_packages.iter().any(|local| local == Path::new(dir)))
}

/// The newest stored revision of `target` whose executable has `build_id`.
pub fn matching_revision(
    store: &Store,
    target: &TargetKey,
    build_id: Option<&str>,
) -> Result<Option<Revision>> {
    let Some(build_id) = build_id else {
        return Ok(None);
    };
    let revisions = store.list_for(target)?;
    Ok(revisions
        .into_iter()
        .rev()
        .find(|revision| revision.build_id.as_deref() == Some(build_id)))
}

/// Cargo as hotpatch runs it for one target.
struct Cargo<'a> {
    args: &'a CargoArgs,
    target: &'a TargetKey,
    store: &'a Store,
    hotpatch_exe: &'a Path,
    local_packages: &'a [PathBuf],
}

impl Cargo<'_> {
    /// Runs `cargo build` (returns the executable) or `cargo clean` for exactly `target`.
    fn run(&self, subcommand: &[&str]) -> Result<PathBuf> {
        let Cargo {
            args,
            target,
            store,
            hotpatch_exe,
            local_packages,
        } = *self;
        let building = subcommand == ["build"];
        // For tools, hotpatch's stderr carries only JSON events: cargo stays quiet and its
        // errors come back inside hotpatch's.
        let for_tools = args.output.message_format == MessageFormat::Json;
        let mut cargo = Command::new(cargo_program());
        cargo
            .args(subcommand)
            .arg("--target-dir")
            .arg(store.cargo_target_dir())
            .args(["-p", &target.package]);
        if let Some(manifest) = &args.selection.manifest_path {
            cargo.arg("--manifest-path").arg(manifest);
        }
        if args.selection.release {
            cargo.arg("--release");
        }
        if building {
            cargo
                .args([target.kind.cargo_flag(), &target.name])
                .args(args.feature_flags())
                .arg(if for_tools {
                    "--message-format=json"
                } else {
                    "--message-format=json-render-diagnostics"
                })
                .env("RUSTC_WRAPPER", hotpatch_exe)
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env(
                    WRAP_REQUEST_ENV,
                    WrapRequest {
                        store: store.root().to_owned(),
                        target: target.clone(),
                        local_packages: local_packages.to_vec(),
                        outer_wrapper: std::env::var_os("RUSTC_WRAPPER")
                            .filter(|wrapper| !wrapper.is_empty())
                            .map(PathBuf::from),
                    }
                    .to_env_value(),
                )
                .stdout(Stdio::piped());
        }
        if for_tools || !building {
            cargo.arg("--quiet");
        }
        let mut child = cargo
            .spawn()
            .context(|| format!("could not run `{}`", cargo_program().display()))?;
        let mut exe = None;
        let mut errors = String::new();
        if let Some(stdout) = child.stdout.take() {
            for line in BufReader::new(stdout).lines() {
                let line = line.context(|| "could not read cargo's output".into())?;
                exe = exe.or_else(|| executable_of(&line, target));
                errors.push_str(&rendered_error(&line).unwrap_or_default());
            }
        }
        let status = child.wait().context(|| "could not wait for cargo".into())?;
        if !status.success() {
            let shown = if errors.is_empty() {
                "; see the errors above".to_owned()
            } else {
                format!(":\n{errors}")
            };
            return Err(Error::new(format!(
                "`cargo {}` for {target} failed ({status}){shown}",
                subcommand[0]
            )));
        }
        match (building, exe) {
            (true, None) => Err(Error::new(format!(
                "cargo reported no executable for {target}"
            ))),
            (_, exe) => Ok(exe.unwrap_or_default()),
        }
    }
}

/// The rendered text of a `compiler-message` that is an error (cargo's JSON messages).
fn rendered_error(line: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct CompilerMessage {
        reason: String,
        message: Diagnostic,
    }
    #[derive(Deserialize)]
    struct Diagnostic {
        level: String,
        rendered: Option<String>,
    }
    let message: CompilerMessage = serde_json::from_str(line).ok()?;
    (message.reason == "compiler-message" && message.message.level == "error")
        .then_some(message.message.rendered)?
}

/// The `executable` of a `compiler-artifact` message for `target`.
fn executable_of(line: &str, target: &TargetKey) -> Option<PathBuf> {
    #[derive(Deserialize)]
    struct Artifact {
        reason: String,
        target: ArtifactTarget,
        executable: Option<PathBuf>,
    }
    #[derive(Deserialize)]
    struct ArtifactTarget {
        name: String,
    }
    let artifact: Artifact = serde_json::from_str(line).ok()?;
    (artifact.reason == "compiler-artifact" && artifact.target.name == target.name)
        .then_some(artifact.executable)?
}
