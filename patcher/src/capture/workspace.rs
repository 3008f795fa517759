//! The user's cargo workspace as `cargo metadata` describes it, and the choice of the one
//! executable to build, made the way `cargo run` makes it.

use crate::commands::args::TargetSelection;
use linker_shim::{Context, Error, Result, Store, TargetKey, TargetKind};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace members and where cargo puts their artifacts.
#[derive(Debug, Clone, Deserialize)]
pub struct Workspace {
    #[serde(rename = "workspace_root")]
    pub root: PathBuf,
    #[serde(rename = "target_directory")]
    pub target_dir: PathBuf,
    pub packages: Vec<Package>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Package {
    pub name: String,
    /// Where it comes from (a registry, git); `None` for a local package on disk.
    #[serde(default)]
    pub source: Option<String>,
    pub manifest_path: PathBuf,
    pub targets: Vec<Target>,
    pub default_run: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Target {
    pub name: String,
    pub kind: Vec<String>,
    pub src_path: PathBuf,
}

impl Target {
    fn executable_kind(&self) -> Option<TargetKind> {
        if self.kind.iter().any(|k| k == "bin") {
            Some(TargetKind::Bin)
        } else if self.kind.iter().any(|k| k == "example") {
            Some(TargetKind::Example)
        } else {
            None
        }
    }
}

impl Package {
    fn dir(&self) -> &Path {
        self.manifest_path.parent().unwrap_or(Path::new("/"))
    }

    fn executables(&self, kind: TargetKind) -> impl Iterator<Item = &Target> {
        self.targets
            .iter()
            .filter(move |t| t.executable_kind() == Some(kind))
    }
}

impl Workspace {
    /// Runs `cargo metadata --no-deps` for the workspace of `manifest_path` (or of the
    /// current directory).
    pub fn load(manifest_path: Option<&Path>) -> Result<Workspace> {
        Workspace::metadata(manifest_path, &["--no-deps"])
    }

    /// The directories of the local packages of the build: the members and every path
    /// dependency, wherever it lives (`cargo metadata` with dependencies resolved).
    pub fn local_package_dirs(manifest_path: Option<&Path>) -> Result<Vec<PathBuf>> {
        let resolved = Workspace::metadata(manifest_path, &[])?;
        Ok(resolved
            .packages
            .iter()
            .filter(|package| package.source.is_none())
            .map(|package| package.dir().to_owned())
            .collect())
    }

    fn metadata(manifest_path: Option<&Path>, flags: &[&str]) -> Result<Workspace> {
        let mut cargo = Command::new(cargo_program());
        cargo
            .args(["metadata", "--format-version", "1"])
            .args(flags);
        if let Some(path) = manifest_path {
            cargo.arg("--manifest-path").arg(path);
        }
        let output = cargo
            .output()
            .context(|| "could not run `cargo metadata`".into())?;
        if !output.status.success() {
            return Err(Error::new(format!(
                "`cargo metadata` failed; is this a cargo project?\n{}",
                String::from_utf8_lossy(&output.stderr).trim_end()
            )));
        }
        serde_json::from_slice(&output.stdout)
            .context(|| "could not parse the output of `cargo metadata`".into())
    }

    /// The revision store for `selection` (honours `--target-dir`).
    pub fn store(&self, selection: &TargetSelection) -> Store {
        Store::for_target_dir(selection.target_dir.as_deref().unwrap_or(&self.target_dir))
    }

    /// Picks the executable `selection` designates, or explains how to designate one.
    pub fn resolve(&self, selection: &TargetSelection) -> Result<TargetKey> {
        let packages = self.candidate_packages(selection)?;
        let (kind, wanted) = match (&selection.example, &selection.bin) {
            (Some(example), _) => (TargetKind::Example, Some(example)),
            (None, bin) => (TargetKind::Bin, bin.as_ref()),
        };
        let mut matches: Vec<(&Package, &Target)> = packages
            .iter()
            .flat_map(|package| {
                package
                    .executables(kind)
                    .map(move |target| (*package, target))
            })
            .filter(|(_, target)| wanted.is_none_or(|name| &target.name == name))
            .collect();
        if wanted.is_none() && matches.len() > 1 {
            if let [package] = packages.as_slice() {
                if let Some(default_run) = &package.default_run {
                    matches.retain(|(_, target)| &target.name == default_run);
                }
            }
        }
        let available = || {
            let names: Vec<String> = packages
                .iter()
                .flat_map(|p| {
                    p.executables(kind)
                        .map(move |t| format!("{} (package {})", t.name, p.name))
                })
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        let flag = kind.cargo_flag();
        match matches.as_slice() {
            [(package, target)] => Ok(TargetKey {
                package: package.name.clone(),
                kind,
                name: target.name.clone(),
                profile: selection.profile().to_owned(),
            }),
            [] => Err(Error::new(match wanted {
                Some(name) => format!("no {} target named `{name}`; available: {}", &flag[2..], available()),
                None => format!("no {} target to build; available: {}", &flag[2..], available()),
            })),
            _ => Err(Error::new(format!(
                "could not determine which {} to build; use `{flag} NAME` or `-p PACKAGE` to pick one. \
                 Available: {}",
                &flag[2..],
                available()
            ))),
        }
    }

    /// `-p`, else the package whose manifest was given or whose directory we are in, else all.
    fn candidate_packages(&self, selection: &TargetSelection) -> Result<Vec<&Package>> {
        if let Some(name) = &selection.package {
            let package = self
                .packages
                .iter()
                .find(|p| &p.name == name)
                .ok_or_else(|| {
                    let names: Vec<&str> = self.packages.iter().map(|p| p.name.as_str()).collect();
                    Error::new(format!(
                        "package `{name}` is not in the workspace; members: {}",
                        names.join(", ")
                    ))
                })?;
            return Ok(vec![package]);
        }
        let here = match &selection.manifest_path {
            Some(manifest) => manifest
                .canonicalize()
                .ok()
                .and_then(|m| m.parent().map(Path::to_owned)),
            None => std::env::current_dir().ok(),
        };
        let current = here.and_then(|here| {
            self.packages
                .iter()
                .filter(|p| here.starts_with(p.dir()))
                .max_by_key(|p| p.dir().as_os_str().len())
        });
        Ok(match current {
            Some(package) => vec![package],
            None => self.packages.iter().collect(),
        })
    }

    /// Names of the workspace's packages (invocations of other crates are not ours).
    pub fn package_names(&self) -> impl Iterator<Item = &str> {
        self.packages.iter().map(|p| p.name.as_str())
    }
}

/// The cargo that started us (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo_program() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}
