//! Builds hotpatch can't patch are refused when `hotpatch run` starts, with one line naming
//! what to change, before the program runs.

use std::path::Path;
use testkit::fixture::FixtureCrate;
use testkit::session::hotpatch_command;
use tests::live::{launch, Options};

const PROGRAM: &str = include_str!("../fixtures/start_checks.rs");

/// Runs `hotpatch run` on a fixture whose manifest ends with `profile` and whose build gets
/// `rustflags`; returns hotpatch's exit code, its error lines and the program's output.
fn run(name: &str, profile: &str, rustflags: &str) -> (Option<i32>, Vec<String>, String) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let fixture = FixtureCrate::create(base, name, PROGRAM);
    fixture.append_to_manifest(profile);
    let manifest_path = fixture.manifest_path();
    let output = hotpatch_command(
        &launch(&fixture, &manifest_path, &[], &Options::default()),
        "run",
    )
    .env("RUSTFLAGS", rustflags)
    .output()
    .expect("run hotpatch");
    let errors = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.starts_with("error:"))
        .map(str::to_owned)
        .collect();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.code(), errors, stdout)
}

/// Asserts hotpatch refused to start the program with one error line containing `wanted`.
fn assert_refused((code, errors, stdout): (Option<i32>, Vec<String>, String), wanted: &str) {
    assert_eq!(code, Some(1), "{errors:?}");
    assert!(
        !stdout.contains("started"),
        "the program never ran: {stdout}"
    );
    assert!(
        errors.len() == 1 && errors[0].contains(wanted),
        "one line saying {wanted:?}: {errors:?}"
    );
}

#[test]
fn a_build_without_a_symbol_table_is_refused() {
    assert_refused(
        run("start-stripped", "", "-C link-arg=-Wl,--strip-all"),
        "no symbol table (stripped); patches bind to the program's functions and statics by name: set `strip = \"none\"`",
    );
}

#[test]
fn a_build_that_is_not_position_independent_is_refused() {
    assert_refused(
        run("start-static", "", "-C relocation-model=static"),
        "not position-independent (`-C relocation-model=static`)",
    );
}

#[test]
fn fat_lto_is_refused_naming_the_profile_setting() {
    assert_refused(
        run("start-fat-lto", "[profile.dev]\nlto = \"fat\"\n", ""),
        "`lto = \"fat\"` in [profile.dev] compiles the whole program at its final link",
    );
}

#[test]
fn strip_in_the_profile_is_overridden_and_the_program_runs() {
    let (code, errors, stdout) = run("start-strip-profile", "[profile.dev]\nstrip = true\n", "");
    assert_eq!((code, errors), (Some(0), vec![]));
    assert!(stdout.contains("started"), "{stdout}");
}
