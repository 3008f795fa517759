//! The user's cargo workspace as `cargo metadata` describes it, and the choice of the one
//! executable to build, made the way `cargo run` makes it.

use crate::commands::args::TargetSelection;
use hotreload_abi::protocol::RUNTIME_PACKAGES;
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

impl Package {
    /// On disk (no registry or git source) and not one of the runtime's own packages.
    fn is_local(&self) -> bool {
        self.source.is_none() && !RUNTIME_PACKAGES.contains(&self.name.as_str())
    }
}

impl Workspace {
    /// Runs `cargo metadata --no-deps` for the workspace of `manifest_path` (or of the
    /// current directory).
    pub fn load(manifest_path: Option<&Path>) -> Result<Workspace> {
        Workspace::metadata(manifest_path, &["--no-deps"])
    }

    /// The directories of the local packages of the build: the members and every path
    /// dependency, wherever it lives (`cargo metadata` with dependencies resolved) — except
    /// the runtime's own packages, which are never patched.
    pub fn local_package_dirs(manifest_path: Option<&Path>) -> Result<Vec<PathBuf>> {
        let resolved = Workspace::metadata(manifest_path, &[])?;
        Ok(resolved
            .packages
            .iter()
            .filter(|package| package.is_local())
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A package as `cargo metadata` lists it (with a few of the fields we ignore), in `dir`.
    fn package(name: &str, dir: &Path, targets: &[(&str, &str)]) -> serde_json::Value {
        json!({
            "name": name,
            "version": "0.1.0",
            "id": format!("path+file://{}#{name}@0.1.0", dir.display()),
            "manifest_path": dir.join("Cargo.toml"),
            "default_run": null,
            "edition": "2021",
            "targets": targets.iter().map(|(target, kind)| json!({
                "name": target,
                "kind": [kind],
                "crate_types": [kind],
                "src_path": dir.join("src").join(format!("{target}.rs")),
                "edition": "2021",
            })).collect::<Vec<_>>(),
        })
    }

    fn workspace(packages: Vec<serde_json::Value>) -> Workspace {
        let metadata = json!({
            "packages": packages,
            "workspace_members": [],
            "workspace_root": "/nonexistent/ws",
            "target_directory": "/nonexistent/ws/target",
            "version": 1,
        });
        serde_json::from_str(&metadata.to_string()).expect("cargo metadata parses")
    }

    fn ws_dir(name: &str) -> PathBuf {
        Path::new("/nonexistent/ws").join(name)
    }

    fn selection() -> TargetSelection {
        TargetSelection::default()
    }

    fn key(package: &str, kind: TargetKind, name: &str, profile: &str) -> TargetKey {
        TargetKey {
            package: package.into(),
            kind,
            name: name.into(),
            profile: profile.into(),
        }
    }

    fn error_of(workspace: &Workspace, selection: &TargetSelection) -> String {
        workspace.resolve(selection).unwrap_err().to_string()
    }

    /// `core` (a library only), `app` (binaries `app` and `tool`, example `demo`), `server`.
    fn three_packages() -> Workspace {
        workspace(vec![
            package("core", &ws_dir("core"), &[("core", "lib")]),
            package(
                "app",
                &ws_dir("app"),
                &[("app", "bin"), ("tool", "bin"), ("demo", "example")],
            ),
            package("server", &ws_dir("server"), &[("server", "bin")]),
        ])
    }

    #[test]
    fn cargo_metadata_output_parses() {
        let ws = three_packages();
        assert_eq!(ws.root, Path::new("/nonexistent/ws"));
        assert_eq!(ws.target_dir, Path::new("/nonexistent/ws/target"));
        assert_eq!(
            ws.package_names().collect::<Vec<_>>(),
            ["core", "app", "server"]
        );
        let app = &ws.packages[1];
        assert_eq!(app.dir(), ws_dir("app"));
        assert_eq!(app.default_run, None);
        assert_eq!(app.targets[2].executable_kind(), Some(TargetKind::Example));
        assert_eq!(ws.packages[0].targets[0].executable_kind(), None);
    }

    #[test]
    fn the_only_package_with_a_binary_is_chosen() {
        let ws = workspace(vec![
            package("core", &ws_dir("core"), &[("core", "lib")]),
            package("app", &ws_dir("app"), &[("app", "bin"), ("app", "lib")]),
        ]);
        assert_eq!(
            ws.resolve(&selection()).unwrap(),
            key("app", TargetKind::Bin, "app", "dev")
        );
    }

    #[test]
    fn several_binaries_need_a_choice() {
        let ws = three_packages();
        let error = error_of(&ws, &selection());
        assert!(error.contains("could not determine which bin"), "{error}");
        assert!(
            error.contains("app (package app), tool (package app), server (package server)"),
            "{error}"
        );
    }

    #[test]
    fn package_and_bin_choose() {
        let ws = three_packages();
        let server = TargetSelection {
            package: Some("server".into()),
            ..selection()
        };
        assert_eq!(
            ws.resolve(&server).unwrap(),
            key("server", TargetKind::Bin, "server", "dev")
        );
        let tool = TargetSelection {
            bin: Some("tool".into()),
            release: true,
            ..selection()
        };
        assert_eq!(
            ws.resolve(&tool).unwrap(),
            key("app", TargetKind::Bin, "tool", "release")
        );
    }

    #[test]
    fn default_run_picks_among_a_packages_binaries() {
        let mut app = package("app", &ws_dir("app"), &[("app", "bin"), ("tool", "bin")]);
        let only_app = TargetSelection {
            package: Some("app".into()),
            ..selection()
        };
        let error = error_of(&workspace(vec![app.clone()]), &only_app);
        assert!(error.contains("use `--bin NAME`"), "{error}");
        app["default_run"] = json!("tool");
        assert_eq!(
            workspace(vec![app]).resolve(&only_app).unwrap(),
            key("app", TargetKind::Bin, "tool", "dev")
        );
    }

    #[test]
    fn examples_are_chosen_with_example() {
        let ws = three_packages();
        let demo = TargetSelection {
            example: Some("demo".into()),
            ..selection()
        };
        assert_eq!(
            ws.resolve(&demo).unwrap(),
            key("app", TargetKind::Example, "demo", "dev")
        );
        let missing = TargetSelection {
            example: Some("app".into()),
            ..selection()
        };
        let error = error_of(&ws, &missing);
        assert_eq!(
            error,
            "no example target named `app`; available: demo (package app)"
        );
    }

    #[test]
    fn missing_targets_and_packages_are_explained() {
        let ws = three_packages();
        let nope = TargetSelection {
            bin: Some("nope".into()),
            ..selection()
        };
        assert!(error_of(&ws, &nope)
            .starts_with("no bin target named `nope`; available: app (package app)"));
        let unknown = TargetSelection {
            package: Some("nope".into()),
            ..selection()
        };
        assert_eq!(
            error_of(&ws, &unknown),
            "package `nope` is not in the workspace; members: core, app, server"
        );
        let libraries = workspace(vec![package("core", &ws_dir("core"), &[("core", "lib")])]);
        assert_eq!(
            error_of(&libraries, &selection()),
            "no bin target to build; available: none"
        );
    }

    #[test]
    fn the_package_of_the_manifest_given_is_the_innermost_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let member = root.join("tools");
        std::fs::create_dir_all(&member).unwrap();
        for manifest in [root.join("Cargo.toml"), member.join("Cargo.toml")] {
            std::fs::write(manifest, "").unwrap();
        }
        let ws = workspace(vec![
            package("root-app", &root, &[("root-app", "bin")]),
            package("tools", &member, &[("tools", "bin")]),
        ]);
        let in_member = TargetSelection {
            manifest_path: Some(member.join("Cargo.toml")),
            ..selection()
        };
        assert_eq!(
            ws.resolve(&in_member).unwrap(),
            key("tools", TargetKind::Bin, "tools", "dev")
        );
        let in_root = TargetSelection {
            manifest_path: Some(root.join("Cargo.toml")),
            ..selection()
        };
        assert_eq!(
            ws.resolve(&in_root).unwrap(),
            key("root-app", TargetKind::Bin, "root-app", "dev")
        );
    }

    #[test]
    fn local_packages_are_on_disk_and_not_the_runtime() {
        let package = |name: &str, source: Option<&str>| Package {
            name: name.into(),
            source: source.map(Into::into),
            manifest_path: PathBuf::from("/w").join(name).join("Cargo.toml"),
            targets: Vec::new(),
            default_run: None,
        };
        assert!(package("game", None).is_local());
        assert!(!package("serde", Some("registry")).is_local());
        for runtime in RUNTIME_PACKAGES {
            assert!(!package(runtime, None).is_local(), "{runtime}");
        }
    }
}
