//! The slot registry lists every `#[hotreload]` function exactly once, with its path and a
//! fingerprint that follows the signature, not the body.

use hotreload::hotreload;

#[hotreload]
fn plain(x: u32) -> u32 {
    x + 1
}

/// Two "revisions" of the same function: same signature, different bodies and names.
mod rev1 {
    #[hotreload::hotreload]
    pub fn step(position: f32, velocity: f32) -> f32 {
        position + velocity
    }
}
mod rev2 {
    #[hotreload::hotreload]
    pub fn step(p: f32, v: f32) -> f32 {
        (p + v).clamp(0.0, 1.0)
    }
}

/// Same name, another signature.
mod rev3 {
    #[hotreload::hotreload]
    pub fn step(p: f64, v: f32) -> f32 {
        p as f32 + v
    }
}

struct Thing(u8);

#[hotreload]
impl Thing {
    fn get(&self) -> u8 {
        self.0
    }
}

#[hotreload]
impl Clone for Thing {
    fn clone(&self) -> Self {
        Thing(self.0)
    }
}

/// The macro's fingerprint is the ABI's hash of the normalised signature (its own tests check
/// the hash against the FNV-1a test vectors); recomputed here from the expected text.
fn fnv1a(text: &str) -> u64 {
    hotreload_abi::hash::fnv1a(text.as_bytes())
}

fn fingerprint_of(path: &str) -> u64 {
    hotreload::slot_named(path)
        .unwrap_or_else(|| panic!("{path} is not registered"))
        .fingerprint
}

#[test]
fn every_annotated_function_appears_once_with_its_path() {
    let mut paths: Vec<&str> = hotreload::slots().iter().map(|entry| entry.path).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "registry::<Thing as Clone>::clone",
            "registry::<Thing>::get",
            "registry::plain",
            "registry::rev1::step",
            "registry::rev2::step",
            "registry::rev3::step",
        ]
    );
    let thing = Thing(7);
    assert_eq!((plain(1), thing.get(), thing.clone().0), (2, 7, 7));
}

#[test]
fn fingerprints_are_the_hash_of_the_normalised_signature() {
    assert_eq!(
        fingerprint_of("registry::plain"),
        fnv1a("extern Rust fn(u32) -> u32")
    );
    assert_eq!(
        fingerprint_of("registry::<Thing>::get"),
        fnv1a("extern Rust fn(& Thing) -> u8")
    );
    assert_eq!(
        fingerprint_of("registry::<Thing as Clone>::clone"),
        fnv1a("extern Rust fn(& Thing) -> Thing")
    );
}

#[test]
fn same_signature_same_fingerprint_other_signature_other_fingerprint() {
    assert_eq!(
        fingerprint_of("registry::rev1::step"),
        fingerprint_of("registry::rev2::step")
    );
    assert_ne!(
        fingerprint_of("registry::rev1::step"),
        fingerprint_of("registry::rev3::step")
    );
    assert_ne!(
        fingerprint_of("registry::plain"),
        fingerprint_of("registry::rev1::step")
    );
    assert_eq!(
        rev1::step(0.5, 0.25) + rev2::step(0.5, 0.75) + rev3::step(1.0, 1.0),
        3.75
    );
}

#[test]
fn slots_and_originals_are_distinct_real_addresses() {
    let slots = hotreload::slots();
    for entry in slots {
        assert_eq!(
            hotreload::slot_at(entry.slot.address()).map(|e| e.path),
            Some(entry.path)
        );
        assert_ne!(entry.original.get(), std::ptr::null());
    }
    let mut originals: Vec<_> = slots.iter().map(|e| e.original.get() as usize).collect();
    originals.sort_unstable();
    originals.dedup();
    assert_eq!(
        originals.len(),
        slots.len(),
        "each slot has its own implementation"
    );
}
