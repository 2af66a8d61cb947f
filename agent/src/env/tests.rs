//! Tests of the container environment against kubelet's behaviour.

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use serde_json::json;

use super::*;
use crate::objects::MemoryObjects;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-1", "namespace": "shop", "uid": "u-123",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"note": "say \"hi\"\n"}
        },
        "spec": spec,
    }))
    .expect("pod json")
}

fn container(value: serde_json::Value) -> Container {
    serde_json::from_value(value).expect("container json")
}

fn node() -> NodeFacts {
    NodeFacts {
        node_name: "edge-1".into(),
        host_ip: "192.168.1.10".into(),
        host_ips: vec![],
        pod_ips: vec!["fd00::5".into(), "10.42.0.5".into()],
        allocatable_cpu_millis: 4000,
        allocatable_memory: 8 << 30,
        allocatable_ephemeral_storage: 100 << 30,
    }
}

fn objects() -> MemoryObjects {
    let objects = MemoryObjects::new();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "cfg", "namespace": "shop"},
        "data": {"LEVEL": "debug", "MODE": "fast", "bad=key": "x", "1ST": "digit ok"}
    }))
    .expect("cm");
    objects.put_config_map(cm);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds", "namespace": "shop"},
        "data": {"PASSWORD": "czNjcjN0"}
    }))
    .expect("secret");
    objects.put_secret(secret);
    objects
}

fn service(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"clusterIP": ip, "ports": ports}
    }))
    .expect("service")
}

fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

async fn env_of(p: &Pod, c: &Container, services: &[Service]) -> Result<ContainerEnv, EnvError> {
    build_container_env(p, c, &node(), services, &objects()).await
}

#[test]
fn expansion_follows_kubelets_rules() {
    let env = vec![("A".to_owned(), "apple".to_owned()), ("B".to_owned(), "$(A)".to_owned())];
    let cases = [
        ("$(A)", "apple"),
        ("x$(A)y$(A)", "xappleyapple"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("$$$(A)", "$apple"),
        ("$$", "$"),
        ("a$b", "a$b"),
        ("$", "$"),
        ("$(A", "$(A"),
        ("$()", "$()"),
        ("é$(A)ü", "éappleü"),
        // Values are not expanded again.
        ("$(B)", "$(A)"),
    ];
    for (input, want) in cases {
        assert_eq!(expand(input, &env), want, "expanding {input:?}");
    }
}

#[test]
fn command_and_args_expand_against_the_final_environment() {
    let env = vec![("PORT".to_owned(), "8080".to_owned())];
    let args = vec!["--port=$(PORT)".to_owned(), "$$(PORT)".to_owned(), "$(HOST)".to_owned()];
    assert_eq!(expand_all(&args, &env), ["--port=8080", "$(PORT)", "$(HOST)"]);
}

#[test]
fn exec_probe_commands_see_only_literal_env_values() {
    let c = container(json!({"name": "c", "env": [
        {"name": "LIT", "value": "v"},
        {"name": "REF", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    ]}));
    let cmd = vec!["check $(LIT) $(REF)".to_owned()];
    assert_eq!(expand_static(&cmd, &c), ["check v "]);
}

#[tokio::test]
async fn values_reference_envfrom_earlier_entries_and_services_but_not_later_entries() {
    let p = pod(json!({"containers": []}));
    let c = container(json!({"name": "c",
    "envFrom": [{"configMapRef": {"name": "cfg"}}],
    "env": [
        {"name": "FIRST", "value": "1"},
        {"name": "COMBINED", "value": "$(FIRST)-$(LEVEL)-$(LATER)-$(DB_SERVICE_HOST)"},
        {"name": "LATER", "value": "3"},
        {"name": "MODE", "value": "slow"}
    ]}));
    let services = [service("shop", "db", "10.43.0.9", json!([{"port": 5432}]))];
    let env = env_of(&p, &c, &services).await.expect("env");
    assert_eq!(get(&env.vars, "COMBINED"), Some("1-debug-$(LATER)-10.43.0.9"));
    // env overrides envFrom, in place.
    assert_eq!(get(&env.vars, "MODE"), Some("slow"));
    assert_eq!(env.vars.iter().filter(|(k, _)| k == "MODE").count(), 1);
}

#[tokio::test]
async fn key_refs_resolve_and_missing_objects_fail_with_kubelets_messages() {
    let p = pod(json!({"containers": []}));
    let ok = container(json!({"name": "c", "env": [
        {"name": "L", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "LEVEL"}}},
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "PASSWORD"}}},
        {"name": "OPT1", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
        {"name": "OPT2", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k", "optional": true}}},
        {"name": "OPT3", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k", "optional": true}}}
    ]}));
    let env = env_of(&p, &ok, &[]).await.expect("env");
    assert_eq!(get(&env.vars, "L"), Some("debug"));
    assert_eq!(get(&env.vars, "P"), Some("s3cr3t"));
    for optional in ["OPT1", "OPT2", "OPT3"] {
        assert_eq!(get(&env.vars, optional), None, "{optional} is skipped, not set empty");
    }

    let failing = [
        (json!({"configMapKeyRef": {"name": "nope", "key": "k"}}), "configmap \"nope\" not found"),
        (
            json!({"configMapKeyRef": {"name": "cfg", "key": "k"}}),
            "couldn't find key k in ConfigMap shop/cfg",
        ),
        (json!({"secretKeyRef": {"name": "nope", "key": "k"}}), "secret \"nope\" not found"),
        (
            json!({"secretKeyRef": {"name": "creds", "key": "k"}}),
            "couldn't find key k in Secret shop/creds",
        ),
    ];
    for (source, message) in failing {
        let c = container(json!({"name": "c", "env": [{"name": "X", "valueFrom": source}]}));
        let err = env_of(&p, &c, &[]).await.expect_err("must fail");
        assert_eq!(err.to_string(), message);
    }
}

#[tokio::test]
async fn envfrom_applies_prefixes_skips_invalid_names_and_tolerates_optional_sources() {
    let p = pod(json!({"containers": []}));
    let c = container(json!({"name": "c", "envFrom": [
        {"configMapRef": {"name": "cfg"}, "prefix": "APP_"},
        {"secretRef": {"name": "creds"}},
        {"secretRef": {"name": "absent", "optional": true}}
    ]}));
    let env = env_of(&p, &c, &[]).await.expect("env");
    assert_eq!(get(&env.vars, "APP_LEVEL"), Some("debug"));
    assert_eq!(get(&env.vars, "APP_1ST"), Some("digit ok"));
    assert_eq!(get(&env.vars, "PASSWORD"), Some("s3cr3t"));
    assert_eq!(get(&env.vars, "APP_bad=key"), None);
    assert_eq!(
        env.warnings,
        ["Keys [APP_bad=key] from the EnvFrom configMap shop/cfg were skipped since they are considered invalid environment variable names."]
    );

    let required = container(json!({"name": "c", "envFrom": [{"secretRef": {"name": "absent"}}]}));
    let err = env_of(&p, &required, &[]).await.expect_err("must fail");
    assert_eq!(err.to_string(), "secret \"absent\" not found");
}

#[tokio::test]
async fn field_refs_cover_metadata_spec_and_status() {
    let p = pod(json!({"nodeName": "edge-1", "serviceAccountName": "robot", "containers": []}));
    let fields = [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("metadata.uid", "u-123"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", "say \"hi\"\n"),
        ("metadata.labels", "app=\"web\"\ntier=\"front\""),
        ("metadata.annotations", "note=\"say \\\"hi\\\"\\n\""),
        ("spec.nodeName", "edge-1"),
        ("spec.serviceAccountName", "robot"),
        ("status.hostIP", "192.168.1.10"),
        // The node is IPv4, so the IPv4 pod IP comes first.
        ("status.podIP", "10.42.0.5"),
        ("status.podIPs", "10.42.0.5,fd00::5"),
    ];
    let env: Vec<_> = fields
        .iter()
        .enumerate()
        .map(|(i, (path, _))| json!({"name": format!("F{i}"), "valueFrom": {"fieldRef": {"fieldPath": path}}}))
        .collect();
    let c = container(json!({"name": "c", "env": env}));
    let vars = env_of(&p, &c, &[]).await.expect("env").vars;
    for (i, (path, want)) in fields.iter().enumerate() {
        assert_eq!(get(&vars, &format!("F{i}")), Some(*want), "{path}");
    }

    let bad = container(json!({"name": "c", "env": [
        {"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]}));
    let err = env_of(&p, &bad, &[]).await.expect_err("unsupported");
    assert_eq!(err.to_string(), "unsupported fieldPath: spec.hostname");
}

#[tokio::test]
async fn resource_field_refs_round_up_in_the_divisor_and_default_limits_to_allocatable() {
    let p = pod(json!({"containers": []}));
    let c = container(json!({"name": "c",
    "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m", "memory": "32Mi"}},
    "env": [
        {"name": "CPU_LIMIT", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
        {"name": "CPU_LIMIT_M", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}},
        {"name": "CPU_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        {"name": "CPU_REQ_M", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}},
        {"name": "MEM_LIMIT_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
        {"name": "MEM_REQ", "valueFrom": {"resourceFieldRef": {"resource": "requests.memory"}}},
        {"name": "EPH_LIMIT_GI", "valueFrom": {"resourceFieldRef": {"resource": "limits.ephemeral-storage", "divisor": "1Gi"}}}
    ]}));
    let vars = env_of(&p, &c, &[]).await.expect("env").vars;
    assert_eq!(get(&vars, "CPU_LIMIT"), Some("4"), "unset limit = node allocatable");
    assert_eq!(get(&vars, "CPU_LIMIT_M"), Some("4000"));
    assert_eq!(get(&vars, "CPU_REQ"), Some("1"), "250m rounds up to one core");
    assert_eq!(get(&vars, "CPU_REQ_M"), Some("250"));
    assert_eq!(get(&vars, "MEM_LIMIT_MI"), Some("64"));
    assert_eq!(get(&vars, "MEM_REQ"), Some("33554432"));
    assert_eq!(get(&vars, "EPH_LIMIT_GI"), Some("100"));
}

#[tokio::test]
async fn service_links_follow_enable_service_links() {
    let services = [
        service("default", "kubernetes", "10.43.0.1", json!([{"name": "https", "port": 443}])),
        service(
            "shop",
            "redis-main",
            "10.43.0.20",
            json!([{"port": 6379}, {"name": "metrics-port", "port": 9121, "protocol": "TCP"}]),
        ),
        service("shop", "headless", "None", json!([{"port": 80}])),
        service("other", "elsewhere", "10.43.0.30", json!([{"port": 80}])),
    ];
    let c = container(
        json!({"name": "c", "env": [{"name": "REDIS_MAIN_SERVICE_PORT", "value": "override"}]}),
    );

    let linked = env_of(&pod(json!({"containers": []})), &c, &services).await.expect("env").vars;
    let want = [
        ("KUBERNETES_SERVICE_HOST", "10.43.0.1"),
        ("KUBERNETES_SERVICE_PORT", "443"),
        ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
        ("KUBERNETES_PORT", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP", "tcp://10.43.0.1:443"),
        ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
        ("KUBERNETES_PORT_443_TCP_PORT", "443"),
        ("KUBERNETES_PORT_443_TCP_ADDR", "10.43.0.1"),
        ("REDIS_MAIN_SERVICE_HOST", "10.43.0.20"),
        ("REDIS_MAIN_SERVICE_PORT", "override"),
        ("REDIS_MAIN_SERVICE_PORT_METRICS_PORT", "9121"),
        ("REDIS_MAIN_PORT", "tcp://10.43.0.20:6379"),
        ("REDIS_MAIN_PORT_9121_TCP_ADDR", "10.43.0.20"),
    ];
    for (name, value) in want {
        assert_eq!(get(&linked, name), Some(value), "{name}");
    }
    assert_eq!(linked.iter().filter(|(k, _)| k == "REDIS_MAIN_SERVICE_PORT").count(), 1);
    assert!(get(&linked, "HEADLESS_SERVICE_HOST").is_none(), "headless services give no vars");
    assert!(get(&linked, "ELSEWHERE_SERVICE_HOST").is_none(), "other namespaces give no vars");

    let p = pod(json!({"enableServiceLinks": false, "containers": []}));
    let unlinked = env_of(&p, &c, &services).await.expect("env").vars;
    assert_eq!(get(&unlinked, "KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
    assert!(get(&unlinked, "REDIS_MAIN_SERVICE_HOST").is_none());
}
