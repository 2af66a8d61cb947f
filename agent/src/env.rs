//! A container's environment, built the way the reference kubelet builds it
//! (`makeEnvironmentVariables`), and `$(VAR)` expansion for env values and command/args.
//!
//! Order of precedence, lowest first: service links (`FOO_SERVICE_HOST`, docker-link vars; only
//! the `default/kubernetes` ones when `enableServiceLinks: false`), `envFrom` sources in order,
//! then `env` entries in order. An `env` value may reference (`$(VAR)`) anything defined before
//! it: every `envFrom` key, earlier `env` entries and the service vars. The result keeps the
//! first-definition order of names, followed by the service vars not overridden.
//!
//! API boundary: [`container_env`] (the variables) / [`build_container_env`] (plus kubelet's
//! warnings to turn into events), [`expand`] and [`expand_all`] for command/args,
//! [`expand_static`] for exec probes, [`NodeFacts`], [`EnvError`]. The error messages are
//! kubelet's `CreateContainerConfigError` messages (`configmap "x" not found`,
//! `couldn't find key k in ConfigMap default/x`).

mod downward;
pub mod quantity;

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};

use crate::objects::{ObjectError, ObjectSource};

pub(crate) use downward::{field_value, resource_value, FieldScope};

/// What the node knows about itself and the pod's network, for `fieldRef` and
/// `resourceFieldRef` values.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    /// `spec.nodeName` of the pod, i.e. this node.
    pub node_name: String,
    /// The node's primary IP (`status.hostIP`).
    pub host_ip: String,
    /// All node IPs (`status.hostIPs`); `[host_ip]` when empty.
    pub host_ips: Vec<String>,
    /// The pod's IPs (`status.podIPs`); the first of the node's family is `status.podIP`.
    pub pod_ips: Vec<String>,
    /// Node allocatable CPU in millicores: the default for an unset `limits.cpu`.
    pub allocatable_cpu_millis: i64,
    /// Node allocatable memory in bytes: the default for an unset `limits.memory`.
    pub allocatable_memory: i64,
    /// Node allocatable ephemeral storage in bytes.
    pub allocatable_ephemeral_storage: i64,
}

impl NodeFacts {
    pub(crate) fn host_ips(&self) -> Vec<String> {
        if self.host_ips.is_empty() && !self.host_ip.is_empty() {
            vec![self.host_ip.clone()]
        } else {
            self.host_ips.clone()
        }
    }

    /// Pod IPs with the node's IP family first (kubelet's `sortPodIPs`).
    pub(crate) fn sorted_pod_ips(&self) -> Vec<String> {
        let node_v6 = self.host_ips().first().is_some_and(|ip| ip.contains(':'));
        let mut ips = self.pod_ips.clone();
        ips.sort_by_key(|ip| ip.contains(':') != node_v6);
        ips
    }
}

/// Why a container's environment cannot be built: the pod waits in
/// `CreateContainerConfigError` with this message.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap does not exist.
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist.
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    /// A `configMapKeyRef` names a key the ConfigMap lacks.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound { key: String, namespace: String, name: String },
    /// A `secretKeyRef` names a key the Secret lacks.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound { key: String, namespace: String, name: String },
    /// A `fieldRef` / `resourceFieldRef` kubelet does not support.
    #[error("{0}")]
    FieldPath(String),
    /// The object source could not answer.
    #[error(transparent)]
    Objects(#[from] ObjectError),
}

/// The environment plus kubelet's warnings (event messages of reason
/// `InvalidEnvironmentVariableNames`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerEnv {
    /// `NAME=value` pairs in the order described in the module doc.
    pub vars: Vec<(String, String)>,
    /// One message per `envFrom` source that had keys skipped as invalid names.
    pub warnings: Vec<String>,
}

/// The environment of `container` in `pod`.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    node: &NodeFacts,
    services: &[Service],
    objects: &dyn ObjectSource,
) -> Result<Vec<(String, String)>, EnvError> {
    Ok(build_container_env(pod, container, node, services, objects).await?.vars)
}

/// Like [`container_env`], also returning the warnings kubelet turns into events.
pub async fn build_container_env(
    pod: &Pod,
    container: &Container,
    node: &NodeFacts,
    services: &[Service],
    objects: &dyn ObjectSource,
) -> Result<ContainerEnv, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let service_vars = service_env(namespace, links, services);
    let mut cache =
        ObjectCache { namespace, objects, config_maps: HashMap::new(), secrets: HashMap::new() };
    let mut env = OrderedEnv::default();
    let mut warnings = Vec::new();

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let mut invalid = Vec::new();
        let (kind, name, entries) = if let Some(r) = &from.config_map_ref {
            let Some(cm) = cache.config_map(&r.name, r.optional.unwrap_or(false)).await? else {
                continue;
            };
            ("configMap", &r.name, config_map_entries(&cm))
        } else if let Some(r) = &from.secret_ref {
            let Some(secret) = cache.secret(&r.name, r.optional.unwrap_or(false)).await? else {
                continue;
            };
            ("secret", &r.name, secret_entries(&secret))
        } else {
            continue;
        };
        for (key, value) in entries {
            let key = format!("{prefix}{key}");
            if is_env_var_name(&key) {
                env.set(key, value);
            } else {
                invalid.push(key);
            }
        }
        if !invalid.is_empty() {
            invalid.sort();
            warnings.push(format!(
                "Keys [{}] from the EnvFrom {kind} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
                invalid.join(", ")
            ));
        }
    }

    for var in container.env.iter().flatten() {
        let value = var.value.as_deref().unwrap_or("");
        let value = if !value.is_empty() {
            expand_with(value, |name| env.get(name).or_else(|| lookup(&service_vars, name)))
        } else if let Some(source) = &var.value_from {
            if let Some(field) = &source.field_ref {
                field_value(field, pod, node, FieldScope::Env)?
            } else if let Some(resource) = &source.resource_field_ref {
                resource_value(resource, container, node)?
            } else if let Some(key_ref) = &source.config_map_key_ref {
                let optional = key_ref.optional.unwrap_or(false);
                let Some(cm) = cache.config_map(&key_ref.name, optional).await? else {
                    continue;
                };
                match config_map_entries(&cm).remove(&key_ref.key) {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: key_ref.key.clone(),
                            namespace: namespace.to_owned(),
                            name: key_ref.name.clone(),
                        })
                    }
                }
            } else if let Some(key_ref) = &source.secret_key_ref {
                let optional = key_ref.optional.unwrap_or(false);
                let Some(secret) = cache.secret(&key_ref.name, optional).await? else {
                    continue;
                };
                match secret_entries(&secret).remove(&key_ref.key) {
                    Some(v) => v,
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: key_ref.key.clone(),
                            namespace: namespace.to_owned(),
                            name: key_ref.name.clone(),
                        })
                    }
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        env.set(var.name.clone(), value);
    }

    let mut vars = env.vars;
    for (name, value) in service_vars {
        if !env.index.contains_key(&name) {
            vars.push((name, value));
        }
    }
    Ok(ContainerEnv { vars, warnings })
}

/// Expands `$(VAR)` references in `text` against `env` (the last definition of a name wins):
/// `$$` is a literal `$`, unknown or unterminated references stay as written (kubelet's
/// `third_party/forked/golang/expansion`).
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    expand_with(text, |name| map.get(name).copied())
}

/// [`expand`] over every item (a container's `command` or `args`).
pub fn expand_all(items: &[String], env: &[(String, String)]) -> Vec<String> {
    let map: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    items.iter().map(|item| expand_with(item, |name| map.get(name).copied())).collect()
}

/// Expands `command` against the container's literal `env` values only, without `valueFrom`
/// or service vars (kubelet's `ExpandContainerCommandOnlyStatic`, used for exec probes).
pub fn expand_static(command: &[String], container: &Container) -> Vec<String> {
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.value.clone().unwrap_or_default()))
        .collect();
    expand_all(command, &env)
}

fn lookup<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The expansion algorithm, over a lookup function.
fn expand_with<'a>(text: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&text[checkpoint..cursor]);
            match bytes[cursor + 1] {
                // `$$` is an escaped `$`.
                b'$' => {
                    out.push('$');
                    cursor += 2;
                }
                b'(' => match text[cursor + 2..].find(')') {
                    Some(len) => {
                        let name = &text[cursor + 2..cursor + 2 + len];
                        match lookup(name) {
                            Some(value) => out.push_str(value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        cursor += len + 3;
                    }
                    // Unterminated: `$(` stays, the rest is copied as is.
                    None => {
                        out.push_str("$(");
                        cursor += 2;
                    }
                },
                // A lone `$`: kept, the next character is copied normally.
                _ => {
                    out.push('$');
                    cursor += 1;
                }
            }
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&text[checkpoint..]);
    out
}

/// Whether `name` may be an env var name: printable ASCII without `=` (the API server's
/// `RelaxedEnvironmentVariableValidation`, on by default since 1.32).
fn is_env_var_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// The service-link variables a pod in `namespace` sees (kubelet's `getServiceEnvVarMap` +
/// `envvars.FromServices`): services with a ClusterIP in the pod's namespace when `links`, and
/// `default/kubernetes` always. Sorted by service name for a stable order.
pub fn service_env(namespace: &str, links: bool, services: &[Service]) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()).unwrap_or("");
        if cluster_ip.is_empty() || cluster_ip == "None" {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or("");
        let ns = service.metadata.namespace.as_deref().unwrap_or("default");
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(service);
        } else if ns == namespace && links {
            chosen.insert(name, service);
        }
    }
    let mut vars = Vec::new();
    for (name, service) in chosen {
        let Some(spec) = service.spec.as_ref() else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        let prefix = name.replace('-', "_").to_uppercase();
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        vars.push((format!("{prefix}_SERVICE_HOST"), ip.to_owned()));
        let Some(first) = ports.first() else { continue };
        let port_var = format!("{prefix}_SERVICE_PORT");
        vars.push((port_var.clone(), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                let suffix = port_name.replace('-', "_").to_uppercase();
                vars.push((format!("{port_var}_{suffix}"), port.port.to_string()));
            }
        }
        // Docker-link variables.
        let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            let lower = protocol.to_lowercase();
            let url = format!("{lower}://{host}:{}", port.port);
            if i == 0 {
                vars.push((format!("{prefix}_PORT"), url.clone()));
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
            vars.push((port_prefix.clone(), url));
            vars.push((format!("{port_prefix}_PROTO"), lower));
            vars.push((format!("{port_prefix}_PORT"), port.port.to_string()));
            vars.push((format!("{port_prefix}_ADDR"), ip.to_owned()));
        }
    }
    vars
}

/// Name → value with first-definition order; redefinitions replace the value in place.
#[derive(Default)]
struct OrderedEnv {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl OrderedEnv {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.vars[i].1.as_str())
    }
}

/// ConfigMaps and Secrets fetched once per container, as kubelet's local maps do.
struct ObjectCache<'a> {
    namespace: &'a str,
    objects: &'a dyn ObjectSource,
    config_maps: HashMap<String, ConfigMap>,
    secrets: HashMap<String, Secret>,
}

impl ObjectCache<'_> {
    /// The ConfigMap, `None` when it is missing and `optional`.
    async fn config_map(
        &mut self,
        name: &str,
        optional: bool,
    ) -> Result<Option<ConfigMap>, EnvError> {
        if let Some(cm) = self.config_maps.get(name) {
            return Ok(Some(cm.clone()));
        }
        match self.objects.config_map(self.namespace, name).await? {
            Some(cm) => {
                self.config_maps.insert(name.to_owned(), cm.clone());
                Ok(Some(cm))
            }
            None if optional => Ok(None),
            None => Err(EnvError::ConfigMapNotFound(name.to_owned())),
        }
    }

    /// The Secret, `None` when it is missing and `optional`.
    async fn secret(&mut self, name: &str, optional: bool) -> Result<Option<Secret>, EnvError> {
        if let Some(secret) = self.secrets.get(name) {
            return Ok(Some(secret.clone()));
        }
        match self.objects.secret(self.namespace, name).await? {
            Some(secret) => {
                self.secrets.insert(name.to_owned(), secret.clone());
                Ok(Some(secret))
            }
            None if optional => Ok(None),
            None => Err(EnvError::SecretNotFound(name.to_owned())),
        }
    }
}

/// A ConfigMap's `data` as env values (kubelet reads `data` only, not `binaryData`).
fn config_map_entries(cm: &ConfigMap) -> BTreeMap<String, String> {
    cm.data.clone().unwrap_or_default()
}

/// A Secret's `data` (and `stringData`, should a source hand it over unmerged) as strings.
fn secret_entries(secret: &Secret) -> BTreeMap<String, String> {
    let mut entries: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        entries.insert(k.clone(), v.clone());
    }
    entries
}

#[cfg(test)]
mod tests;
