//! The `pod-template-hash`: a name-safe hash of a Deployment's pod template that names its
//! ReplicaSet (`<deployment>-<hash>`) and labels its pods. Like the reference it is FNV-32a,
//! of the template's canonical JSON (the reference hashes Go's printing of the struct, which
//! cannot be reproduced, so the values differ but are as stable), with `status.collisionCount`
//! mixed in: when a hash names a ReplicaSet with another template, the controller bumps the
//! count and gets a new name. The decimal digits are spelled with the reference's
//! `SafeEncodeString` alphabet (no vowels, no look-alikes).

use k8s_openapi::api::core::v1::PodTemplateSpec;

/// The label every ReplicaSet of a Deployment and its pods carry.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The reference's alphabet for generated names.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn fnv32a(bytes: &[u8], mut hash: u32) -> u32 {
    for b in bytes {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The hash of `template` (which must not carry the hash label itself) with `collision_count`.
pub fn compute(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    // Serializing a typed object only fails for non-string map keys, which it has none of.
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut hash = fnv32a(&json, 0x811c_9dc5);
    if let Some(count) = collision_count {
        // As the reference: 8 bytes, the count little-endian in the first four.
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(count as u32).to_le_bytes());
        hash = fnv32a(&bytes, hash);
    }
    safe_encode(&hash.to_string())
}

/// The reference's `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        assert_eq!(fnv32a(b"", 0x811c_9dc5), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a", 0x811c_9dc5), 0xe40c_292c);
        assert_eq!(fnv32a(b"foobar", 0x811c_9dc5), 0xbf9c_f968);
    }

    #[test]
    fn hash_is_stable_name_safe_and_moved_by_template_and_collisions() {
        let a = compute(&template("busybox:1"), None);
        assert_eq!(a, compute(&template("busybox:1"), None));
        assert_ne!(a, compute(&template("busybox:2"), None));
        assert_ne!(a, compute(&template("busybox:1"), Some(1)));
        assert_ne!(
            compute(&template("busybox:1"), Some(1)),
            compute(&template("busybox:1"), Some(2))
        );
        assert!(a.bytes().all(|b| ALPHANUMS.contains(&b)), "{a}");
        assert!(!a.is_empty() && a.len() <= 10);
    }

    #[test]
    fn safe_encode_maps_digits_like_the_reference() {
        // '0' is 48, 48 % 27 = 21 -> '4'; '9' is 57, 57 % 27 = 3 -> 'f'.
        assert_eq!(safe_encode("09"), "4f");
    }
}
