//! Turning an HTTP request line into what it asks for: the Kubernetes "request info" (verb,
//! group, version, namespace, resource, name, subresource) with its query parameters, and the
//! media types of the body and of the wanted answer.

use std::collections::HashMap;

use super::status::ApiError;

/// Where a path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/healthz`, `/livez`, `/readyz` (and their `/…/<check>` forms).
    Health(String),
    Version,
    /// `/cacerts`: the cluster CA, unauthenticated (agents pin it by the hash in their token).
    CaCerts,
    Metrics,
    /// `/openapi/v2`, `/openapi/v3` and `/openapi/v3/<group version>`: the path after `/openapi/`.
    OpenApi(String),
    /// `/skerry/v1/tunnel`: an agent opening its tunnel (see `apiserver::tunnel`).
    Tunnel,
    /// `/.well-known/openid-configuration`: service account issuer discovery.
    OidcConfiguration,
    /// `/openid/v1/jwks`: the service account token signing keys.
    OidcJwks,
    /// `/api`: the legacy group's versions.
    LegacyRoot,
    /// `/apis`: every group.
    GroupsRoot,
    /// `/apis/<group>`.
    Group(String),
    /// `/api/v1` or `/apis/<group>/<version>`: the resources of a group version.
    GroupVersion {
        group: String,
        version: String,
    },
    /// A resource, collection or subresource.
    Resource(ResourcePath),
    NotFound,
}

/// The resource part of a request path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The path after `proxy/` in `<resource>/<name>/proxy/<path>` (nodes: to the kubelet).
    pub proxy_path: Option<String>,
    /// The deprecated `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

/// Parses a request path.
pub fn route(path: &str) -> Route {
    let parts: Vec<String> =
        path.split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    match parts.as_slice() {
        [p, rest @ ..] if matches!(*p, "healthz" | "livez" | "readyz") => {
            Route::Health(rest.first().map(|s| s.to_string()).unwrap_or_default())
        }
        ["version"] => Route::Version,
        ["cacerts"] => Route::CaCerts,
        ["metrics"] => Route::Metrics,
        ["openapi", rest @ ..] if !rest.is_empty() => Route::OpenApi(rest.join("/")),
        ["skerry", "v1", "tunnel"] => Route::Tunnel,
        [".well-known", "openid-configuration"] => Route::OidcConfiguration,
        ["openid", "v1", "jwks"] => Route::OidcJwks,
        ["api"] => Route::LegacyRoot,
        ["apis"] => Route::GroupsRoot,
        ["api", version] => {
            Route::GroupVersion { group: String::new(), version: version.to_string() }
        }
        ["apis", group] => Route::Group(group.to_string()),
        ["apis", group, version] => {
            Route::GroupVersion { group: group.to_string(), version: version.to_string() }
        }
        ["api", version, rest @ ..] => resource_route("", version, rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => Route::NotFound,
    }
}

fn resource_route(group: &str, version: &str, mut rest: &[&str]) -> Route {
    let mut path =
        ResourcePath { group: group.into(), version: version.into(), ..Default::default() };
    if rest.first() == Some(&"watch") {
        path.watch_prefix = true;
        rest = &rest[1..];
    }
    // `namespaces/<ns>/<resource>/…` unless the third part is a namespace subresource.
    if rest.len() > 2 && rest[0] == "namespaces" && !matches!(rest[2], "status" | "finalize") {
        path.namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    match rest {
        [resource] => path.resource = resource.to_string(),
        [resource, name] => {
            path.resource = resource.to_string();
            path.name = Some(name.to_string());
        }
        [resource, name, sub] => {
            path.resource = resource.to_string();
            path.name = Some(name.to_string());
            path.subresource = Some(sub.to_string());
        }
        [resource, name, "proxy", tail @ ..] => {
            path.resource = resource.to_string();
            path.name = Some(name.to_string());
            path.subresource = Some("proxy".to_string());
            path.proxy_path = Some(tail.join("/"));
        }
        _ => return Route::NotFound,
    }
    Route::Resource(path)
}

/// Decodes `%XX` escapes (and `+` in query values when `plus` is set).
fn decode(s: &str, plus: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_decode(s: &str) -> String {
    decode(s, false)
}

/// Query parameters (the last value wins, like Go's `Get`).
#[derive(Debug, Clone, Default)]
pub struct Query {
    params: HashMap<String, String>,
}

impl Query {
    /// Parses a query string.
    pub fn parse(query: Option<&str>) -> Query {
        let mut params = HashMap::new();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.insert(decode(k, true), decode(v, true));
        }
        Query { params }
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// A boolean parameter (`true`/`1`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1" | "True"))
    }

    /// A non-negative integer parameter; 400 when malformed.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }

    /// `dryRun=All` (any other value is a 400, like the reference).
    pub fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{v}\": supported values: \"All\""
            ))),
        }
    }
}

/// The media type a body comes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    JsonPatch,
    MergePatch,
    /// `application/strategic-merge-patch+json` (built-in kinds only).
    StrategicMergePatch,
    /// `application/apply-patch+yaml`: server-side apply (YAML, or JSON as a subset).
    ApplyPatch,
    /// `application/vnd.kubernetes.protobuf` (built-in kinds, see `protobuf`).
    Protobuf,
}

/// The format of a request body from its `Content-Type`; missing = JSON.
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    let Some(ct) = content_type else { return Ok(BodyFormat::Json) };
    let base = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match base.as_str() {
        "" | "application/json" | "*/*" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
        "application/json-patch+json" => Ok(BodyFormat::JsonPatch),
        "application/merge-patch+json" => Ok(BodyFormat::MergePatch),
        "application/strategic-merge-patch+json" => Ok(BodyFormat::StrategicMergePatch),
        "application/apply-patch+yaml" => Ok(BodyFormat::ApplyPatch),
        "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}

/// How the answer should be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    /// A `meta.k8s.io/v1` Table.
    Table,
    /// `application/vnd.kubernetes.protobuf`: built-in kinds in protobuf, anything else JSON.
    Protobuf,
}

/// Picks the response format from `Accept` (first acceptable entry wins).
pub fn output_format(accept: Option<&str>) -> Result<Output, ApiError> {
    output_format_for(accept, true)
}

/// [`output_format`] for a resource that has a protobuf form only if `protobuf`: custom
/// resources skip protobuf entries, so `protobuf, json` answers JSON and protobuf alone 406
/// (the reference CRD handler's standard serializers leave protobuf out).
pub fn output_format_for(accept: Option<&str>, protobuf: bool) -> Result<Output, ApiError> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else { return Ok(Output::Json) };
    for entry in accept.split(',') {
        let mut parts = entry.split(';').map(str::trim);
        let base = parts.next().unwrap_or("").to_ascii_lowercase();
        let params: HashMap<String, String> = parts
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        match base.as_str() {
            "application/json" | "*/*" | "application/*" => {
                match params.get("as").map(String::as_str) {
                    None => return Ok(Output::Json),
                    Some("Table")
                        if params.get("g").map(String::as_str) == Some("meta.k8s.io")
                            && params.get("v").map(String::as_str) == Some("v1") =>
                    {
                        return Ok(Output::Table)
                    }
                    // Other `as=` forms (v1beta1 Tables, PartialObjectMetadata) are not served.
                    Some(_) => continue,
                }
            }
            "application/yaml" => return Ok(Output::Yaml),
            // `as=` forms (protobuf Tables, PartialObjectMetadata) are not served in protobuf.
            "application/vnd.kubernetes.protobuf" if protobuf && !params.contains_key("as") => {
                return Ok(Output::Protobuf)
            }
            _ => continue,
        }
    }
    Err(ApiError::not_acceptable())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_the_reference_request_info() {
        let r = |p| match route(p) {
            Route::Resource(r) => r,
            other => panic!("{other:?}"),
        };
        let pods = r("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(pods.namespace.as_deref(), Some("default"));
        assert_eq!((pods.resource.as_str(), pods.name.as_deref()), ("pods", Some("web")));
        assert_eq!(pods.subresource.as_deref(), Some("status"));
        let proxy = r("/api/v1/nodes/pi-1/proxy/metrics/resource");
        assert_eq!((proxy.resource.as_str(), proxy.name.as_deref()), ("nodes", Some("pi-1")));
        assert_eq!(proxy.subresource.as_deref(), Some("proxy"));
        assert_eq!(proxy.proxy_path.as_deref(), Some("metrics/resource"));
        let ns = r("/api/v1/namespaces/kube-system/status");
        assert_eq!(ns.resource, "namespaces");
        assert_eq!(ns.name.as_deref(), Some("kube-system"));
        assert_eq!(ns.namespace, None);
        let deploy = r("/apis/apps/v1/watch/namespaces/x/deployments");
        assert!(deploy.watch_prefix);
        assert_eq!(deploy.group, "apps");
        assert_eq!(route("/apis/apps"), Route::Group("apps".into()));
        assert_eq!(route("/readyz/etcd"), Route::Health("etcd".into()));
    }

    #[test]
    fn query_and_media_types() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(5));
        assert_eq!(Query::parse(Some("limit=x")).int("limit").unwrap_err().code, 400);
        assert_eq!(body_format(None).unwrap(), BodyFormat::Json);
        assert_eq!(body_format(Some("application/cbor")).unwrap_err().code, 415);
        let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(output_format(Some(table)).unwrap(), Output::Table);
        assert_eq!(
            output_format(Some("application/vnd.kubernetes.protobuf, application/json")).unwrap(),
            Output::Protobuf
        );
        assert_eq!(output_format(Some("text/html")).unwrap_err().code, 406);
        let protobuf_first = Some("application/vnd.kubernetes.protobuf, application/json");
        assert_eq!(output_format_for(protobuf_first, false).unwrap(), Output::Json);
        let protobuf_only = Some("application/vnd.kubernetes.protobuf;stream=watch");
        assert_eq!(output_format(protobuf_only).unwrap(), Output::Protobuf);
        assert_eq!(output_format_for(protobuf_only, false).unwrap_err().code, 406);
    }
}
