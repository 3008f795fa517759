//! Builds the runtime as a shared library (`hotreload-preload`, profile `agent`) for `hotpatch`
//! to embed: `hotpatch run` preloads it into a program that does not link `hotreload`, so
//! `cargo install --path patcher` is all it takes, with nothing to find or download at run time.
//!
//! A nested cargo builds it into a target directory of its own (cargo's lock on the outer one,
//! held while this script runs, would deadlock): `<target>/hotpatch-agent`, beside the outer
//! profiles, shared by every profile and check of patcher so CI builds it once; the library is
//! copied into `OUT_DIR`, which `include_bytes!` reads.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The crates the embedded library is built from, relative to the checkout.
const AGENT_SOURCES: [&str; 7] = [
    "Cargo.toml", // the `agent` profile
    "hotreload/src",
    "hotreload/Cargo.toml",
    "hotreload-abi",
    "hotreload-macro",
    "hotreload-preload",
    "Cargo.lock",
];

fn main() {
    let checkout = PathBuf::from(env("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("patcher/ is inside the checkout")
        .to_owned();
    for source in AGENT_SOURCES {
        println!("cargo:rerun-if-changed={}", checkout.join(source).display());
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let target_dir = agent_target_dir(&out_dir);
    let output = Command::new(env("CARGO"))
        .args(["build", "--profile", "agent", "-p", "hotreload-preload"])
        .arg("--manifest-path")
        .arg(checkout.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // `cargo clippy` runs build scripts with clippy as the workspace's rustc wrapper: the
        // library is built, not linted (and keeps one fingerprint whoever builds it).
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CLIPPY_ARGS")
        .output()
        .expect("could not run cargo to build hotreload-preload");
    if !output.status.success() {
        panic!(
            "building hotreload-preload (the agent hotpatch embeds) failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let library = target_dir.join("agent").join("libhotreload_preload.so");
    std::fs::copy(&library, out_dir.join("libhotreload_preload.so"))
        .unwrap_or_else(|error| panic!("could not copy {}: {error}", library.display()));
}

/// `<target>/hotpatch-agent` when `OUT_DIR` is cargo's usual `<target>/<profile>/build/<pkg>/out`,
/// else a directory inside `OUT_DIR`.
fn agent_target_dir(out_dir: &Path) -> PathBuf {
    let mut ancestors = out_dir.ancestors();
    match (ancestors.nth(2), ancestors.nth(1)) {
        (Some(build), Some(target)) if build.file_name().is_some_and(|name| name == "build") => {
            target.join("hotpatch-agent")
        }
        _ => out_dir.join("hotpatch-agent"),
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
