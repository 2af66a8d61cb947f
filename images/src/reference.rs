//! Image references, normalised like Docker: `busybox` is `docker.io/library/busybox:latest`,
//! a first component with a dot, a colon or `localhost` is a registry host, and a reference
//! may carry a tag, a digest, or both (the digest wins when pulling).

use std::fmt;

use crate::error::{ImageError, Result};

/// The registry Docker Hub references resolve to.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:...`) when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `input`.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => {
                validate_digest(d).map_err(|r| bad(&r))?;
                (n, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/' (a ':' before is a port).
        let last_slash = name_tag.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&name_tag[..at], Some(name_tag[at + 1..].to_string()))
            }
            None => (name_tag, None),
        };
        if let Some(t) = &tag {
            let ok = !t.is_empty()
                && t.len() <= 128
                && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !t.starts_with(['.', '-']);
            if !ok {
                return Err(bad("invalid tag"));
            }
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry =
            if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if repository.is_empty()
            || repository.split('/').any(|c| {
                c.is_empty()
                    || !c.chars().all(|ch| {
                        ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch)
                    })
            })
        {
            return Err(bad("repository must be lowercase letters, digits and . _ - / separators"));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { registry, repository, tag, digest })
    }

    /// What to ask the registry for: the digest when pinned, otherwise the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks `sha256:<64 hex>` (the only algorithm the store accepts).
pub fn validate_digest(d: &str) -> std::result::Result<(), String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) =>
        {
            Ok(())
        }
        _ => Err(format!("unsupported digest {d:?} (expected sha256:<64 lowercase hex>)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_style_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("user/app:1.0"), "docker.io/user/app:1.0");
        assert_eq!(norm("index.docker.io/library/alpine"), "docker.io/library/alpine:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("127.0.0.1:5000/a/b:v2"), "127.0.0.1:5000/a/b:v2");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(norm(&format!("quay.io/x/y@{d}")), format!("quay.io/x/y@{d}"));
        let r = Reference::parse(&format!("reg:5000/x:t@{d}")).unwrap();
        assert_eq!(r.manifest_reference(), d);
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn invalid_references_are_rejected() {
        for bad in ["", "UPPER/case", "a//b", "x:", "x@sha256:abc", "x@md5:00", "x:-bad"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
