//! The hashes the reference controllers name things with: FNV-32 and FNV-32a (Go's
//! `hash/fnv`), and `rand.SafeEncodeString`, which spells a hash's decimal digits with an
//! alphabet of no vowels and no look-alikes so the result is safe in a name. The
//! `pod-template-hash` of Deployments and the ControllerRevision names of StatefulSets and
//! DaemonSets are built from these.

/// The reference's alphabet for generated names.
pub const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The FNV-32 offset basis (the initial hash of both variants).
pub const FNV32_OFFSET: u32 = 0x811c_9dc5;

const FNV32_PRIME: u32 = 0x0100_0193;

/// FNV-32a of `bytes`, continuing from `hash` ([`FNV32_OFFSET`] to start).
pub fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(FNV32_PRIME);
    }
    hash
}

/// FNV-32 (multiply, then xor) of `bytes`, continuing from `hash` ([`FNV32_OFFSET`] to start).
pub fn fnv32(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash = hash.wrapping_mul(FNV32_PRIME);
        hash ^= u32::from(*b);
    }
    hash
}

/// The reference's `rand.SafeEncodeString`.
pub fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b"", FNV32_OFFSET), FNV32_OFFSET);
        assert_eq!(fnv32a(b"a", FNV32_OFFSET), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar", FNV32_OFFSET), 0xbf9c_f968);
        assert_eq!(fnv32(b"", FNV32_OFFSET), FNV32_OFFSET);
        assert_eq!(fnv32(b"a", FNV32_OFFSET), 0x050c_5d7e);
        assert_eq!(fnv32(b"foobar", FNV32_OFFSET), 0x31f0_b262);
    }

    #[test]
    fn safe_encode_maps_digits_like_the_reference() {
        // '0' is 48, 48 % 27 = 21 -> '4'; '9' is 57, 57 % 27 = 3 -> 'f'.
        assert_eq!(safe_encode("09"), "4f");
    }
}
