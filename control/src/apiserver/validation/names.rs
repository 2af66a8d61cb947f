//! The reference's string-format checks (`k8s.io/apimachinery/pkg/util/validation`): DNS-1123
//! labels and subdomains, DNS-1035 labels, qualified names (label and annotation keys), label
//! values, path segment names, IANA service (port) names, config keys and environment variable
//! names. Each returns the reference's messages; empty means valid.

/// Maximum length of a DNS-1123 label (and a label value, a qualified name's name part).
pub const LABEL_MAX: usize = 63;
/// Maximum length of a DNS-1123 subdomain.
pub const SUBDOMAIN_MAX: usize = 253;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case \
     alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. \
     'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case \
     alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character \
     (e.g. 'example.com', regex used for validation is \
     '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric \
     characters or '-', start with an alphabetic character, and end with an alphanumeric \
     character (e.g. 'my-name',  or 'abc-123', regex used for validation is \
     '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and \
     must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
     '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric \
     characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. \
     'MyValue',  or 'my_value',  or '12345', regex used for validation is \
     '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', \
     '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is \
     '[-._a-zA-Z0-9]+')";

fn max_len(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// The messages of `IsDNS1123Label`.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > LABEL_MAX {
        msgs.push(max_len(LABEL_MAX));
    }
    if !matches_label(s) {
        msgs.push(DNS1123_LABEL_MSG.to_string());
    }
    msgs
}

/// The messages of `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        msgs.push(max_len(SUBDOMAIN_MAX));
    }
    if !s.split('.').all(matches_label) {
        msgs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    msgs
}

/// The messages of `IsDNS1035Label` (service names).
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > LABEL_MAX {
        msgs.push(max_len(LABEL_MAX));
    }
    if !(matches_label(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        msgs.push(DNS1035_LABEL_MSG.to_string());
    }
    msgs
}

/// The messages of `path.IsValidPathSegmentName` (RBAC object names).
pub fn path_segment(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s == "." || s == ".." {
        msgs.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            msgs.push(format!("may not contain '{bad}'"));
        }
    }
    msgs
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// The messages of `IsQualifiedName` (label and annotation keys, finalizers).
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                msgs.push("prefix part must be non-empty".to_string());
            } else {
                msgs.extend(
                    dns1123_subdomain(prefix).into_iter().map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            msgs.push(format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and \
                 '/' (e.g. 'example.com/MyName')"
            ));
            return msgs;
        }
    };
    if name.is_empty() {
        msgs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX {
        msgs.push(format!("name part {}", max_len(LABEL_MAX)));
    }
    if !name.is_empty() && !matches_qualified_name_part(name) {
        msgs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    msgs
}

/// The messages of `IsValidLabelValue`.
pub fn label_value(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > LABEL_MAX {
        msgs.push(max_len(LABEL_MAX));
    }
    if !s.is_empty() && !matches_qualified_name_part(s) {
        msgs.push(LABEL_VALUE_MSG.to_string());
    }
    msgs
}

/// The messages of `IsValidPortName` (IANA service names: container and service port names).
pub fn port_name(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > 15 {
        msgs.push(max_len(15));
    }
    if !s.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        msgs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        msgs.push("must contain at least one letter (a-z)".to_string());
    }
    if s.contains("--") {
        msgs.push("must not contain consecutive hyphens".to_string());
    }
    if s.starts_with('-') || s.ends_with('-') {
        msgs.push("must not begin or end with a hyphen".to_string());
    }
    msgs
}

/// The messages of `IsConfigMapKey` (configmap and secret data keys).
pub fn config_key(s: &str) -> Vec<String> {
    let mut msgs = Vec::new();
    if s.len() > SUBDOMAIN_MAX {
        msgs.push(max_len(SUBDOMAIN_MAX));
    }
    if s.is_empty() || !s.bytes().all(|c| is_alnum(c) || matches!(c, b'-' | b'_' | b'.')) {
        msgs.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." || s == ".." {
        msgs.push(format!("must not be '{s}'"));
    } else if s.starts_with("..") {
        msgs.push("must not start with '..'".to_string());
    }
    msgs
}

/// The messages of the relaxed environment variable name check (on by default since 1.32):
/// printable ASCII except '='.
pub fn env_var_name(s: &str) -> Vec<String> {
    if !s.is_empty() && s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'=') {
        Vec::new()
    } else {
        vec!["a valid environment variable name must consist only of printable ASCII characters \
              other than '='"
            .to_string()]
    }
}

/// `name` with a trailing '-' masked, as the reference checks generateName prefixes.
pub fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => format!("{rest}a"),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(dns1123_label("my-name").is_empty());
        assert!(dns1123_label("123-abc").is_empty());
        assert_eq!(dns1123_label("My_Name").len(), 1);
        assert_eq!(dns1123_label(&"a".repeat(64)), vec![max_len(63)]);
        assert!(dns1123_subdomain("example.com").is_empty());
        assert!(!dns1123_subdomain("example..com").is_empty());
        assert!(!dns1123_subdomain("-a").is_empty());
        assert!(dns1035_label("web").is_empty());
        assert!(!dns1035_label("1web").is_empty());
        assert_eq!(path_segment("a/b"), vec!["may not contain '/'"]);
        assert_eq!(path_segment(".."), vec!["may not be '..'"]);
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(qualified_name("app.kubernetes.io/name").is_empty());
        assert!(qualified_name("MyName").is_empty());
        assert_eq!(qualified_name("/x"), vec!["prefix part must be non-empty"]);
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(qualified_name("Bad_Prefix/x")[0].starts_with("prefix part a lowercase RFC 1123"));
        assert!(qualified_name("x/-y")[0].starts_with("name part must consist"));
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert_eq!(label_value("a b"), vec![LABEL_VALUE_MSG.to_string()]);
    }

    #[test]
    fn ports_keys_env_and_generate_name() {
        assert!(port_name("http-alt").is_empty());
        assert_eq!(port_name("8080"), vec!["must contain at least one letter (a-z)"]);
        assert!(config_key("app.properties").is_empty());
        assert!(!config_key("a/b").is_empty());
        assert!(env_var_name("MY_VAR.1").is_empty());
        assert!(!env_var_name("A=B").is_empty());
        assert_eq!(mask_trailing_dash("web-"), "weba");
    }
}
