//! Refuses a patch that would rewire a `#[hotreload]` slot to a function of another
//! signature: its running callers still pass arguments the old way.

use crate::pipeline::diff::demangle;
use crate::pipeline::plan::PatchPlan;
use crate::pipeline::Refused;
use hotreload_abi::events::RefusalKind;
use hotreload_abi::protocol::SlotInfo;
use std::collections::HashMap;

/// Checks every root of `plan` against the running slot of the same function: by the
/// fingerprint the new build registered (`fingerprints`), and by path, since the symbol hash
/// covers the signature (a changed signature usually shows up as a root with a new name but
/// the path of a running slot).
pub fn check_signatures(
    plan: &PatchPlan,
    slots: &HashMap<String, SlotInfo>,
    fingerprints: &HashMap<String, u64>,
) -> Result<(), Refused> {
    for root in &plan.roots {
        let slot = match slots.get(root) {
            Some(slot)
                if fingerprints
                    .get(root)
                    .is_none_or(|new| *new == slot.fingerprint) =>
            {
                continue
            }
            Some(slot) => slot,
            None => match slots
                .iter()
                .find(|(name, _)| demangle(name) == demangle(root))
            {
                Some((_, slot)) => slot,
                None => continue,
            },
        };
        return Err(Refused {
            kind: RefusalKind::Signature,
            items: vec![slot.path.clone()],
            reason: format!(
                "the signature of `{}` changed; its running callers still pass arguments the old way: restart to apply this edit",
                slot.path
            ),
        });
    }
    Ok(())
}
