//! The hotpatch checkout these crates were compiled from, and its `hotpatch` binary: tests and
//! the bench run the real CLI, which no package can depend on as a binary, so cargo builds it.

use linker_shim::{Context, Error, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The root of the checkout (the workspace directory).
pub fn checkout_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ is inside the checkout")
}

/// The cargo that runs us (`$CARGO` under `cargo test` / `cargo run`), else `cargo` on PATH.
pub fn cargo() -> PathBuf {
    std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from)
}

/// Builds (or finds up to date) this checkout's `hotpatch` binary and returns its path: in the
/// release profile if `release`, into `target_dir` if given (else cargo's default for the
/// checkout, which honours `CARGO_TARGET_DIR`).
pub fn build_hotpatch(release: bool, target_dir: Option<&Path>) -> Result<PathBuf> {
    let cargo = cargo();
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--message-format=json", "-p", "patcher", "--bin"])
        .arg("hotpatch")
        .arg("--manifest-path")
        .arg(checkout_dir().join("Cargo.toml"));
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    if release {
        command.arg("--release");
    }
    let output = command
        .output()
        .context(|| format!("could not run {}", cargo.display()))?;
    if !output.status.success() {
        return Err(Error::new(format!(
            "building hotpatch failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "hotpatch"
        })
        .and_then(|artifact| artifact["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| Error::new("cargo reported no hotpatch executable"))
}

/// The source directory of the registry package `name` this checkout depends on (from `cargo
/// metadata`, so in cargo's own cache: nothing is downloaded that the build did not need).
pub fn registry_package_dir(name: &str) -> Result<PathBuf> {
    let output = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(checkout_dir().join("Cargo.toml"))
        .output()
        .context(|| "could not run cargo metadata".into())?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).context(|| {
        format!(
            "cargo metadata said: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|package| package["name"] == name && package["source"].is_string())
        .and_then(|package| package["manifest_path"].as_str())
        .and_then(|manifest| Path::new(manifest).parent().map(Path::to_path_buf))
        .ok_or_else(|| {
            Error::new(format!(
                "the checkout depends on no registry package `{name}`"
            ))
        })
}
