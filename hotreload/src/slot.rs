//! Jump-table slots and the registry that lists them.
//!
//! Every `#[hotreload]` function owns one [`Slot`]: an atomic code pointer its visible
//! function calls through. The macro registers a [`SlotEntry`] for it in the linker section
//! behind [`SLOTS`], so the runtime finds every slot without any init call.

use std::sync::atomic::{AtomicPtr, Ordering};

/// The atomic code pointer a `#[hotreload]` function calls through.
#[repr(transparent)]
pub struct Slot(AtomicPtr<()>);

impl Slot {
    /// A slot pointing at `original`, the implementation the program was built with.
    pub const fn new(original: *const ()) -> Self {
        Slot(AtomicPtr::new(original.cast_mut()))
    }

    /// The implementation calls go to now.
    #[inline(always)]
    pub fn current(&self) -> *const () {
        self.0.load(Ordering::Acquire)
    }

    /// The current implementation, typed like `signature` (the original as a fn pointer).
    ///
    /// # Safety
    /// The slot must only ever hold functions of type `F`: the macro guarantees it for the
    /// original, the runtime's fingerprint check for replacements.
    #[inline(always)]
    pub unsafe fn get<F: Copy>(&self, signature: F) -> F {
        const {
            assert!(
                size_of::<F>() == size_of::<*const ()>(),
                "a slot holds a fn pointer"
            )
        };
        let _ = signature;
        let current = self.current();
        // SAFETY: `F` is a fn pointer type of pointer size (checked above) and, by the
        // caller's contract, `current` is a function of that type.
        unsafe { std::mem::transmute_copy::<*const (), F>(&current) }
    }

    /// Points the slot at `target`. Release: a caller that sees the new pointer also sees
    /// everything written before (the mapped patch code).
    pub(crate) fn store(&self, target: *const ()) {
        self.0.store(target.cast_mut(), Ordering::Release);
    }

    /// The slot's own address, as announced to the patcher.
    pub fn address(&self) -> usize {
        self as *const Slot as usize
    }
}

/// A code address that may sit in a `static`: code is immutable, so sharing it is sound.
#[derive(Clone, Copy)]
pub struct CodeAddress(*const ());

// SAFETY: a code address is only compared, reported and stored into slots; nothing reads or
// writes through it, and the code it points at is never mutated.
unsafe impl Sync for CodeAddress {}
// SAFETY: as above.
unsafe impl Send for CodeAddress {}

impl CodeAddress {
    pub fn get(self) -> *const () {
        self.0
    }
}

/// The registry's record of one slot.
///
/// `repr(C)`, laid out as [`hotreload_abi::slot::EntryLayout`] (asserted below), because the
/// patcher reads entries out of compiled objects (section [`hotreload_abi::slot::SECTION`]) to
/// learn a new implementation's fingerprint.
#[repr(C)]
pub struct SlotEntry {
    pub slot: &'static Slot,
    pub original: CodeAddress,
    /// `module::function` or `module::<Type as Trait>::method`.
    pub path: &'static str,
    /// Hash of the normalised signature (see `hotreload-macro`'s `fingerprint`).
    pub fingerprint: u64,
}

// The patcher reads entries at the ABI crate's offsets: a field moved here must move there.
const _: () = {
    use hotreload_abi::slot::{EntryLayout, ENTRY_SIZE, FINGERPRINT_OFFSET, ORIGINAL_OFFSET};
    use std::mem::offset_of;
    assert!(size_of::<SlotEntry>() == ENTRY_SIZE);
    assert!(align_of::<SlotEntry>() == align_of::<EntryLayout>());
    assert!(offset_of!(SlotEntry, slot) == offset_of!(EntryLayout, slot));
    assert!(offset_of!(SlotEntry, original) == ORIGINAL_OFFSET);
    assert!(offset_of!(SlotEntry, path) == offset_of!(EntryLayout, path));
    assert!(offset_of!(SlotEntry, fingerprint) == FINGERPRINT_OFFSET);
};

impl SlotEntry {
    pub const fn new(
        slot: &'static Slot,
        original: *const (),
        path: &'static str,
        fingerprint: u64,
    ) -> Self {
        SlotEntry {
            slot,
            original: CodeAddress(original),
            path,
            fingerprint,
        }
    }
}

/// Every slot in the program, gathered by the linker. `linkme` puts the entries in a section
/// named after this static: `SLOTS` is what makes it [`hotreload_abi::slot::SECTION`].
#[linkme::distributed_slice]
pub static SLOTS: [SlotEntry];

/// All registered slots.
pub fn slots() -> &'static [SlotEntry] {
    &SLOTS
}

/// The entry of the slot at `address`, if there is one.
pub fn slot_at(address: usize) -> Option<&'static SlotEntry> {
    SLOTS.iter().find(|entry| entry.slot.address() == address)
}

/// The entry whose path is `path`, if there is one.
pub fn slot_named(path: &str) -> Option<&'static SlotEntry> {
    SLOTS.iter().find(|entry| entry.path == path)
}
