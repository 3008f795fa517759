//! The types rustc generates — the state machines of async fns and async blocks, the captures
//! of closures — in the words of the code they come from: which function they belong to, and
//! what an edit changed in what lives across an `.await`.
//!
//! A future's DWARF is an enum with one variant per state: `Unresumed` (holding what it
//! captured: an async fn's arguments), `Returned`, `Panicked`, and `SuspendN` for its N-th
//! `.await`, holding the locals that live across it and the awaited future (`__awaitee`).

use super::compare::differences;
use crate::pipeline::objects::dwarf::{StateLines, TypeInfo};
use crate::pipeline::objects::type_layout::{Field, Layout, Shape, Variant};

/// What a compiler-generated type is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Generated {
    AsyncFn,
    AsyncBlock,
    Closure,
}

/// A compiler-generated type, known by its DWARF name (`demo::step::{async_fn_env#0}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GeneratedType {
    pub kind: Generated,
    /// The function it belongs to, without rustc's `{…}` segments: `demo::step`.
    pub function: String,
}

impl GeneratedType {
    /// `None` for a type the user wrote.
    pub fn parse(type_name: &str) -> Option<GeneratedType> {
        let (path, last) = type_name.rsplit_once("::")?;
        let kind = if last.starts_with("{async_fn_env#") {
            Generated::AsyncFn
        } else if last.starts_with("{async_block_env#") {
            Generated::AsyncBlock
        } else if last.starts_with("{closure_env#") || last.starts_with("{async_closure_env#") {
            Generated::Closure
        } else {
            return None;
        };
        let function = path
            .split("::")
            .filter(|segment| !segment.starts_with('{'))
            .collect::<Vec<_>>()
            .join("::");
        Some(GeneratedType { kind, function })
    }

    /// `async fn `demo::step``, `async block in `demo::main``, `closure in `demo::main``.
    pub fn shown(&self) -> String {
        let function = &self.function;
        match self.kind {
            Generated::AsyncFn => format!("async fn `{function}`"),
            Generated::AsyncBlock => format!("async block in `{function}`"),
            Generated::Closure => format!("closure in `{function}`"),
        }
    }

    /// Why its old values meet new code.
    pub fn old_values(&self) -> &'static str {
        match self.kind {
            Generated::AsyncFn | Generated::AsyncBlock => {
                "its futures suspended in the running program would resume in the new code"
            }
            Generated::Closure => "the running program's closures of it would run the new code",
        }
    }
}

/// The states of a future, with the lines rustc gives them.
pub(super) struct States<'a> {
    pub layout: &'a Layout,
    pub lines: Option<&'a StateLines>,
}

impl<'a> States<'a> {
    pub fn of(info: &'a TypeInfo) -> States<'a> {
        States {
            layout: &info.layout,
            lines: info.state_lines.as_ref(),
        }
    }
}

impl States<'_> {
    fn variants(&self) -> &[Variant] {
        match &self.layout.shape {
            Shape::Enum { variants, .. } => variants,
            _ => &[],
        }
    }

    fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants().iter().find(|variant| variant.name == name)
    }

    /// ` at line 12`, or nothing when DWARF gave no line.
    fn at_line(&self, state: &str) -> String {
        self.lines
            .and_then(|lines| lines.lines.get(state))
            .map(|line| format!(" at line {line}"))
            .unwrap_or_default()
    }
}

/// How a compiler-generated type changed, in the user's words where it can be said
/// (`new local `s` lives across the .await at line 6`, `an .await was added at line 9`),
/// else as [`differences`] says it. Empty when the layouts are the same.
pub(super) fn generated_differences(
    old: &States<'_>,
    new: &States<'_>,
    awaited: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let all = differences(old.layout, new.layout);
    if all.is_empty() {
        return all;
    }
    let mut found = Vec::new();
    match (&old.layout.shape, &new.layout.shape) {
        (Shape::Struct(old_fields), Shape::Struct(new_fields)) => {
            capture_differences(&mut found, old_fields, new_fields)
        }
        (Shape::Enum { .. }, Shape::Enum { .. }) => {
            state_differences(&mut found, old, new);
            if found.is_empty() {
                found.extend(held_futures(new, &awaited));
            }
        }
        _ => {}
    }
    if found.is_empty() {
        return all;
    }
    if old.layout.size != new.layout.size {
        found.extend(all.into_iter().filter(|change| change.starts_with("size ")));
    }
    found
}

/// What a closure captures, or a future before its first poll.
fn capture_differences(found: &mut Vec<String>, old: &[Field], new: &[Field]) {
    for field in new.iter().filter(|field| !has_field(old, &field.name)) {
        found.push(format!("now captures `{}`", field.name));
    }
    for field in old.iter().filter(|field| !has_field(new, &field.name)) {
        found.push(format!("no longer captures `{}`", field.name));
    }
    for (old, new) in matched_fields(old, new) {
        if old.type_name != new.type_name {
            found.push(format!(
                "captured `{}` type `{}` → `{}`",
                old.name, old.type_name, new.type_name
            ));
        }
    }
}

/// The `.await`s added or removed, and the locals living across each one.
fn state_differences(found: &mut Vec<String>, old: &States<'_>, new: &States<'_>) {
    let captures = |states: &States<'_>| -> Vec<Field> {
        states
            .variant("Unresumed")
            .map(|variant| variant.fields.clone())
            .unwrap_or_default()
    };
    let (old_captures, new_captures) = (captures(old), captures(new));
    capture_differences(found, &old_captures, &new_captures);
    let is_suspend = |variant: &&Variant| variant.name.starts_with("Suspend");
    for variant in new.variants().iter().filter(is_suspend) {
        let at = new.at_line(&variant.name);
        let Some(before) = old.variant(&variant.name) else {
            found.push(format!("an .await was added{at}"));
            continue;
        };
        let locals = |fields: &[Field], captures: &[Field]| -> Vec<Field> {
            fields
                .iter()
                .filter(|field| !has_field(captures, &field.name))
                .cloned()
                .collect()
        };
        let old_locals = locals(&before.fields, &old_captures);
        let new_locals = locals(&variant.fields, &new_captures);
        for field in new_locals
            .iter()
            .filter(|f| !has_field(&old_locals, &f.name))
        {
            found.push(format!(
                "new local `{}` lives across the .await{at}",
                field.name
            ));
        }
        for field in old_locals
            .iter()
            .filter(|f| !has_field(&new_locals, &f.name))
        {
            found.push(format!(
                "local `{}` no longer lives across the .await{at}",
                field.name
            ));
        }
        for (old_field, new_field) in matched_fields(&old_locals, &new_locals) {
            if old_field.type_name == new_field.type_name {
                continue;
            }
            found.push(if old_field.name == "__awaitee" {
                format!(
                    "the .await{at} awaits `{}` instead of `{}`",
                    new_field.type_name, old_field.type_name
                )
            } else {
                format!(
                    "local `{}` across the .await{at}: type `{}` → `{}`",
                    old_field.name, old_field.type_name, new_field.type_name
                )
            });
        }
    }
    for variant in old.variants().iter().filter(is_suspend) {
        if new.variant(&variant.name).is_none() {
            let at = old.at_line(&variant.name);
            found.push(format!("an .await was removed (it was{at})"));
        }
    }
}

/// When a future changed only in size: the generated futures it holds across an `.await`
/// (`awaited` words the ones whose own layout changed), the likely reason.
fn held_futures(new: &States<'_>, awaited: &impl Fn(&str) -> Option<String>) -> Vec<String> {
    new.variants()
        .iter()
        .flat_map(|variant| {
            let at = new.at_line(&variant.name);
            variant
                .fields
                .iter()
                .filter_map(|field| awaited(&field.type_name))
                .map(move |future| format!("it holds a future of {future} across the .await{at}"))
        })
        .collect()
}

fn has_field(fields: &[Field], name: &str) -> bool {
    fields.iter().any(|field| field.name == name)
}

fn matched_fields<'a>(
    old: &'a [Field],
    new: &'a [Field],
) -> impl Iterator<Item = (&'a Field, &'a Field)> {
    old.iter().filter_map(|old_field| {
        let new_field = new.iter().find(|field| field.name == old_field.name)?;
        Some((old_field, new_field))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::objects::type_layout::field;
    use crate::pipeline::objects::type_layout::Discriminant;
    use std::collections::HashMap;

    /// `async fn step(n: u64)` suspended once, with `suspended` living across its `.await`.
    fn future(size: u64, suspends: Vec<Vec<Field>>) -> Layout {
        let mut variants = vec![Variant {
            name: "Unresumed".into(),
            discriminant: Some(0),
            fields: vec![field("n", 0, "u64")],
        }];
        for (index, mut fields) in suspends.into_iter().enumerate() {
            fields.push(field("n", 0, "u64"));
            variants.push(Variant {
                name: format!("Suspend{index}"),
                discriminant: Some(3 + index as u64),
                fields,
            });
        }
        Layout {
            size: Some(size),
            align: Some(8),
            shape: Shape::Enum {
                discriminant: Some(Discriminant {
                    offset: Some(size - 8),
                    type_name: "u8".into(),
                }),
                variants,
            },
        }
    }

    fn lines(suspends: &[u64]) -> StateLines {
        let mut lines = HashMap::from([("Unresumed".to_string(), 3)]);
        for (index, line) in suspends.iter().enumerate() {
            lines.insert(format!("Suspend{index}"), *line);
        }
        StateLines { file: None, lines }
    }

    fn words(old: (&Layout, &StateLines), new: (&Layout, &StateLines)) -> Vec<String> {
        fn states<'a>((layout, lines): (&'a Layout, &'a StateLines)) -> States<'a> {
            States {
                layout,
                lines: Some(lines),
            }
        }
        generated_differences(&states(old), &states(new), |_| None)
    }

    const SLEEP: &str = "tokio::time::sleep::Sleep";

    #[test]
    fn names_the_function_a_generated_type_belongs_to() {
        let parsed = |name| GeneratedType::parse(name).map(|generated| generated.shown());
        assert_eq!(
            parsed("demo::step::{async_fn_env#0}").as_deref(),
            Some("async fn `demo::step`")
        );
        assert_eq!(
            parsed("demo::main::{async_fn#0}::{async_block_env#1}").as_deref(),
            Some("async block in `demo::main`")
        );
        assert_eq!(
            parsed("demo::main::{closure_env#0}").as_deref(),
            Some("closure in `demo::main`")
        );
        assert_eq!(parsed("demo::Ball"), None);
    }

    #[test]
    fn a_local_across_an_await_and_a_new_await_in_the_users_words() {
        let one = future(32, vec![vec![field("__awaitee", 8, SLEEP)]]);
        let with_local = future(
            56,
            vec![vec![
                field("__awaitee", 8, SLEEP),
                field("s", 32, "alloc::string::String"),
            ]],
        );
        assert_eq!(
            words((&one, &lines(&[5])), (&with_local, &lines(&[6]))),
            [
                "new local `s` lives across the .await at line 6",
                "size 32 → 56"
            ]
        );
        assert_eq!(
            words((&with_local, &lines(&[6])), (&one, &lines(&[5]))),
            [
                "local `s` no longer lives across the .await at line 5",
                "size 56 → 32"
            ]
        );
        let two = future(
            32,
            vec![
                vec![field("__awaitee", 8, SLEEP)],
                vec![field("__awaitee", 8, SLEEP)],
            ],
        );
        assert_eq!(
            words((&one, &lines(&[5])), (&two, &lines(&[5, 6]))),
            ["an .await was added at line 6"]
        );
        assert_eq!(
            words((&two, &lines(&[5, 6])), (&one, &lines(&[5]))),
            ["an .await was removed (it was at line 6)"]
        );
        assert!(words((&one, &lines(&[5])), (&one, &lines(&[9]))).is_empty());
    }

    #[test]
    fn retyped_locals_awaited_futures_and_captures() {
        let old = future(32, vec![vec![field("__awaitee", 8, SLEEP)]]);
        let mut new = future(
            32,
            vec![vec![field("__awaitee", 8, "demo::other::{async_fn_env#0}")]],
        );
        if let Shape::Enum { variants, .. } = &mut new.shape {
            variants[0].fields[0].type_name = "u32".into();
        }
        assert_eq!(
            words((&old, &lines(&[5])), (&new, &lines(&[5]))),
            [
                "captured `n` type `u64` → `u32`",
                "the .await at line 5 awaits `demo::other::{async_fn_env#0}` instead of `tokio::time::sleep::Sleep`"
            ]
        );
    }
}
