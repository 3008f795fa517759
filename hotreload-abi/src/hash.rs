//! The one hash both sides of a patch compute.
//!
//! The macro hashes a normalised signature at compile time and the runtime compares it with a
//! patch's, years of compiler versions apart; the patcher checksums an image the runtime checks
//! again before mapping it. So the hash must be stable across compilers, runs and machines
//! (unlike `DefaultHasher`) and written exactly once.

/// 64-bit FNV-1a: simple, stable, and good enough to tell signatures and damaged files apart.
/// Not a defence against tampering (the runtime checks a patch file's owner and mode for that).
pub const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::fnv1a;

    #[test]
    fn known_test_vectors() {
        // From the FNV reference test suite (http://www.isthe.com/chongo/tech/comp/fnv/).
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn usable_in_const_context() {
        const HASH: u64 = fnv1a(b"a");
        assert_eq!(HASH, fnv1a("a".as_bytes()));
    }
}
