//! Cargo-style flags shared by `hotpatch build`, `hotpatch diff` and `hotpatch run`.

use clap::{Args, ValueEnum};
use std::path::PathBuf;

/// Which executable of which workspace: the flags `cargo run` uses to pick one.
#[derive(Debug, Clone, Default, Args)]
pub struct TargetSelection {
    /// Package that contains the binary [default: the package in the current directory,
    /// or the workspace's only package with a binary]
    #[arg(
        short = 'p',
        long,
        value_name = "SPEC",
        help_heading = "Target selection"
    )]
    pub package: Option<String>,

    /// Binary to build [default: the package's `default-run` or its only binary]
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "example",
        help_heading = "Target selection"
    )]
    pub bin: Option<String>,

    /// Build this example (`examples/NAME.rs`) instead of a binary
    #[arg(long, value_name = "NAME", help_heading = "Target selection")]
    pub example: Option<String>,

    /// Path to the workspace's or package's Cargo.toml [default: found from the current directory]
    #[arg(long, value_name = "PATH", help_heading = "Manifest options")]
    pub manifest_path: Option<PathBuf>,

    /// Use the release profile (inlining then spreads an edit into the callers of what changed)
    #[arg(short = 'r', long, help_heading = "Compilation options")]
    pub release: bool,

    /// Cargo's target directory; hotpatch keeps its builds and revisions in DIR/hotpatch
    /// [default: cargo's own, usually ./target]
    #[arg(long, value_name = "DIR", help_heading = "Compilation options")]
    pub target_dir: Option<PathBuf>,
}

impl TargetSelection {
    /// Cargo profile name the selection builds with.
    pub fn profile(&self) -> &'static str {
        if self.release {
            "release"
        } else {
            "dev"
        }
    }
}

/// Everything `hotpatch build` and `hotpatch run` pass on to cargo.
#[derive(Debug, Clone, Default, Args)]
pub struct CargoArgs {
    #[command(flatten)]
    pub selection: TargetSelection,

    /// Space or comma separated list of features to activate
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature selection"
    )]
    pub features: Vec<String>,

    /// Activate all available features
    #[arg(long, help_heading = "Feature selection")]
    pub all_features: bool,

    /// Do not activate the `default` feature
    #[arg(long, help_heading = "Feature selection")]
    pub no_default_features: bool,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// How hotpatch reports what it did.
#[derive(Debug, Clone, Default, Args)]
pub struct OutputArgs {
    /// `human`: readable lines; `json`: one JSON object per line, for tools and tests
    #[arg(long, value_enum, value_name = "FMT", default_value_t)]
    pub message_format: MessageFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum MessageFormat {
    #[default]
    Human,
    Json,
}

impl CargoArgs {
    /// The feature flags in cargo's own spelling.
    pub fn feature_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if !self.features.is_empty() {
            flags.push("--features".to_owned());
            flags.push(self.features.join(","));
        }
        if self.all_features {
            flags.push("--all-features".to_owned());
        }
        if self.no_default_features {
            flags.push("--no-default-features".to_owned());
        }
        flags
    }
}
