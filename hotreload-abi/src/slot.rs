//! How a `#[hotreload]` function looks in compiled code, which three parties must agree on:
//! the macro generates it, the runtime registers it, and the patcher finds it in objects.
//!
//! - Every annotated function's body moves into a nested function named
//!   [`IMPLEMENTATION_NAME`], so its symbol (`<fn path>::__hotreload_impl`) stays the same
//!   across edits: the patcher recognises slot targets by [`IMPLEMENTATION_SUFFIX`].
//! - Each slot has a registry entry in the linker section [`SECTION`], laid out as
//!   [`EntryLayout`]: the patcher reads a new implementation's signature fingerprint out of
//!   the entries of freshly compiled objects, at [`FINGERPRINT_OFFSET`], and learns which
//!   implementation an entry belongs to from the relocation at [`ORIGINAL_OFFSET`].

/// The one spelling of the implementation's name, for the constants below.
macro_rules! implementation_name {
    () => {
        "__hotreload_impl"
    };
}

/// Name of the nested function holding a `#[hotreload]` function's body (the slot's target).
pub const IMPLEMENTATION_NAME: &str = implementation_name!();

/// Suffix of the demangled symbol (without hash) of every implementation function.
pub const IMPLEMENTATION_SUFFIX: &str = concat!("::", implementation_name!());

/// True for the demangled name (alternate form, no hash) of a `#[hotreload]` implementation,
/// e.g. `demo::physics::step::__hotreload_impl`.
pub fn is_slot_implementation(demangled: &str) -> bool {
    demangled.ends_with(IMPLEMENTATION_SUFFIX)
}

/// Linker section holding the registry entries. `linkme` names it after the distributed slice
/// (`linkme_` + the static's name), so the runtime's slice must be called `SLOTS`.
pub const SECTION: &str = "linkme_SLOTS";

/// The layout of one registry entry, as the runtime's `hotreload::SlotEntry` has it; that type
/// holds references and so can't live here, but its field offsets, size and alignment are
/// asserted equal to these at compile time. x86_64 Linux only, like the rest of hotpatch.
#[repr(C)]
pub struct EntryLayout {
    /// `&'static Slot`: the slot's address.
    pub slot: usize,
    /// The original implementation's address; its relocation names the implementation symbol.
    pub original: usize,
    /// `&'static str`, the function's path (pointer and length, in an order Rust keeps to itself).
    pub path: [usize; 2],
    /// FNV-1a of the normalised signature, written by the macro.
    pub fingerprint: u64,
}

/// Size of one entry: entries sit back to back in [`SECTION`].
pub const ENTRY_SIZE: usize = size_of::<EntryLayout>();
/// Byte offset of the original implementation's address in an entry.
pub const ORIGINAL_OFFSET: usize = std::mem::offset_of!(EntryLayout, original);
/// Byte offset of the signature fingerprint (a little-endian `u64`) in an entry.
pub const FINGERPRINT_OFFSET: usize = std::mem::offset_of!(EntryLayout, fingerprint);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn implementations_are_recognised_by_their_demangled_suffix() {
        assert_eq!(IMPLEMENTATION_SUFFIX, "::__hotreload_impl");
        assert!(is_slot_implementation(
            "demo::physics::step::__hotreload_impl"
        ));
        assert!(is_slot_implementation(
            "<demo::Ball as demo::Draw>::draw::__hotreload_impl"
        ));
        assert!(!is_slot_implementation("demo::physics::step"));
        assert!(!is_slot_implementation("demo::__hotreload_impl_helper"));
        assert!(!is_slot_implementation("demo::my__hotreload_impl"));
        assert!(!is_slot_implementation("__hotreload_impl"));
    }

    #[test]
    fn entry_layout_is_two_pointers_a_str_and_a_u64() {
        assert_eq!(
            (ORIGINAL_OFFSET, FINGERPRINT_OFFSET, ENTRY_SIZE),
            (8, 32, 40)
        );
    }
}
