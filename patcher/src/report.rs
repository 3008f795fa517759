//! How `hotpatch build`, `diff` and `revisions` print their results: readable lines, or one
//! JSON object per line for tools.

use crate::build::BuildOutcome;
use crate::diff::{ChangeStatus, SymbolChange, SymbolDiff};
use hotreload_abi::events::{millis, Event};
use linker_shim::Revision;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

const GROUPS: [(ChangeStatus, &str); 3] = [
    (ChangeStatus::Changed, "changed"),
    (ChangeStatus::Added, "added"),
    (ChangeStatus::Removed, "removed"),
];

/// The `build-finished` event (printed by [`crate::events::Reporter`]).
pub fn build_event(outcome: &BuildOutcome) -> Event {
    Event::BuildFinished {
        target: outcome.target.to_string(),
        revision: outcome.revision.id.as_str().to_string(),
        exe: outcome.exe.clone(),
        build_id: outcome.revision.build_id.clone(),
        objects: outcome.revision.objects.len(),
        linked: outcome.linked,
        ms: millis(outcome.duration),
    }
}

pub fn build_human(outcome: &BuildOutcome) -> String {
    let verb = if outcome.linked {
        "Recorded"
    } else {
        "Up to date"
    };
    format!(
        "{verb:>12} {} as revision {} ({} objects, build-id {}) in {:.2}s\n{:>12} {}\n",
        outcome.target,
        outcome.revision.id,
        outcome.revision.objects.len(),
        outcome.revision.build_id.as_deref().unwrap_or("none"),
        outcome.duration.as_secs_f64(),
        "Executable",
        outcome.exe.display()
    )
}

fn symbol_entry(symbol: &SymbolChange) -> Value {
    json!({ "mangled": symbol.mangled, "demangled": symbol.demangled, "kind": symbol.kind })
}

/// One JSON object: `changed`, `added`, `removed` as arrays of `{mangled, demangled, kind}`,
/// `layout_changed` for data a patch cannot migrate, and counts.
pub fn diff_json(diff: &SymbolDiff, from: &Revision, to: &Revision, elapsed: Duration) -> Value {
    let mut report = json!({
        "from": from.id,
        "to": to.id,
        "target": to.target.to_string(),
        "layout_changed": diff.layout_changes,
        "unchanged": diff.count(ChangeStatus::Unchanged),
        "ms": millis(elapsed),
    });
    for (status, label) in GROUPS {
        report[label] = diff.with_status(status).map(symbol_entry).collect();
    }
    report
}

/// Demangled names grouped by changed / added / removed, then data layout changes.
pub fn diff_human(diff: &SymbolDiff, from: &Revision, to: &Revision, elapsed: Duration) -> String {
    let mut out = format!(
        "{:>12} {}: revision {} → {}\n",
        "Comparing", to.target, from.id, to.id
    );
    let mut counts = Vec::new();
    for (status, label) in GROUPS {
        let names: BTreeSet<&str> = diff
            .with_status(status)
            .map(|s| s.demangled.as_str())
            .collect();
        let count = diff.count(status);
        counts.push(format!("{count} {label}"));
        if count > 0 {
            let _ = writeln!(out, "{label} ({count}):");
            for name in names {
                let _ = writeln!(out, "    {name}");
            }
        }
    }
    if !diff.layout_changes.is_empty() {
        let _ = writeln!(
            out,
            "data whose layout changed ({}), a patch cannot migrate it:",
            diff.layout_changes.len()
        );
        for change in &diff.layout_changes {
            let _ = writeln!(
                out,
                "    {}: {} bytes in {} → {} bytes in {}",
                change.demangled,
                change.old_size,
                change.old_section,
                change.new_size,
                change.new_section
            );
        }
        counts.push(format!("{} data layout changes", diff.layout_changes.len()));
    }
    let _ = writeln!(
        out,
        "{}, {} unchanged ({:.1} ms)",
        counts.join(", "),
        diff.count(ChangeStatus::Unchanged),
        millis(elapsed)
    );
    out
}

/// One line per revision for `hotpatch revisions`.
pub fn revision_line(revision: &Revision, pinned: bool) -> String {
    let mut notes = Vec::new();
    if revision.capture_only {
        notes.push("capture-only");
    }
    if pinned {
        notes.push("pinned");
    }
    format!(
        "{}  {}  {} objects  build-id {}{}",
        revision.id,
        revision.target,
        revision.objects.len(),
        revision.build_id.as_deref().unwrap_or("-"),
        if notes.is_empty() {
            String::new()
        } else {
            format!("  [{}]", notes.join(", "))
        }
    )
}

pub fn revision_json(revision: &Revision, pinned: bool) -> Value {
    json!({
        "id": revision.id,
        "target": revision.target,
        "objects": revision.objects.len(),
        "build_id": revision.build_id,
        "exe": revision.exe,
        "capture_only": revision.capture_only,
        "pinned": pinned,
        "created_unix_ms": revision.created_unix_ms,
    })
}
