//! Capture and diff on real rustc output: fixture crates are built through hotpatch, edited,
//! built again, and the symbol diff must name exactly what the edit changed.

use patcher::{BuildOutcome, CargoArgs, ChangeStatus, SymbolDiff, TargetSelection};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use testkit::fixture::FixtureCrate;
use tests::hotpatch_exe;

const PROGRAM: &str = include_str!("../fixtures/capture_diff.rs");

fn fixture(name: &str) -> FixtureCrate {
    FixtureCrate::create(Path::new(env!("CARGO_TARGET_TMPDIR")), name, PROGRAM)
}

fn cargo_args(fixture: &FixtureCrate) -> CargoArgs {
    CargoArgs {
        selection: TargetSelection {
            manifest_path: Some(fixture.manifest_path()),
            target_dir: Some(fixture.target_dir.clone()),
            ..TargetSelection::default()
        },
        ..CargoArgs::default()
    }
}

fn build(fixture: &FixtureCrate) -> BuildOutcome {
    patcher::build(&cargo_args(fixture), hotpatch_exe())
        .unwrap_or_else(|e| panic!("hotpatch build failed: {e}"))
}

/// Builds, applies `edit`, builds again, and diffs the two revisions.
fn diff_after(
    fixture: &FixtureCrate,
    edit: impl FnOnce(&FixtureCrate),
) -> (BuildOutcome, BuildOutcome, SymbolDiff) {
    let before = build(fixture);
    edit(fixture);
    let after = build(fixture);
    assert_ne!(
        before.revision.id, after.revision.id,
        "the edit must produce a new revision"
    );
    let diff = patcher::diff(&before.revision, &after.revision).expect("diff");
    (before, after, diff)
}

/// Demangled names with `status` that belong to the fixture crate (not std instances).
fn own(diff: &SymbolDiff, fixture: &FixtureCrate, status: ChangeStatus) -> BTreeSet<String> {
    let prefix = format!("{}::", fixture.crate_name());
    diff.with_status(status)
        .map(|s| s.demangled.clone())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

fn names(fixture: &FixtureCrate, paths: &[&str]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|path| format!("{}::{path}", fixture.crate_name()))
        .collect()
}

/// Asserts the fixture crate's own changed, added and removed symbols (paths without the
/// crate name).
fn assert_own_changes(
    diff: &SymbolDiff,
    fixture: &FixtureCrate,
    changed: &[&str],
    added: &[&str],
    removed: &[&str],
) {
    assert_eq!(
        own(diff, fixture, ChangeStatus::Changed),
        names(fixture, changed),
        "changed"
    );
    assert_eq!(
        own(diff, fixture, ChangeStatus::Added),
        names(fixture, added),
        "added"
    );
    assert_eq!(
        own(diff, fixture, ChangeStatus::Removed),
        names(fixture, removed),
        "removed"
    );
}

fn mangled_of(diff: &SymbolDiff, demangled: &str) -> String {
    let symbol = diff.symbols.iter().find(|s| s.demangled == demangled);
    symbol
        .unwrap_or_else(|| panic!("no symbol {demangled}"))
        .mangled
        .clone()
}

#[test]
fn one_line_body_change_changes_exactly_that_function() {
    let fixture = fixture("fx-body-change");
    let (_, after, diff) = diff_after(&fixture, |f| f.replace("x * 3", "x * 5"));
    let changed: Vec<_> = diff
        .with_status(ChangeStatus::Changed)
        .map(|s| s.demangled.clone())
        .collect();
    assert_eq!(
        changed,
        [format!("{}::shapes::scale", fixture.crate_name())]
    );
    assert_eq!(diff.count(ChangeStatus::Added), 0);
    assert_eq!(diff.count(ChangeStatus::Removed), 0);
    assert!(diff.layout_changes.is_empty());

    // The changed function's definition points at one of the revision's stored objects, at
    // its own section.
    let scale = diff.with_status(ChangeStatus::Changed).next().unwrap();
    let definition = &scale.definitions[0];
    assert!(
        after
            .revision
            .object_paths()
            .contains(&definition.object.to_path_buf()),
        "{definition:?}"
    );
    assert_eq!(definition.section, format!(".text.{}", scale.mangled));

    // The CLI agrees, as JSON.
    let output = Command::new(hotpatch_exe())
        .args(["diff", "--message-format", "json", "--manifest-path"])
        .arg(fixture.manifest_path())
        .arg("--target-dir")
        .arg(&fixture.target_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["changed"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(
        report["changed"][0]["demangled"],
        format!("{}::shapes::scale", fixture.crate_name())
    );
    assert_eq!(report["changed"][0]["mangled"], scale.mangled);
    assert_eq!(report["changed"][0]["kind"], "function");
    assert_eq!(report["added"], serde_json::json!([]));
    assert_eq!(report["removed"], serde_json::json!([]));
}

#[test]
fn unchanged_rebuild_changes_nothing() {
    let fixture = fixture("fx-unchanged");
    let (_, _, diff) = diff_after(&fixture, |f| f.write_main(&f.main_rs()));
    let changed: Vec<_> = diff
        .symbols
        .iter()
        .filter(|s| s.status != ChangeStatus::Unchanged)
        .collect();
    assert!(diff.is_empty(), "{changed:#?}");
    assert!(diff.count(ChangeStatus::Unchanged) > 20);
}

#[test]
fn changed_string_literal_changes_the_function_using_it() {
    let fixture = fixture("fx-string-literal");
    let (_, _, diff) = diff_after(&fixture, |f| f.replace("hello {name}", "howdy, {name}"));
    let changed: Vec<_> = diff
        .with_status(ChangeStatus::Changed)
        .map(|s| s.demangled.clone())
        .collect();
    assert_eq!(changed, [format!("{}::greet", fixture.crate_name())]);
}

#[test]
fn new_helper_is_added_and_its_caller_changed() {
    let fixture = fixture("fx-new-helper");
    let (_, _, diff) = diff_after(&fixture, |f| {
        f.replace(
            "format!(\"hello {name}\")",
            "shout(format!(\"hello {name}\"))",
        );
        f.write_main(
            &(f.main_rs() + "\nfn shout(text: String) -> String {\n    text.to_uppercase()\n}\n"),
        );
    });
    assert_own_changes(&diff, &fixture, &["greet"], &["shout"], &[]);
    let shout = mangled_of(&diff, &format!("{}::shout", fixture.crate_name()));
    let greet = mangled_of(&diff, &format!("{}::greet", fixture.crate_name()));
    assert_eq!(
        diff.referrers_of(&shout).collect::<Vec<_>>(),
        [greet.as_str()]
    );
}

#[test]
fn new_closure_is_added_and_its_function_changed() {
    let fixture = fixture("fx-new-closure");
    let (_, _, diff) = diff_after(&fixture, |f| {
        f.replace(
            ".map(|&v| scale(v)).sum()",
            ".map(|&v| scale(v)).map(|v| v + 1).sum()",
        )
    });
    // The new closure is added; the existing one keeps its name and code.
    assert_own_changes(
        &diff,
        &fixture,
        &["shapes::compute"],
        &["shapes::compute::{{closure}}"],
        &[],
    );
    let closure = format!("{}::shapes::compute::{{{{closure}}}}", fixture.crate_name());
    assert!(own(&diff, &fixture, ChangeStatus::Unchanged).contains(&closure));
}

/// Measured fact the patch step must live with: the first closure in a function changes
/// that function's symbol hash, so it shows up as removed + added, and its callers change
/// because they now call another name.
#[test]
fn first_closure_in_a_function_renames_it_and_changes_its_callers() {
    let fixture = fixture("fx-first-closure");
    let (_, _, diff) = diff_after(&fixture, |f| {
        f.replace(
            "format!(\"hello {name}\")",
            "(|n: &str| format!(\"hello {n}\"))(name)",
        )
    });
    assert_own_changes(
        &diff,
        &fixture,
        &["main"],
        &["greet", "greet::{{closure}}"],
        &["greet"],
    );
}

#[test]
fn callers_of_a_changed_function_are_its_referrers() {
    let fixture = fixture("fx-referrers");
    let (_, _, diff) = diff_after(&fixture, |f| f.replace("x * 3", "x + 7"));
    let crate_name = fixture.crate_name();
    let scale = mangled_of(&diff, &format!("{crate_name}::shapes::scale"));
    let closure = mangled_of(
        &diff,
        &format!("{crate_name}::shapes::compute::{{{{closure}}}}"),
    );
    let compute = mangled_of(&diff, &format!("{crate_name}::shapes::compute"));
    let main = mangled_of(&diff, &format!("{crate_name}::main"));
    assert_eq!(
        diff.referrers_of(&scale).collect::<Vec<_>>(),
        [closure.as_str()]
    );

    // Walking up stops at a root (as at a `#[hotreload]` slot) instead of climbing to main.
    let closure_up_to_compute = diff.referrer_closure([scale.as_str()], |name| name == compute);
    assert!(
        closure_up_to_compute.contains(&compute),
        "{closure_up_to_compute:#?}"
    );
    assert!(
        !closure_up_to_compute.contains(&main),
        "{closure_up_to_compute:#?}"
    );
    assert!(diff
        .referrer_closure([scale.as_str()], |_| false)
        .contains(&main));
}

#[test]
fn a_static_whose_type_grows_is_flagged() {
    let fixture = fixture("fx-static-grows");
    let (_, _, diff) = diff_after(&fixture, |f| {
        f.replace(
            "static mut TABLE: [u8; 4] = [1, 2, 3, 4];",
            "static mut TABLE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];",
        )
    });
    assert_eq!(diff.layout_changes.len(), 1, "{:#?}", diff.layout_changes);
    let change = &diff.layout_changes[0];
    assert_eq!(change.demangled, format!("{}::TABLE", fixture.crate_name()));
    assert_eq!((change.old_size, change.new_size), (4, 8));
    assert_eq!(change.kind, patcher::SymbolKind::Data);
}

#[test]
fn program_linked_through_the_shim_runs_like_the_plain_build() {
    let fixture = fixture("fx-runs");
    let outcome = build(&fixture);
    let plain = fixture.plain_cargo_build();
    assert!(
        plain.status.success(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    let through_shim = Command::new(&outcome.exe).output().unwrap();
    let plain_run = Command::new(fixture.plain_exe()).output().unwrap();
    assert!(through_shim.status.success());
    assert_eq!(
        String::from_utf8_lossy(&through_shim.stdout),
        "hello fixture 18 2 1\n"
    );
    assert_eq!(through_shim.stdout, plain_run.stdout);

    // The revision describes this executable: same build-id, every object stored, the link
    // line and the rustc invocation recorded.
    let revision = &outcome.revision;
    assert_eq!(
        revision.build_id,
        linker_shim::read_build_id(&outcome.exe).unwrap()
    );
    assert!(
        revision
            .objects
            .iter()
            .any(|o| o.original.ends_with("symbols.o")),
        "symbols.o is on the line"
    );
    assert!(revision.object_paths().iter().all(|path| path.is_file()));
    assert!(revision.link_line.args.iter().any(|a| a == "-fuse-ld=lld"));
    assert!(revision
        .link_line
        .args
        .iter()
        .any(|a| a == "-Wl,--no-gc-sections"));
    assert_eq!(
        revision.link_line.cargo.pkg_name.as_deref(),
        Some(fixture.name.as_str())
    );
    let rustc = revision.rustc.as_ref().expect("rustc invocation recorded");
    assert_eq!(rustc.crate_name, fixture.crate_name());
    assert!(
        rustc.args.iter().any(|a| a.starts_with("metadata=")),
        "{:?}",
        rustc.args
    );
    assert!(outcome
        .invocations
        .iter()
        .any(|i| i.crate_name == fixture.crate_name()));

    // Fresh again: hotpatch build relinks nothing, and plain cargo's build does not fight it.
    let again = build(&fixture);
    assert!(!again.linked);
    assert_eq!(again.revision.id, revision.id);
    let plain_again = fixture.plain_cargo_build();
    assert!(String::from_utf8_lossy(&plain_again.stderr).contains("Finished"));
    assert!(
        !String::from_utf8_lossy(&plain_again.stderr).contains("Compiling"),
        "plain build was rebuilt"
    );
}

#[test]
fn a_link_error_through_the_shim_is_the_same_error() {
    let fixture = FixtureCrate::create(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "fx-link-error",
        include_str!("../fixtures/missing_symbol.rs"),
    );
    let plain = fixture.plain_cargo_build();
    let through_shim = Command::new(hotpatch_exe())
        .args(["build", "--manifest-path"])
        .arg(fixture.manifest_path())
        .arg("--target-dir")
        .arg(&fixture.target_dir)
        .output()
        .unwrap();
    assert!(!plain.status.success());
    assert!(!through_shim.status.success());
    let linker_errors = |output: &std::process::Output| -> Vec<String> {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        stderr
            .lines()
            .filter(|l| l.contains("error: undefined symbol"))
            .map(|l| l.trim().to_owned())
            .collect()
    };
    assert!(
        !linker_errors(&plain).is_empty(),
        "{}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert_eq!(linker_errors(&through_shim), linker_errors(&plain));
    let store = linker_shim::Store::for_target_dir(&fixture.target_dir);
    let recorded: Vec<_> = store
        .list()
        .unwrap()
        .into_iter()
        .filter(|r| r.target.package == fixture.name)
        .collect();
    assert!(
        recorded.is_empty(),
        "a failed link must not leave a revision: {recorded:#?}"
    );
}

#[test]
fn recompile_records_a_capture_only_revision_without_touching_cargo_artifacts() {
    let fixture = fixture("fx-recompile");
    let base = build(&fixture);
    let exe_before = std::fs::read(&base.exe).unwrap();

    // With no edit the recorded invocation reproduces every symbol exactly.
    let same = patcher::recompile(&base.store, &base.revision, hotpatch_exe()).expect("recompile");
    assert!(same.revision.capture_only);
    assert!(patcher::diff(&base.revision, &same.revision)
        .unwrap()
        .is_empty());

    fixture.replace("x * 3", "x * 4");
    let patched =
        patcher::recompile(&base.store, &base.revision, hotpatch_exe()).expect("recompile");
    assert_eq!(patched.revision.target, base.revision.target);
    assert_eq!(patched.revision.build_id, None);
    assert!(patched.duration.as_millis() > 0);
    let diff = patcher::diff(&base.revision, &patched.revision).unwrap();
    let changed: Vec<_> = diff
        .with_status(ChangeStatus::Changed)
        .map(|s| s.demangled.clone())
        .collect();
    assert_eq!(
        changed,
        [format!("{}::shapes::scale", fixture.crate_name())]
    );
    assert_eq!(
        std::fs::read(&base.exe).unwrap(),
        exe_before,
        "the executable must stay as it was"
    );

    fixture.replace("x * 4", "x * ");
    match patcher::recompile(&base.store, &base.revision, hotpatch_exe()) {
        Err(patcher::RecompileError::Compile { diagnostics }) => {
            assert!(
                diagnostics.iter().any(|d| d.contains("error")),
                "{diagnostics:#?}"
            )
        }
        other => panic!("expected a compile error, got {other:?}"),
    }

    // The next `hotpatch build` sees the source edit and links afresh.
    fixture.replace("x * ", "x * 4");
    let rebuilt = build(&fixture);
    assert!(rebuilt.linked);
    let output = Command::new(&rebuilt.exe).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "hello fixture 24 2 1\n"
    );
}
