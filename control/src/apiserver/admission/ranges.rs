//! The Service allocators (ClusterIP from `--service-cidr`, NodePort from 30000–32767).
//!
//! Allocations are recorded in the store as one key per address or port
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`), written in
//! the same transaction as the Service with a "key must not exist" compare, so two concurrent
//! creates can never get the same address: the loser's transaction fails and it picks again.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::super::meta;
use super::super::resource::ResourceInfo;
use super::super::status::{ApiError, ApiResult, Cause};
use super::super::watch_cache::prefix_end;
use crate::store::{RangeRequest, Store};

const IP_PREFIX: &str = "/registry/ranges/serviceips/";
const PORT_PREFIX: &str = "/registry/ranges/servicenodeports/";

/// The ClusterIP and NodePort ranges.
#[derive(Debug, Clone)]
pub struct ServiceRanges {
    base: u32,
    size: u32,
    ports: (u16, u16),
}

/// Store keys a Service holds (its addresses and node ports).
pub fn allocation_keys(service: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    let mut ips: Vec<&str> = service
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some(ip) = service.pointer("/spec/clusterIP").and_then(Value::as_str) {
        ips.push(ip);
    }
    let ips: HashSet<&str> = ips.into_iter().filter(|ip| ip.parse::<Ipv4Addr>().is_ok()).collect();
    keys.extend(ips.into_iter().map(|ip| format!("{IP_PREFIX}{ip}")));
    for port in service.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
        if let Some(n) = port.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0) {
            keys.push(format!("{PORT_PREFIX}{n}"));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

fn invalid(info: &ResourceInfo, name: &str, field: &str, message: String) -> ApiError {
    ApiError::invalid(
        info,
        name,
        vec![Cause { reason: "FieldValueInvalid".into(), message, field: field.into() }],
    )
}

impl ServiceRanges {
    /// Ranges from a CIDR and an inclusive port range.
    pub fn new(cidr: (Ipv4Addr, u8), ports: (u16, u16)) -> ServiceRanges {
        let prefix = cidr.1.min(30);
        let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
        ServiceRanges { base: u32::from(cidr.0) & mask, size: 1u32 << (32 - prefix), ports }
    }

    /// The address of the `kubernetes` service: the first usable one.
    pub fn first_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        ip > self.base && ip < self.base + self.size - 1
    }

    async fn taken(store: &dyn Store, prefix: &str) -> ApiResult<HashSet<String>> {
        let resp = store
            .range(RangeRequest {
                key: prefix.as_bytes().to_vec(),
                range_end: prefix_end(prefix),
                keys_only: true,
                ..Default::default()
            })
            .await?;
        Ok(resp
            .kvs
            .iter()
            .filter_map(|kv| std::str::from_utf8(&kv.key).ok())
            .map(|k| k.trim_start_matches(prefix).to_string())
            .collect())
    }

    /// The suffixes (addresses, ports) under `prefix` held by other Services than the one
    /// holding `own`.
    async fn taken_by_others(
        store: &dyn Store,
        prefix: &str,
        own: &HashSet<String>,
    ) -> ApiResult<HashSet<String>> {
        let mut taken = Self::taken(store, prefix).await?;
        taken.retain(|suffix| !own.contains(&format!("{prefix}{suffix}")));
        Ok(taken)
    }

    /// Fills in a new Service's ClusterIP and NodePorts; returns the keys to claim with it.
    /// Addresses the user chose are checked (range, not taken) and kept.
    pub async fn allocate(
        &self,
        store: &dyn Store,
        info: &ResourceInfo,
        service: &mut Value,
    ) -> ApiResult<Vec<String>> {
        self.allocate_holding(store, info, service, &HashSet::new()).await
    }

    /// Carries a Service's addresses over an update, as the reference's service REST does: a
    /// cleared clusterIP or nodePort keeps its old value, the values the new type no longer
    /// uses are dropped (unless the user changed them), and missing ones are allocated.
    pub async fn reallocate(
        &self,
        store: &dyn Store,
        info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
    ) -> ApiResult<Reallocation> {
        let own: HashSet<String> = allocation_keys(old).into_iter().collect();
        keep_allocated(old, new);
        drop_type_dependent(old, new);
        let held = self.allocate_holding(store, info, new, &own).await?;
        Ok(Reallocation {
            claim: held.iter().filter(|k| !own.contains(*k)).cloned().collect(),
            release: own.iter().filter(|k| !held.contains(k)).cloned().collect(),
        })
    }

    /// [`ServiceRanges::allocate`] for a Service that already holds the keys `own`.
    async fn allocate_holding(
        &self,
        store: &dyn Store,
        info: &ResourceInfo,
        service: &mut Value,
        own: &HashSet<String>,
    ) -> ApiResult<Vec<String>> {
        let name = meta::meta_str(service, "name").unwrap_or_default().to_string();
        let spec_type = service
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        if spec_type == "ExternalName" {
            return Ok(Vec::new());
        }
        let requested = service.pointer("/spec/clusterIP").and_then(Value::as_str).unwrap_or("");
        let ip = match requested {
            "None" => None,
            "" => {
                let taken = Self::taken_by_others(store, IP_PREFIX, own).await?;
                let free = self.size.saturating_sub(3) as usize;
                if taken.len() >= free {
                    return Err(ApiError::internal(
                        "failed to allocate a serviceIP: range is full",
                    ));
                }
                // Random probing: concurrent creates rarely pick the same address.
                let mut pick = None;
                for attempt in 0..self.size {
                    let offset = if attempt < 64 {
                        2 + random_u32() % (self.size - 3)
                    } else {
                        2 + attempt % (self.size - 3)
                    };
                    let ip = Ipv4Addr::from(self.base + offset);
                    if !taken.contains(&ip.to_string()) {
                        pick = Some(ip);
                        break;
                    }
                }
                let ip =
                    pick.ok_or_else(|| ApiError::internal("failed to allocate a serviceIP"))?;
                Some(ip.to_string())
            }
            other => {
                let parsed: Ipv4Addr = other.parse().map_err(|_| {
                    invalid(
                        info,
                        &name,
                        "spec.clusterIP",
                        format!("Invalid value: \"{other}\": must be a valid IP address"),
                    )
                })?;
                if !self.contains(parsed) {
                    return Err(invalid(info, &name, "spec.clusterIP", format!(
                        "Invalid value: \"{other}\": provided IP is not in the valid range. The range of valid IPs is {}/{}",
                        Ipv4Addr::from(self.base), 32 - self.size.trailing_zeros()
                    )));
                }
                if Self::taken_by_others(store, IP_PREFIX, own).await?.contains(other) {
                    return Err(invalid(
                        info,
                        &name,
                        "spec.clusterIP",
                        format!("Invalid value: \"{other}\": provided IP is already allocated"),
                    ));
                }
                Some(other.to_string())
            }
        };
        if let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) {
            let ip_value = ip.clone().unwrap_or_else(|| "None".to_string());
            spec.insert("clusterIP".into(), json!(ip_value));
            spec.insert("clusterIPs".into(), json!([ip_value]));
        }
        if matches!(spec_type.as_str(), "NodePort" | "LoadBalancer") {
            self.allocate_ports(store, info, &name, service, own).await?;
        }
        Ok(allocation_keys(service))
    }

    async fn allocate_ports(
        &self,
        store: &dyn Store,
        info: &ResourceInfo,
        name: &str,
        service: &mut Value,
        own: &HashSet<String>,
    ) -> ApiResult<()> {
        let mut taken: HashSet<u16> = Self::taken_by_others(store, PORT_PREFIX, own)
            .await?
            .iter()
            .filter_map(|p| p.parse().ok())
            .collect();
        let span = u32::from(self.ports.1 - self.ports.0) + 1;
        let Some(ports) = service.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        for (i, port) in ports.iter_mut().enumerate() {
            match port.get("nodePort").and_then(Value::as_u64).filter(|p| *p > 0) {
                Some(n) => {
                    let n = u16::try_from(n).unwrap_or(0);
                    if n < self.ports.0 || n > self.ports.1 {
                        return Err(invalid(info, name, &format!("spec.ports[{i}].nodePort"), format!(
                            "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            self.ports.0, self.ports.1
                        )));
                    }
                    if !taken.insert(n) {
                        return Err(invalid(
                            info,
                            name,
                            &format!("spec.ports[{i}].nodePort"),
                            format!("Invalid value: {n}: provided port is already allocated"),
                        ));
                    }
                }
                None => {
                    let mut chosen = None;
                    for attempt in 0..span {
                        let offset = if attempt < 64 { random_u32() % span } else { attempt };
                        let candidate = self.ports.0 + offset as u16;
                        if taken.insert(candidate) {
                            chosen = Some(candidate);
                            break;
                        }
                    }
                    let chosen = chosen
                        .ok_or_else(|| ApiError::internal("failed to allocate a nodePort"))?;
                    if let Some(obj) = port.as_object_mut() {
                        obj.insert("nodePort".into(), json!(chosen));
                    }
                }
            }
        }
        Ok(())
    }
}

/// The store keys an updated Service takes and gives back, committed with it.
#[derive(Debug, Default)]
pub struct Reallocation {
    pub claim: Vec<String>,
    pub release: Vec<String>,
}

fn service_type(service: &Value) -> &str {
    service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")
}

fn needs_cluster_ip(service: &Value) -> bool {
    service_type(service) != "ExternalName"
}

fn needs_node_ports(service: &Value) -> bool {
    matches!(service_type(service), "NodePort" | "LoadBalancer")
}

fn node_port(port: &Value) -> u64 {
    port.get("nodePort").and_then(Value::as_u64).unwrap_or(0)
}

fn is_blank(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(_) => false,
    }
}

/// The reference's `patchAllocatedValues`: an update that leaves out the clusterIP or a
/// nodePort keeps the one already allocated (nodePorts matched by port name).
fn keep_allocated(old: &Value, new: &mut Value) {
    let (keep_ip, keep_ports) = (
        needs_cluster_ip(old) && needs_cluster_ip(new),
        needs_node_ports(old) && needs_node_ports(new),
    );
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if keep_ip {
        for field in ["clusterIP", "clusterIPs"] {
            if is_blank(spec.get(field)) {
                if let Some(value) = old.pointer(&format!("/spec/{field}")) {
                    spec.insert(field.into(), value.clone());
                }
            }
        }
    }
    if !keep_ports {
        return;
    }
    let old_ports =
        old.pointer("/spec/ports").and_then(Value::as_array).cloned().unwrap_or_default();
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return };
    let in_new: HashSet<u64> = ports.iter().map(node_port).collect();
    for port in ports.iter_mut().filter(|p| node_port(p) == 0) {
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        let previous = old_ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == name)
            .map(node_port)
            .filter(|n| *n > 0 && !in_new.contains(n));
        if let (Some(n), Some(obj)) = (previous, port.as_object_mut()) {
            obj.insert("nodePort".into(), json!(n));
        }
    }
}

/// The reference's `dropTypeDependentFields`: moving to a type that does not use the
/// clusterIP or nodePorts drops them, unless the user changed them in the same update (then
/// validation tells them).
fn drop_type_dependent(old: &Value, new: &mut Value) {
    let drop_ip = needs_cluster_ip(old) && !needs_cluster_ip(new);
    let drop_ports = needs_node_ports(old) && !needs_node_ports(new);
    let old_spec = old.get("spec").cloned().unwrap_or_default();
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else { return };
    if drop_ip {
        for field in ["clusterIP", "clusterIPs"] {
            if spec.get(field) == old_spec.get(field) {
                spec.remove(field);
            }
        }
    }
    if drop_ports {
        let old_ports: Vec<u64> = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|ports| ports.iter().map(node_port).collect())
            .unwrap_or_default();
        for (i, port) in
            spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten().enumerate()
        {
            if old_ports.get(i).is_some_and(|n| *n == node_port(port)) {
                if let Some(obj) = port.as_object_mut() {
                    obj.remove("nodePort");
                }
            }
        }
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    u32::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_keys_cover_ips_and_node_ports() {
        let svc = json!({"spec": {"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
            "ports": [{"port": 80, "nodePort": 30080}, {"port": 81}]}});
        assert_eq!(
            allocation_keys(&svc),
            vec![
                "/registry/ranges/serviceips/10.43.0.9",
                "/registry/ranges/servicenodeports/30080"
            ]
        );
        let ranges = ServiceRanges::new((Ipv4Addr::new(10, 43, 7, 7), 16), (30000, 32767));
        assert_eq!(ranges.first_ip(), Ipv4Addr::new(10, 43, 0, 1));
        assert!(ranges.contains(Ipv4Addr::new(10, 43, 255, 254)));
        assert!(!ranges.contains(Ipv4Addr::new(10, 43, 255, 255)));
        assert!(!ranges.contains(Ipv4Addr::new(10, 44, 0, 1)));
    }
}
