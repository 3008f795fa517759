//! The type layout check on real rustc output: a fixture program is built through hotpatch,
//! edited, recompiled the way a patch is, planned, and checked against the base revision's
//! DWARF. Each test edits one thing and asserts what the check says about it.

use patcher::pipeline::check::layout::{layout_refusals, TypeLayoutChange, TypeLayouts};
use patcher::pipeline::plan::{plan, EntryPolicy, PatchPlan};
use patcher::{BuildOutcome, CargoArgs, SymbolDiff, SymbolIndex, TargetSelection};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use testkit::fixture::FixtureCrate;
use tests::hotpatch_exe;

const PROGRAM: &str = include_str!("../fixtures/type_layouts.rs");

/// One build or recompile at a time: concurrent ones in one process can lose a revision to
/// each other's store pruning ("revision … is not in the store"); they share cargo's lock anyway.
static STORE: Mutex<()> = Mutex::new(());

/// A fixture built once through hotpatch: the running program's revision and its layouts.
struct Base {
    fixture: FixtureCrate,
    build: BuildOutcome,
    layouts: TypeLayouts,
}

/// These tests check what old data reaches through rewired `#[hotreload]` slots: no entry
/// redirects.
struct SlotsOnly;

impl EntryPolicy for SlotsOnly {
    fn redirectable(&self, _: &str) -> Result<(), String> {
        Err("slots only".into())
    }

    fn runs_forever(&self, _: &str) -> bool {
        false
    }
}

impl Base {
    fn build(name: &str) -> Base {
        let fixture =
            FixtureCrate::create_hot(Path::new(env!("CARGO_TARGET_TMPDIR")), name, PROGRAM);
        let args = CargoArgs {
            selection: TargetSelection {
                manifest_path: Some(fixture.manifest_path()),
                target_dir: Some(fixture.target_dir.clone()),
                ..TargetSelection::default()
            },
            ..CargoArgs::default()
        };
        let guard = STORE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let build = patcher::build(&args, hotpatch_exe())
            .unwrap_or_else(|e| panic!("hotpatch build failed: {e}"));
        // As a session does: the recompiles must not prune the running build's revision.
        build
            .store
            .pin(&build.revision.id, std::process::id())
            .expect("pin the base");
        drop(guard);
        let layouts = TypeLayouts::load(&build.revision).expect("base layouts");
        Base {
            fixture,
            build,
            layouts,
        }
    }

    /// Applies `edits` to the pristine program, recompiles as a patch would, plans it, and
    /// returns the plan and what the layout check says.
    fn check(&self, edits: &[(&str, &str)]) -> (PatchPlan, Vec<TypeLayoutChange>) {
        self.fixture.write_main(PROGRAM);
        for (from, to) in edits {
            self.fixture.replace(from, to);
        }
        let guard = STORE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let new = patcher::recompile(&self.build.store, &self.build.revision, hotpatch_exe())
            .unwrap_or_else(|e| panic!("recompile failed: {e}"))
            .revision;
        drop(guard);
        let base_index = SymbolIndex::load(&self.build.revision).unwrap();
        let new_index = SymbolIndex::load(&new).unwrap();
        let diff = SymbolDiff::between(&base_index, new_index);
        let plan = plan(&diff, &SlotsOnly)
            .unwrap_or_else(|refusal| panic!("the plan refused: {refusal}"))
            .expect("the edit changes functions");
        let started = Instant::now();
        let new_layouts = TypeLayouts::load(&new).expect("new layouts");
        let changes = layout_refusals(&self.layouts, &new_layouts, &diff.new, &plan);
        eprintln!("layout check: {:?}", started.elapsed());
        (plan, changes)
    }

    /// `step` → `fx_name::step`.
    fn path(&self, item: &str) -> String {
        format!("{}::{item}", self.fixture.crate_name())
    }

    /// Whether the patch carries a new implementation of the `#[hotreload]` `function`
    /// (changed, or renamed: the legacy symbol hash covers the fields of the types it takes).
    fn relinks(&self, plan: &PatchPlan, function: &str) -> bool {
        let implementation = format!("{}::__hotreload_impl", self.path(function));
        plan.relinked
            .iter()
            .any(|name| patcher::demangle(name) == implementation)
    }
}

impl Drop for Base {
    fn drop(&mut self) {
        let _ = self
            .build
            .store
            .unpin(&self.build.revision.id, std::process::id());
    }
}

/// The one change reported for `type_name`, failing with everything reported otherwise.
fn change_of<'a>(changes: &'a [TypeLayoutChange], type_name: &str) -> &'a TypeLayoutChange {
    let found: Vec<_> = changes
        .iter()
        .filter(|c| c.type_name == type_name)
        .collect();
    assert_eq!(found.len(), 1, "one change for {type_name} in {changes:#?}");
    found[0]
}

#[test]
fn a_struct_gaining_a_field_passed_to_a_root_is_refused_naming_the_field() {
    let base = Base::build("tl-grow");
    let (plan, changes) = base.check(&[
        ("    pub y: f32,\n}", "    pub y: f32,\n    pub z: f32,\n}"),
        ("ball.x += dt;", "ball.x += dt + ball.z;"),
    ]);
    assert!(base.relinks(&plan, "step"), "{plan:#?}");
    let ball = change_of(&changes, &base.path("Ball"));
    assert_eq!(
        ball.changes,
        ["size 8 → 12", "new field `z` (`f32` at offset 8)"]
    );
    assert_eq!(
        ball.reached_from,
        format!("argument `ball` of `{}`", base.path("step"))
    );
    assert_eq!(ball.declared_at.as_deref(), Some(&*declared_at(&base, 5)));
    let reason = patcher::pipeline::plan::Refusal::TypeLayout(changes.clone()).to_string();
    assert!(
        reason.contains(&format!("`{}` (", base.path("Ball")))
            && reason.contains("new field `z`")
            && reason.ends_with("restart to apply this edit"),
        "{reason}"
    );
}

/// `fixtures/<name>/src/main.rs:<line>` as the check shows it (relative to rustc's directory).
fn declared_at(base: &Base, line: usize) -> String {
    let main = base.fixture.dir.join("src/main.rs");
    let shown = main.strip_prefix(&base.fixture.dir).unwrap();
    format!("{}:{line}", shown.display())
}

#[test]
fn a_reordered_or_retyped_field_is_refused() {
    let base = Base::build("tl-reorder");
    let (_, changes) = base.check(&[(
        "    pub x: f32,\n    pub y: f32,",
        "    pub y: f32,\n    pub x: f32,",
    )]);
    assert_eq!(
        change_of(&changes, &base.path("Ball")).changes,
        ["field `x` moved 0 → 4", "field `y` moved 4 → 0"]
    );

    let (_, changes) = base.check(&[
        ("    pub y: f32,\n}", "    pub y: i32,\n}"),
        ("ball.x += dt;", "ball.x += dt + ball.y as f32;"),
    ]);
    assert_eq!(
        change_of(&changes, &base.path("Ball")).changes,
        ["field `y` type `f32` → `i32`"]
    );
}

#[test]
fn an_enum_gaining_a_variant_that_shifts_discriminants_is_refused() {
    let base = Base::build("tl-enum");
    let (plan, changes) = base.check(&[
        (
            "    Angry(u32),\n    Asleep,",
            "    Angry(u32),\n    Bored,\n    Asleep,",
        ),
        (
            "Mood::Asleep => 2,",
            "Mood::Asleep => 2,\n        Mood::Bored => 3,",
        ),
    ]);
    assert!(base.relinks(&plan, "describe"), "{plan:#?}");
    let mood = change_of(&changes, &base.path("Mood"));
    assert_eq!(
        mood.changes,
        [
            "variant `Asleep` discriminant 2 → 3",
            "new variant `Bored` (discriminant 2)"
        ]
    );
    assert_eq!(
        mood.reached_from,
        format!("argument `mood` of `{}`", base.path("describe"))
    );
}

#[test]
fn a_static_holding_a_changed_struct_is_refused_even_at_the_same_size() {
    let base = Base::build("tl-static");
    let (plan, changes) = base.check(&[
        (
            "    pub best: u32,\n}",
            "    pub best: u32,\n    pub worst: u32,\n}",
        ),
        (
            "Stats { frames: 0, best: 0 }",
            "Stats { frames: 0, best: 0, worst: 0 }",
        ),
        (
            "stats.frames += 1;",
            "stats.frames += 1;\n    stats.worst += 1;",
        ),
    ]);
    assert!(base.relinks(&plan, "record"), "{plan:#?}");
    let stats = change_of(&changes, &base.path("Stats"));
    // `u64, u32` has 4 bytes of padding: the static keeps its size, only the fields tell.
    assert_eq!(stats.changes, ["new field `worst` (`u32` at offset 12)"]);
    let through = format!("→ `{}`", base.path("Tally"));
    assert!(
        stats
            .reached_from
            .starts_with(&format!("static `{}`, through ", base.path("TALLY")))
            && stats.reached_from.ends_with(&through),
        "{}",
        stats.reached_from
    );
}

#[test]
fn a_struct_behind_a_vec_in_an_argument_is_followed() {
    let base = Base::build("tl-vec");
    let (plan, changes) = base.check(&[
        (
            "    pub value: u32,
}",
            "    pub value: u32,
    pub weight: u8,
}",
        ),
        ("world.balls.len()", "world.balls.len() + world.coins.len()"),
    ]);
    assert!(base.relinks(&plan, "count"), "{plan:#?}");
    let coin = change_of(&changes, &base.path("Coin"));
    assert_eq!(
        coin.changes,
        ["size 4 → 8", "new field `weight` (`u8` at offset 4)"]
    );
    assert_eq!(
        coin.reached_from,
        format!(
            "argument `world` of `{}`, through `{}` → `alloc::vec::Vec<{}, alloc::alloc::Global>`",
            base.path("count"),
            base.path("World"),
            base.path("Coin")
        ),
    );
}

#[test]
fn a_body_only_edit_passes() {
    let base = Base::build("tl-body");
    let (plan, changes) = base.check(&[("ball.x += dt;", "ball.x += dt * 2.0;")]);
    assert!(base.relinks(&plan, "step"), "{plan:#?}");
    assert_eq!(changes, []);
}

#[test]
fn a_changed_type_used_only_as_a_local_of_patched_code_passes() {
    let base = Base::build("tl-local");
    let (plan, changes) = base.check(&[
        (
            "        b: u32,\n    }",
            "        b: u32,\n        c: u64,\n    }",
        ),
        (
            "Scratch { a: n, b: n * 2 }",
            "Scratch { a: n, b: n * 2, c: 7 }",
        ),
        (
            "std::hint::black_box(&scratch).a + scratch.b",
            "std::hint::black_box(&scratch).a + scratch.b + scratch.c as u32",
        ),
    ]);
    assert!(base.relinks(&plan, "scratch"), "{plan:#?}");
    assert_eq!(changes, []);
}
