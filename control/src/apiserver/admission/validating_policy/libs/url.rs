//! The reference's URL library: `url(s)` parses like Go's `url.ParseRequestURI` (an absolute
//! URL, or an absolute path), `isURL(s)` tests, and a URL has `getScheme()`, `getHost()` (with
//! the port, an IPv6 literal in brackets), `getHostname()` (without either), `getPort()`,
//! `getEscapedPath()` and `getQuery()` (a map of each key to its decoded values).

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::functions::Function;
use cel::common::types::STRING_TYPE;
use cel::objects::{Key, Map, Opaque};
use cel::{DeclarationError, Env, Value};

use super::{error, opaque, opaque_arg, opaque_type, str_arg, string, value_fn, Out};

const TYPE_NAME: &str = "kubernetes.URL";

/// A parsed URL (the parts kept as written, still escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in super::super) struct Url {
    scheme: String,
    /// `host[:port]`, brackets kept.
    host: String,
    path: String,
    query: String,
}

impl Opaque for Url {
    fn runtime_type_name(&self) -> &str {
        TYPE_NAME
    }
}

fn parse(s: &str) -> Result<Url, String> {
    let invalid = || format!("parse {s:?}: invalid URI for request");
    if s.is_empty() || s.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(invalid());
    }
    let (rest, query) = s.split_once('?').unwrap_or((s, ""));
    let (scheme, rest) = match rest.split_once(':') {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (scheme.to_ascii_lowercase(), rest)
        }
        _ if rest.starts_with('/') => (String::new(), rest),
        _ => return Err(invalid()),
    };
    let (host, path) = match rest.strip_prefix("//") {
        Some(authority) => {
            let end = authority.find('/').unwrap_or(authority.len());
            let (authority, path) = authority.split_at(end);
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            validate_host(host).map_err(|e| format!("parse {s:?}: {e}"))?;
            (host.to_string(), path.to_string())
        }
        // An opaque URL (`mailto:x`) has no host and, for the reference, no path.
        None if !scheme.is_empty() && !rest.starts_with('/') => (String::new(), String::new()),
        None => (String::new(), rest.to_string()),
    };
    Ok(Url { scheme, host, path, query: query.to_string() })
}

/// A port, when present, must be numeric; an IPv6 literal must be bracketed.
fn validate_host(host: &str) -> Result<(), String> {
    let port = match host.strip_prefix('[') {
        Some(v6) => {
            let (_, after) = v6.split_once(']').ok_or("missing ']' in host")?;
            after.strip_prefix(':').or(if after.is_empty() { None } else { Some("x") })
        }
        None => host.split_once(':').map(|(_, p)| p),
    };
    match port {
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("invalid port {:?} after host", format!(":{p}")))
        }
        _ => Ok(()),
    }
}

impl Url {
    /// The hostname and the port (empty when absent).
    fn split_host(&self) -> (&str, &str) {
        if let Some(v6) = self.host.strip_prefix('[') {
            let (name, after) = v6.split_once(']').unwrap_or((v6, ""));
            return (name, after.strip_prefix(':').unwrap_or(""));
        }
        self.host.split_once(':').unwrap_or((&self.host, ""))
    }
}

/// Decodes `%XX` escapes and `+` (as a space), as Go's `url.QueryUnescape`.
fn unescape(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(|| format!("invalid URL escape {s:?}"))?;
                out.push(
                    u8::from_str_radix(hex, 16)
                        .map_err(|_| format!("invalid URL escape {hex:?}"))?,
                );
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "invalid UTF-8 in query".to_string())
}

fn url(args: &[Value]) -> Out {
    parse(str_arg(args, 0, "url")?).map(opaque).map_err(|e| error("url", e))
}

fn is_url(args: &[Value]) -> Out {
    Ok(Value::Bool(parse(str_arg(args, 0, "isURL")?).is_ok()))
}

fn this<'a>(args: &'a [Value], function: &str) -> Result<&'a Url, cel::ExecutionError> {
    opaque_arg::<Url>(args, 0, function)
}

fn get_scheme(args: &[Value]) -> Out {
    Ok(string(this(args, "getScheme")?.scheme.clone()))
}

fn get_host(args: &[Value]) -> Out {
    Ok(string(this(args, "getHost")?.host.clone()))
}

fn get_hostname(args: &[Value]) -> Out {
    Ok(string(this(args, "getHostname")?.split_host().0))
}

fn get_port(args: &[Value]) -> Out {
    Ok(string(this(args, "getPort")?.split_host().1))
}

fn get_escaped_path(args: &[Value]) -> Out {
    Ok(string(this(args, "getEscapedPath")?.path.clone()))
}

fn get_query(args: &[Value]) -> Out {
    let url = this(args, "getQuery")?;
    let mut query: HashMap<Key, Vec<Value>> = HashMap::new();
    for pair in url.query.split(['&']).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // Go's ParseQuery skips what does not decode.
        let (Ok(k), Ok(v)) = (unescape(k), unescape(v)) else { continue };
        query.entry(Key::String(Arc::new(k))).or_default().push(string(v));
    }
    let map = query.into_iter().map(|(k, v)| (k, Value::List(Arc::new(v)))).collect();
    Ok(Value::Map(Map { map: Arc::new(map) }))
}

pub(super) fn register(env: &mut Env) -> Result<(), DeclarationError> {
    let t = || opaque_type(TYPE_NAME);
    env.add_type(t())?;
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], value_fn!(url))?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], value_fn!(is_url))?;
    let members: [(&str, Function); 6] = [
        ("getScheme", value_fn!(get_scheme)),
        ("getHost", value_fn!(get_host)),
        ("getHostname", value_fn!(get_hostname)),
        ("getPort", value_fn!(get_port)),
        ("getEscapedPath", value_fn!(get_escaped_path)),
        ("getQuery", value_fn!(get_query)),
    ];
    for (name, f) in members {
        env.add_member_overload(name, &format!("url_{name}"), t(), vec![], f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_url() {
        let u = parse("HTTPS://user@[::1]:8443/a%20b/c?x=1&x=2&y=a+b")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "[::1]:8443");
        assert_eq!(u.split_host(), ("::1", "8443"));
        assert_eq!(u.path, "/a%20b/c");
        assert_eq!(unescape("a+b%21").as_deref(), Ok("a b!"));
        let p = parse("/just/a/path").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.scheme.as_str(), p.host.as_str(), p.path.as_str()), ("", "", "/just/a/path"));
        for bad in ["example.com", "", "http://host:port/", "relative/path", "a b://x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
