//! How two layouts of one type differ, in words a refusal can show.

use crate::pipeline::objects::type_layout::{Discriminant, Field, Layout, Shape, Variant};
use std::fmt::Display;

/// Every way `new` differs from `old`, one phrase each (`size 16 → 24`, `field `y` moved 4 →
/// 8`); empty when the layouts are the same.
pub fn differences(old: &Layout, new: &Layout) -> Vec<String> {
    let mut found = Vec::new();
    if old.size != new.size {
        found.push(format!("size {} → {}", shown(old.size), shown(new.size)));
    }
    if old.align != new.align {
        found.push(format!(
            "alignment {} → {}",
            shown(old.align),
            shown(new.align)
        ));
    }
    match (&old.shape, &new.shape) {
        (Shape::Struct(old), Shape::Struct(new)) | (Shape::Union(old), Shape::Union(new)) => {
            field_differences(&mut found, "", old, new)
        }
        (
            Shape::Enum {
                discriminant: old_discriminant,
                variants: old_variants,
            },
            Shape::Enum {
                discriminant: new_discriminant,
                variants: new_variants,
            },
        ) => {
            discriminant_differences(&mut found, old_discriminant, new_discriminant);
            variant_differences(&mut found, old_variants, new_variants);
        }
        (
            Shape::Fieldless {
                repr: old_repr,
                values: old_values,
            },
            Shape::Fieldless {
                repr: new_repr,
                values: new_values,
            },
        ) => {
            if old_repr != new_repr {
                found.push(format!("discriminant type `{old_repr}` → `{new_repr}`"));
            }
            matched_differences(
                &mut found,
                old_values,
                new_values,
                |(name, _)| name,
                |(name, old_value), (_, new_value)| {
                    (old_value != new_value)
                        .then(|| format!("variant `{name}` discriminant {old_value} → {new_value}"))
                        .into_iter()
                        .collect()
                },
                |(name, _)| format!("variant `{name}` removed"),
                |(name, value)| format!("new variant `{name}` (discriminant {value})"),
            );
        }
        (old, new) => found.push(format!("{} → {}", old.kind(), new.kind())),
    }
    found
}

fn field_differences(found: &mut Vec<String>, context: &str, old: &[Field], new: &[Field]) {
    matched_differences(
        found,
        old,
        new,
        |field| &field.name,
        |old, new| {
            let mut changes = Vec::new();
            if old.offset != new.offset {
                changes.push(format!(
                    "{context}field `{}` moved {} → {}",
                    old.name,
                    shown(old.offset),
                    shown(new.offset)
                ));
            }
            if old.type_name != new.type_name {
                changes.push(format!(
                    "{context}field `{}` type `{}` → `{}`",
                    old.name, old.type_name, new.type_name
                ));
            }
            changes
        },
        |field| format!("{context}field `{}` removed", field.name),
        |field| {
            format!(
                "{context}new field `{}` (`{}` at offset {})",
                field.name,
                field.type_name,
                shown(field.offset)
            )
        },
    );
}

fn discriminant_differences(
    found: &mut Vec<String>,
    old: &Option<Discriminant>,
    new: &Option<Discriminant>,
) {
    match (old, new) {
        (Some(old), Some(new)) => {
            if old.offset != new.offset {
                found.push(format!(
                    "discriminant moved {} → {}",
                    shown(old.offset),
                    shown(new.offset)
                ));
            }
            if old.type_name != new.type_name {
                found.push(format!(
                    "discriminant type `{}` → `{}`",
                    old.type_name, new.type_name
                ));
            }
        }
        (None, Some(_)) => found.push("gained a discriminant".into()),
        (Some(_), None) => found.push("lost its discriminant".into()),
        (None, None) => {}
    }
}

fn variant_differences(found: &mut Vec<String>, old: &[Variant], new: &[Variant]) {
    matched_differences(
        found,
        old,
        new,
        |variant| &variant.name,
        |old, new| {
            let mut changes = Vec::new();
            if old.discriminant != new.discriminant {
                changes.push(format!(
                    "variant `{}` discriminant {} → {}",
                    old.name,
                    discriminant_value(old.discriminant),
                    discriminant_value(new.discriminant)
                ));
            }
            let context = format!("variant `{}`: ", old.name);
            field_differences(&mut changes, &context, &old.fields, &new.fields);
            changes
        },
        |variant| format!("variant `{}` removed", variant.name),
        |variant| {
            format!(
                "new variant `{}` (discriminant {})",
                variant.name,
                discriminant_value(variant.discriminant)
            )
        },
    );
}

/// Pairs the items of `old` and `new` by `key`: what both have is compared by `changed`, what
/// only one has is described by `removed` / `added`.
fn matched_differences<T, K: PartialEq + ?Sized>(
    found: &mut Vec<String>,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> &K,
    changed: impl Fn(&T, &T) -> Vec<String>,
    removed: impl Fn(&T) -> String,
    added: impl Fn(&T) -> String,
) {
    for old_item in old {
        match new.iter().find(|new_item| key(new_item) == key(old_item)) {
            Some(new_item) => found.extend(changed(old_item, new_item)),
            None => found.push(removed(old_item)),
        }
    }
    found.extend(
        new.iter()
            .filter(|new_item| !old.iter().any(|old_item| key(old_item) == key(new_item)))
            .map(added),
    );
}

fn shown(value: Option<impl Display>) -> String {
    value.map_or_else(|| "unknown".into(), |value| value.to_string())
}

fn discriminant_value(value: Option<u64>) -> String {
    value.map_or_else(|| "implicit (niche)".into(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::objects::type_layout::field;

    fn record(size: u64, fields: Vec<Field>) -> Layout {
        Layout {
            size: Some(size),
            align: Some(4),
            shape: Shape::Struct(fields),
        }
    }

    fn ball() -> Layout {
        record(8, vec![field("x", 0, "f32"), field("y", 4, "f32")])
    }

    fn variant(name: &str, discriminant: Option<u64>, fields: Vec<Field>) -> Variant {
        Variant {
            name: name.into(),
            discriminant,
            fields,
        }
    }

    fn state(variants: Vec<Variant>) -> Layout {
        Layout {
            size: Some(8),
            align: Some(4),
            shape: Shape::Enum {
                discriminant: Some(Discriminant {
                    offset: Some(0),
                    type_name: "u32".into(),
                }),
                variants,
            },
        }
    }

    #[test]
    fn identical_layouts_have_no_differences() {
        assert!(differences(&ball(), &ball()).is_empty());
    }

    #[test]
    fn a_new_field_names_the_field_and_the_size() {
        let grown = record(
            12,
            vec![
                field("x", 0, "f32"),
                field("y", 4, "f32"),
                field("z", 8, "f32"),
            ],
        );
        assert_eq!(
            differences(&ball(), &grown),
            ["size 8 → 12", "new field `z` (`f32` at offset 8)"]
        );
    }

    #[test]
    fn reordered_retyped_and_removed_fields() {
        let reordered = record(8, vec![field("y", 0, "f32"), field("x", 4, "f32")]);
        assert_eq!(
            differences(&ball(), &reordered),
            ["field `x` moved 0 → 4", "field `y` moved 4 → 0"]
        );
        let retyped = record(8, vec![field("x", 0, "f32"), field("y", 4, "u32")]);
        assert_eq!(
            differences(&ball(), &retyped),
            ["field `y` type `f32` → `u32`"]
        );
        let shrunk = record(4, vec![field("x", 0, "f32")]);
        assert_eq!(
            differences(&ball(), &shrunk),
            ["size 8 → 4", "field `y` removed"]
        );
    }

    #[test]
    fn enum_variants_discriminants_and_variant_fields() {
        let old = state(vec![
            variant("Alive", Some(0), vec![field("__0", 4, "u32")]),
            variant("Dead", Some(1), vec![]),
        ]);
        let new = state(vec![
            variant("Alive", Some(0), vec![field("__0", 4, "i32")]),
            variant("Sleeping", Some(1), vec![]),
            variant("Dead", Some(2), vec![]),
        ]);
        assert_eq!(
            differences(&old, &new),
            [
                "variant `Alive`: field `__0` type `u32` → `i32`",
                "variant `Dead` discriminant 1 → 2",
                "new variant `Sleeping` (discriminant 1)",
            ]
        );
    }

    #[test]
    fn niche_and_discriminant_placement() {
        let tagged = state(vec![variant("A", Some(0), vec![])]);
        let mut moved = tagged.clone();
        moved.shape = Shape::Enum {
            discriminant: Some(Discriminant {
                offset: Some(4),
                type_name: "u8".into(),
            }),
            variants: vec![variant("A", None, vec![])],
        };
        assert_eq!(
            differences(&tagged, &moved),
            [
                "discriminant moved 0 → 4",
                "discriminant type `u32` → `u8`",
                "variant `A` discriminant 0 → implicit (niche)",
            ]
        );
    }

    #[test]
    fn fieldless_enums_and_kind_changes() {
        let fieldless = |repr: &str, values: &[(&str, i128)]| Layout {
            size: Some(1),
            align: Some(1),
            shape: Shape::Fieldless {
                repr: repr.into(),
                values: values.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
            },
        };
        let old = fieldless("u8", &[("Red", 0), ("Blue", 1)]);
        let new = fieldless("u8", &[("Red", 0), ("Green", 1), ("Blue", 2)]);
        assert_eq!(
            differences(&old, &new),
            [
                "variant `Blue` discriminant 1 → 2",
                "new variant `Green` (discriminant 1)"
            ]
        );
        assert_eq!(
            differences(&old, &record(1, vec![])),
            ["alignment 1 → 4", "fieldless enum → struct"]
        );
    }
}
