//! The `hotpatch` subcommands, one module each: its arguments and what it does (the shape of
//! cargo's `commands/*.rs`). [`Cli`] is the whole command line.

pub mod args;
mod attach;
mod build;
mod control;
mod diff;
pub mod revision_spec;
mod revisions;
mod run;

use crate::run::Request;
use clap::{Parser, Subcommand};
use linker_shim::{Error, Result, Store, TargetKey};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "hotpatch",
    version,
    about = "Edit a running Rust program: save a file, and the same process runs the new code.",
    long_about = "Edit a running Rust program: save a file, and the same process runs the new code.\n\n\
        `hotpatch run` builds your binary, starts it, and on every save recompiles the changed \
        crate, links what changed into a patch and has the running program map it and rewire \
        its #[hotreload] functions: statics, thread-locals, heap and open files stay as they \
        are. `hotpatch build`, `diff` and `revisions` show what the pieces see: the recorded \
        build (object files, link line, exact rustc invocation) under <target-dir>/hotpatch/ \
        and which functions an edit changed.\n\n\
        Your own `cargo build` is untouched: hotpatch builds into <target-dir>/hotpatch/cargo.",
    after_help = "Typical session:\n  \
        hotpatch run                # build, start, watch (in your crate's directory)\n  \
        $EDITOR src/main.rs         # change a function body and save: the program runs it\n  \
        hotpatch undo               # in another terminal: undo the last patch\n  \
        hotpatch restart            # restart from a fresh build (`hotpatch quit`: stop)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Build through cargo and record the link as a revision
    #[command(
        long_about = "Build the selected binary through cargo and record the link as a revision.\n\n\
        The binary is linked with `-Wl,--no-gc-sections` and keeps its symbol table, so a later \
        patch can call any function of std and be resolved against the executable. Each \
        workspace crate's rustc invocation is recorded so a patch can recompile it without cargo."
    )]
    Build(args::CargoArgs),
    /// Show which functions and data changed between two revisions
    #[command(
        long_about = "Show which functions and data changed between two revisions.\n\n\
        A function changed if its machine code or what it refers to changed. Callers of a \
        changed function are not listed as changed: their code still calls it by name. Data \
        whose size or section changed is flagged: a patch cannot migrate it.\n\n\
        REV is a revision id (see `hotpatch revisions`), `latest`, or `latest~N` (N revisions \
        before the latest)."
    )]
    Diff(diff::DiffArgs),
    /// Build, run the program, and patch it live on every save
    #[command(
        long_about = "Build the selected binary, run it, and patch it live on every save.\n\n\
        hotpatch watches the workspace's sources. When a file of the binary crate is saved, it \
        recompiles that crate alone with the recorded rustc invocation, diffs it against the \
        running build, links the changed functions (and their callers up to #[hotreload] \
        functions) into a patch image and has the program map it and rewire its slots. The \
        program keeps its state: statics, thread-locals, heap, open files and windows.\n\n\
        hotpatch's own messages go to its stderr; the program's stdout and stderr are \
        untouched. With `--message-format json` each message is one JSON object with an \
        \"event\" field: build-finished, app-started, watching, commands, patch-applied, \
        rolled-back, no-change, patch-refused, compile-error, warning, app-exited (their \
        fields: `hotreload_abi::events::Event`; patch-refused has a machine-readable `kind` \
        and `items` beside its `reason`).\n\n\
        The program owns the terminal: it gets hotpatch's stdin, and hotpatch reads no keys, so \
        a terminal UI or a program reading lines works as it does alone. Commands come from \
        another terminal: `hotpatch restart` (from a fresh build), `hotpatch undo` (the last \
        patch), `hotpatch quit`; or by signal: SIGUSR1 restarts, SIGUSR2 undoes, SIGINT/SIGTERM \
        quit. With --keys hotpatch reads r⏎, u⏎ and q⏎ from stdin instead, and the program \
        gets none: for programs that read no input.\n\n\
        hotpatch's human lines go to its stderr, except while the program has switched the \
        terminal to raw or no-echo mode, as every full-screen terminal UI does: they are held \
        then (never drawn over its screen) and printed when it switches back or ends; \
        `hotpatch log --follow` in another terminal shows them as they come (--status).\n\n\
        A program that exits with status 0 ends the run with it; one that crashes waits for a \
        restart.",
        after_help = "Examples:\n  \
        hotpatch run -p demo-app\n  \
        hotpatch run --manifest-path ../game/Cargo.toml -- --level 3\n  \
        hotpatch run --keys         # a program that reads no input: r⏎ u⏎ q⏎ here"
    )]
    Run(run::RunArgs),
    /// Patch a program whose `hotpatch run` is gone, with its state kept
    #[command(
        long_about = "Patch a program whose `hotpatch run` is gone (killed, its terminal closed), \
        with its state kept.\n\n\
        A program started by `hotpatch run` outlives its hotpatch and waits for another: \
        `hotpatch attach` connects to it (only as the user it runs as), learns what it runs (the \
        patches applied, their images, the redirected functions), patches in the edits saved \
        since, and then watches and patches like `hotpatch run`. `hotpatch run` names such \
        programs when it starts. Without PID it attaches to the only waiting program of the \
        selected binary.\n\n\
        q⏎ (read from a terminal's stdin), `hotpatch quit` or SIGTERM lets go of the program, \
        which runs on (attach again later); r⏎, `hotpatch restart` or SIGUSR1 restarts it from \
        a fresh build under this hotpatch; u⏎, `hotpatch undo` or SIGUSR2 undoes the patches \
        applied since attaching. Events (--message-format json) are `hotpatch run`'s, with \
        attached and detached.",
        after_help = "Examples:
          hotpatch attach             # the only waiting program of this crate's binary
          hotpatch attach 4242 -p demo-app"
    )]
    Attach(attach::AttachArgs),
    /// Restart the program of a running `hotpatch run` from a fresh build
    #[command(
        long_about = "Restart the program of a running `hotpatch run` (or `attach`) from a \
        fresh build: what r⏎ or SIGUSR1 do, from another terminal.\n\n\
        The session is the only one running in the project's target directory, or the one of \
        the target -p, --bin, --example and --release select. It is reached over its control \
        socket (0600, in a directory only you can open), named in \
        <target-dir>/hotpatch/sessions/<pid>/."
    )]
    Restart(control::ControlArgs),
    /// Undo the last patch of a running `hotpatch run`
    #[command(
        long_about = "Undo the last patch of a running `hotpatch run` (or `attach`): what \
        u⏎ or SIGUSR2 do, from another terminal. Repeatable down to the code the program \
        started with. The session is found as for `hotpatch restart`."
    )]
    Undo(control::ControlArgs),
    /// Stop the program of a running `hotpatch run`, and that hotpatch
    #[command(
        long_about = "Stop the program of a running `hotpatch run` and that hotpatch, which \
        exits with the program's status: what q⏎ or SIGTERM do, from another terminal. A \
        `hotpatch attach` lets go of its program instead. The session is found as for \
        `hotpatch restart`."
    )]
    Quit(control::ControlArgs),
    /// Print what a running `hotpatch run` said (its human lines)
    #[command(
        long_about = "Print what a running `hotpatch run` (or `attach`) said, as human \
        lines, from its start: in another terminal while its program, a terminal UI, has the \
        first. With --follow, new lines as they come, until the session ends. The session is \
        found as for `hotpatch restart`."
    )]
    Log(control::LogArgs),
    /// List the revisions in the store
    Revisions(revisions::RevisionsArgs),
}

impl Cli {
    /// Runs the chosen subcommand; the exit code is the program's own for `run`.
    pub fn execute(self) -> ExitCode {
        let result = match self.command {
            Command::Build(args) => build::execute(&args),
            Command::Diff(args) => diff::execute(&args),
            Command::Revisions(args) => revisions::execute(&args),
            Command::Run(args) => run::execute(&args),
            Command::Attach(args) => attach::execute(&args),
            Command::Restart(args) => control::execute(&args, Request::Restart),
            Command::Undo(args) => control::execute(&args, Request::Rollback),
            Command::Quit(args) => control::execute(&args, Request::Quit),
            Command::Log(args) => control::log(&args),
        };
        result.unwrap_or_else(|error| {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        })
    }
}

/// The store of the selected workspace and the target to look at: the one the flags (or
/// the current directory) select as for `hotpatch build`, else the newest revision's.
pub(crate) fn store_and_target(selection: &args::TargetSelection) -> Result<(Store, TargetKey)> {
    let workspace = crate::capture::workspace::Workspace::load(selection.manifest_path.as_deref())?;
    let store = workspace.store(selection);
    let explicit =
        selection.package.is_some() || selection.bin.is_some() || selection.example.is_some();
    match workspace.resolve(selection) {
        Ok(target) => return Ok((store, target)),
        Err(error) if explicit => return Err(error),
        Err(_) => {}
    }
    let newest = store
        .list()?
        .into_iter()
        .filter(|r| r.target.profile == selection.profile())
        .max_by_key(|r| r.id.clone());
    match newest {
        Some(revision) => Ok((store, revision.target)),
        None => Err(Error::new(format!(
            "no revisions in {}; run `hotpatch build` first",
            store.root().display()
        ))),
    }
}
