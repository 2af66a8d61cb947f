//! The `pod-template-hash`: a name-safe hash of a Deployment's pod template that names its
//! ReplicaSet (`<deployment>-<hash>`) and labels its pods. Like the reference it is FNV-32a,
//! of the template's canonical JSON (the reference hashes Go's printing of the struct, which
//! cannot be reproduced, so the values differ but are as stable), with `status.collisionCount`
//! mixed in: when a hash names a ReplicaSet with another template, the controller bumps the
//! count and gets a new name. The decimal digits are spelled with the reference's
//! `SafeEncodeString` alphabet (no vowels, no look-alikes).

use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::controllers::util::hash::{fnv32a, safe_encode};

/// The label every ReplicaSet of a Deployment and its pods carry.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::util::hash::ALPHANUMS;
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
}
