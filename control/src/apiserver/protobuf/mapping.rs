//! The Kubernetes JSON mapping of the protobuf messages: which message serves an
//! `apiVersion`/`kind`, the JSON names and inlined fields that differ from the `.proto` field
//! names, and the messages whose JSON form is not an object (times, quantities, int-or-strings,
//! raw JSON, string lists, the JSONSchemaProps "or" wrappers). This is the Go types' own JSON
//! marshalling, not proto3 JSON; the exceptions were found by comparing every vendored message
//! with the v1.33 OpenAPI definitions.

use jiff::Timestamp;

/// A message whose JSON form is not an object of its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Special {
    /// `meta.v1.Time` {seconds, nanos}: an RFC 3339 string with whole seconds.
    Time,
    /// `meta.v1.MicroTime`: an RFC 3339 string with six fractional digits.
    MicroTime,
    /// `meta.v1.Duration` {duration ns}: a Go duration string (`1h2m3s`).
    Duration,
    /// `resource.Quantity` {string}: the string.
    Quantity,
    /// `intstr.IntOrString` {type, intVal, strVal}: a number or a string.
    IntOrString,
    /// `runtime.RawExtension`, `apiextensions.v1.JSON`, `meta.v1.FieldsV1` {raw}: embedded JSON.
    RawJson,
    /// `ExtraValue`s and `meta.v1.Verbs` {items}: an array of strings.
    StringList,
    /// `JSONSchemaPropsOrArray` {schema, jSONSchemas}: a schema or an array of schemas.
    SchemaOrArray,
    /// `JSONSchemaPropsOrBool` {allows, schema}: a schema or a boolean.
    SchemaOrBool,
    /// `JSONSchemaPropsOrStringArray` {schema, property}: a schema or an array of strings.
    SchemaOrStringArray,
}

const META: &str = "apimachinery.pkg.apis.meta.v1";
const APIEXTENSIONS: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1";

/// The special JSON form of message `name` (a full name without the leading dot).
pub(super) fn special(name: &str) -> Option<Special> {
    let (package, message) = name.rsplit_once('.')?;
    Some(match (package, message) {
        (META, "Time") => Special::Time,
        (META, "MicroTime") => Special::MicroTime,
        (META, "Duration") => Special::Duration,
        (META, "FieldsV1") | ("apimachinery.pkg.runtime", "RawExtension") => Special::RawJson,
        (APIEXTENSIONS, "JSON") => Special::RawJson,
        (META, "Verbs") => Special::StringList,
        (
            "api.authentication.v1" | "api.authorization.v1" | "api.certificates.v1",
            "ExtraValue",
        ) => Special::StringList,
        ("apimachinery.pkg.api.resource", "Quantity") => Special::Quantity,
        ("apimachinery.pkg.util.intstr", "IntOrString") => Special::IntOrString,
        (APIEXTENSIONS, "JSONSchemaPropsOrArray") => Special::SchemaOrArray,
        (APIEXTENSIONS, "JSONSchemaPropsOrBool") => Special::SchemaOrBool,
        (APIEXTENSIONS, "JSONSchemaPropsOrStringArray") => Special::SchemaOrStringArray,
        _ => return None,
    })
}

/// The JSON name of `field` of message `message` (mostly the proto field name itself).
pub(super) fn json_name(message: &str, field: &str) -> String {
    let short = message.rsplit('.').next().unwrap_or(message);
    match (short, field) {
        // go-to-protobuf kept the Go field name where the JSON tag was not used.
        (_, "Webhooks" | "Expression" | "Name") => field.to_ascii_lowercase(),
        ("BoundObjectReference", "uID") => "uid".into(),
        ("IngressClassParametersReference", "aPIGroup") => "apiGroup".into(),
        ("JSONSchemaProps", "ref") => "$ref".into(),
        ("JSONSchemaProps", "schema") => "$schema".into(),
        ("JSONSchemaProps", x) if x.starts_with("xKubernetes") => kebab(x),
        _ => field.into(),
    }
}

/// `xKubernetesListMapKeys` → `x-kubernetes-list-map-keys`.
fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `field` of `message` is a Go embedded struct (`json:",inline"`): its fields appear
/// directly in the parent's JSON object.
pub(super) fn inline(message: &str, field: &str) -> bool {
    let short = message.rsplit('.').next().unwrap_or(message);
    matches!(
        (short, field),
        ("NamedRuleWithOperations", "ruleWithOperations")
            | ("RuleWithOperations", "rule")
            | (
                "ConfigMapEnvSource"
                    | "ConfigMapKeySelector"
                    | "ConfigMapProjection"
                    | "ConfigMapVolumeSource"
                    | "SecretEnvSource"
                    | "SecretKeySelector"
                    | "SecretProjection",
                "localObjectReference"
            )
            | ("EphemeralContainer", "ephemeralContainerCommon")
            | ("PersistentVolumeSpec", "persistentVolumeSource")
            | ("Probe", "handler")
            | ("Volume", "volumeSource")
            | ("IngressRule", "ingressRuleValue")
    )
}

/// The proto package prefix (without the version) of an API group.
fn package_of_group(group: &str) -> Option<&'static str> {
    Some(match group {
        "" => "api.core",
        "admissionregistration.k8s.io" => "api.admissionregistration",
        "admission.k8s.io" => "api.admission",
        "apidiscovery.k8s.io" => "api.apidiscovery",
        "apps" => "api.apps",
        "authentication.k8s.io" => "api.authentication",
        "authorization.k8s.io" => "api.authorization",
        "autoscaling" => "api.autoscaling",
        "batch" => "api.batch",
        "certificates.k8s.io" => "api.certificates",
        "coordination.k8s.io" => "api.coordination",
        "discovery.k8s.io" => "api.discovery",
        "events.k8s.io" => "api.events",
        "flowcontrol.apiserver.k8s.io" => "api.flowcontrol",
        "networking.k8s.io" => "api.networking",
        "node.k8s.io" => "api.node",
        "policy" => "api.policy",
        "rbac.authorization.k8s.io" => "api.rbac",
        "resource.k8s.io" => "api.resource",
        "scheduling.k8s.io" => "api.scheduling",
        "storage.k8s.io" => "api.storage",
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions",
        "apiregistration.k8s.io" => "kube_aggregator.pkg.apis.apiregistration",
        "meta.k8s.io" => "apimachinery.pkg.apis.meta",
        "metrics.k8s.io" => "metrics.pkg.apis.metrics",
        _ => return None,
    })
}

/// The candidate message names of an `apiVersion`/`kind`, best first: the group's own message,
/// then `meta.v1` for the kinds every group version serves (Status, DeleteOptions, ...).
pub(super) fn message_candidates(api_version: &str, kind: &str) -> Vec<String> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let mut out = Vec::new();
    if kind.is_empty() || version.is_empty() {
        return out;
    }
    // A group Kubernetes does not define (custom resources) has no protobuf form at all, not
    // even for a kind it happens to call `Status`.
    let Some(package) = package_of_group(group) else { return out };
    out.push(format!("{package}.{version}.{kind}"));
    if matches!(
        kind,
        "Status"
            | "DeleteOptions"
            | "WatchEvent"
            | "APIGroup"
            | "APIGroupList"
            | "APIResourceList"
            | "APIVersions"
    ) {
        out.push(format!("{META}.{kind}"));
    }
    out
}

/// `metav1.Time` / `MicroTime` JSON: RFC 3339 in UTC, whole seconds or six fractional digits.
pub(super) fn format_time(seconds: i64, nanos: i32, micro: bool) -> Option<String> {
    let ts = Timestamp::new(seconds, nanos.clamp(0, 999_999_999)).ok()?;
    let base = ts.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    Some(if micro {
        format!("{base}.{:06}Z", ts.subsec_nanosecond() / 1000)
    } else {
        format!("{base}Z")
    })
}

/// Parses an RFC 3339 time into (seconds, nanos); `Time` drops the fraction like the reference.
pub(super) fn parse_time(text: &str, micro: bool) -> Result<(i64, i32), String> {
    let ts: Timestamp = text.parse().map_err(|e| format!("invalid time {text:?}: {e}"))?;
    let nanos = if micro { ts.subsec_nanosecond() / 1000 * 1000 } else { 0 };
    Ok((ts.as_second(), nanos))
}

/// Go's `time.Duration.String()`: `0s`, `1.5s`, `2h3m4s`, `150ms`, `-1m0s`.
pub(super) fn format_duration(nanos: i64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    if n < 1_000_000_000 {
        // Sub-second: the largest unit that keeps an integer part.
        let (unit, scale) = match n {
            n if n < 1_000 => return format!("{sign}{n}ns"),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", fraction(n, scale));
    }
    let (hours, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
    let (minutes, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let seconds = fraction(rest, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{sign}{seconds}s"),
        (0, m) => format!("{sign}{m}m{seconds}s"),
        (h, m) => format!("{sign}{h}h{m}m{seconds}s"),
    }
}

/// `value / scale` with the fraction's trailing zeros trimmed (`1500, 1000` → `1.5`).
fn fraction(value: u64, scale: u64) -> String {
    let (whole, frac) = (value / scale, value % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = scale.ilog10() as usize;
    let frac = format!("{frac:0digits$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// Go's `time.ParseDuration` into nanoseconds.
pub(super) fn parse_duration(text: &str) -> Result<i64, String> {
    let invalid = || format!("invalid duration {text:?}");
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len =
            rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return Err(invalid());
    }
    let nanos = total.round() as i64;
    Ok(if negative { -nanos } else { nanos })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_go_json_tags() {
        let props = "apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps";
        assert_eq!(json_name(props, "xKubernetesListMapKeys"), "x-kubernetes-list-map-keys");
        assert_eq!(json_name(props, "ref"), "$ref");
        assert_eq!(json_name("api.authentication.v1.BoundObjectReference", "uID"), "uid");
        assert_eq!(json_name("api.admissionregistration.v1.Variable", "Name"), "name");
        assert_eq!(json_name("api.core.v1.PodSpec", "nodeName"), "nodeName");
        assert!(inline("api.core.v1.Volume", "volumeSource"));
        assert!(!inline("api.core.v1.Volume", "name"));
        assert_eq!(message_candidates("apps/v1", "Deployment"), ["api.apps.v1.Deployment"]);
        assert_eq!(
            message_candidates("v1", "Status"),
            ["api.core.v1.Status", "apimachinery.pkg.apis.meta.v1.Status"]
        );
        assert!(message_candidates("apps.example.com/v1", "Deployment").is_empty());
        assert!(message_candidates("example.com/v1", "Status").is_empty());
        assert_eq!(
            message_candidates("metrics.k8s.io/v1beta1", "PodMetrics"),
            ["metrics.pkg.apis.metrics.v1beta1.PodMetrics"]
        );
    }

    #[test]
    fn times_and_durations_as_go_writes_them() {
        assert_eq!(format_time(1_704_164_705, 5, false).unwrap(), "2024-01-02T03:05:05Z");
        assert_eq!(
            format_time(1_704_164_705, 123_456_789, true).unwrap(),
            "2024-01-02T03:05:05.123456Z"
        );
        assert_eq!(
            parse_time("2024-01-02T03:05:05.123456789Z", true).unwrap(),
            (1_704_164_705, 123_456_000)
        );
        assert_eq!(parse_time("2024-01-02T04:05:05+01:00", false).unwrap(), (1_704_164_705, 0));
        assert!(parse_time("yesterday", false).is_err());
        for (nanos, text) in [
            (0, "0s"),
            (1_500_000_000, "1.5s"),
            (150_000_000, "150ms"),
            (2_500, "2.5µs"),
            (7, "7ns"),
            (3_600_000_000_000 + 2 * 60_000_000_000 + 3_000_000_000, "1h2m3s"),
            (-60_000_000_000, "-1m0s"),
        ] {
            assert_eq!(format_duration(nanos), text);
            assert_eq!(parse_duration(text).unwrap(), nanos, "{text}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000_000);
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }
}
