//! ImageLocality: prefer nodes that already have the pod's images (`status.images`), in
//! proportion to the images' sizes and scaled down for images that are on most nodes anyway
//! (so one popular image does not pull every pod to the same nodes).

use super::{ScoreContext, MAX_SCORE};
use crate::scheduler::node_info::NodeInfo;

/// Below this many bytes of present images a node gets no credit (the reference's 23 MB).
const MIN_THRESHOLD: i64 = 23 * 1024 * 1024;
/// Per container, the bytes of present images that earn the full score (1000 MB).
const MAX_THRESHOLD_PER_CONTAINER: i64 = 1000 * 1024 * 1024;

/// An image reference in the fully qualified form nodes report (`nginx` →
/// `docker.io/library/nginx:latest`).
pub fn normalize_image(image: &str) -> String {
    let (name, has_tag) = match image.rsplit_once('/') {
        Some((_, last)) => (image.to_string(), last.contains(':') || last.contains('@')),
        None => (image.to_string(), image.contains(':') || image.contains('@')),
    };
    let first = name.split('/').next().unwrap_or("");
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = if has_registry {
        name
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if !has_tag {
        full.push_str(":latest");
    }
    full
}

/// Size-weighted presence of the pod's images on each node.
pub fn scores(ctx: &ScoreContext, nodes: &[&NodeInfo]) -> Vec<i64> {
    let Some(spec) = &ctx.pod.pod.spec else { return vec![0; nodes.len()] };
    let images: Vec<String> =
        spec.containers.iter().filter_map(|c| c.image.as_deref()).map(normalize_image).collect();
    if images.is_empty() || ctx.all_nodes.iter().all(|n| n.images.is_empty()) {
        return vec![0; nodes.len()];
    }
    let total_nodes = ctx.all_nodes.len().max(1) as f64;
    let spread: Vec<f64> = images
        .iter()
        .map(|image| ctx.all_nodes.iter().filter(|n| has(n, image)).count() as f64 / total_nodes)
        .collect();
    let max = MAX_THRESHOLD_PER_CONTAINER * spec.containers.len() as i64;
    nodes
        .iter()
        .map(|n| {
            let sum: f64 = images
                .iter()
                .zip(&spread)
                .filter_map(|(image, share)| size(n, image).map(|s| s as f64 * share))
                .sum();
            let sum = (sum as i64).clamp(MIN_THRESHOLD, max);
            MAX_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
        })
        .collect()
}

fn size(node: &NodeInfo, image: &str) -> Option<i64> {
    node.images.get(image).copied().or_else(|| {
        node.images.iter().find(|(name, _)| normalize_image(name) == image).map(|(_, s)| *s)
    })
}

fn has(node: &NodeInfo, image: &str) -> bool {
    size(node, image).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::framework::ClusterObjects;
    use crate::scheduler::node_info::testing::*;
    use serde_json::json;

    #[test]
    fn image_names_are_normalized() {
        assert_eq!(normalize_image("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(normalize_image("me/app:1"), "docker.io/me/app:1");
        assert_eq!(normalize_image("registry.local:5000/app"), "registry.local:5000/app:latest");
    }

    #[test]
    fn a_node_with_the_image_scores_higher() {
        let with = node(
            "a",
            "1",
            "1Gi",
            json!({"status": {"images": [
            {"names": ["docker.io/library/big:1"], "sizeBytes": 500 * 1024 * 1024}]}}),
        );
        let without = node("b", "1", "1Gi", json!({}));
        let p = pod("p", json!({"spec": {"containers": [{"name": "c", "image": "big:1"}]}}));
        let all = [&with, &without];
        let ctx = ScoreContext { pod: &p, all_nodes: &all, objects: &ClusterObjects::default() };
        let s = scores(&ctx, &all);
        assert!(s[0] > s[1], "{s:?}");
        assert_eq!(s[1], 0);
    }
}
