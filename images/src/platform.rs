//! Platforms (`linux/arm/v7`) and how a node picks its entry from a multi-platform index:
//! an exact match first, then the compatible fallbacks (an arm/v7 board runs arm/v6 and arm/v5,
//! arm64 is arm64/v8, amd64 runs amd64/v1).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{ImageError, Result};

/// An OS/architecture/variant triple as in OCI image indexes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// GOARCH-style architecture, e.g. `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v7` for 32-bit ARM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running binary.
    pub fn host() -> Self {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some(if cfg!(target_feature = "v7") { "v7" } else { "v6" })),
            "x86" => ("386", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform::new("linux", arch, variant)
    }

    /// A normalised platform.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let (architecture, variant) = normalise_arch(architecture, variant);
        Platform { os: os.to_ascii_lowercase(), architecture, variant }
    }

    /// Parses `os/arch[/variant]` (e.g. `linux/arm/v7`) or `arch[/variant]` meaning Linux.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ImageError::Config {
            source_name: "platform".into(),
            detail: format!("{s:?} is not os/arch[/variant]"),
        };
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] => Ok(Platform::new("linux", arch, None)),
            [os, arch] if *os == "linux" || *os == "windows" => Ok(Platform::new(os, arch, None)),
            [arch, variant] => Ok(Platform::new("linux", arch, Some(variant))),
            [os, arch, variant] => Ok(Platform::new(os, arch, Some(variant))),
            _ => Err(bad()),
        }
    }

    /// How well an index entry for `candidate` suits a node of this platform: `None` when it
    /// cannot run, otherwise a rank where 0 is an exact match and larger is a worse fallback.
    pub fn match_rank(&self, candidate: &Platform) -> Option<u32> {
        let c = Platform::new(&candidate.os, &candidate.architecture, candidate.variant.as_deref());
        if c.os != self.os || c.architecture != self.architecture {
            return None;
        }
        if c.variant == self.variant {
            return Some(0);
        }
        match self.architecture.as_str() {
            "arm" => {
                let mine = arm_level(self.variant.as_deref())?;
                let theirs = arm_level(c.variant.as_deref())?;
                (theirs <= mine).then(|| mine - theirs)
            }
            // Variants of other architectures are optional hints; an unset one runs anywhere.
            _ if c.variant.is_none() => Some(1),
            _ => None,
        }
    }
}

fn arm_level(variant: Option<&str>) -> Option<u32> {
    match variant.unwrap_or("v7") {
        "v5" => Some(5),
        "v6" => Some(6),
        "v7" => Some(7),
        "v8" => Some(8),
        _ => None,
    }
}

fn normalise_arch(arch: &str, variant: Option<&str>) -> (String, Option<String>) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.map(str::to_ascii_lowercase).filter(|v| !v.is_empty());
    let (a, v) = match (arch.as_str(), variant.as_deref()) {
        ("x86_64" | "x86-64" | "amd64", None | Some("v1")) => ("amd64", None),
        ("x86_64" | "x86-64", v) => ("amd64", v),
        ("aarch64" | "arm64", None | Some("v8" | "8")) => ("arm64", Some("v8")),
        ("aarch64", v) => ("arm64", v),
        ("armhf", _) => ("arm", Some("v7")),
        ("armel", _) => ("arm", Some("v6")),
        ("arm", None) => ("arm", Some("v7")),
        ("arm", Some(v)) if !v.starts_with('v') => ("arm", Some(v)),
        (a, v) => (a, v),
    };
    let v = v.map(|v| if a == "arm" && !v.starts_with('v') { format!("v{v}") } else { v.into() });
    (a.to_string(), v)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn arm_variants_fall_back_downwards() {
        let v7 = p("linux/arm/v7");
        assert_eq!(v7.match_rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(v7.match_rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(v7.match_rank(&p("linux/arm64")), None);
        assert_eq!(p("linux/arm/v6").match_rank(&p("linux/arm/v7")), None);
        // An arm entry without a variant means v7.
        assert_eq!(v7.match_rank(&Platform { variant: None, ..p("linux/arm") }), Some(0));
    }

    #[test]
    fn arm64_is_arm64_v8_and_amd64_is_exact() {
        let a64 = p("linux/arm64");
        assert_eq!(a64.match_rank(&p("linux/arm64/v8")), Some(0));
        assert_eq!(a64.match_rank(&p("linux/aarch64")), Some(0));
        assert_eq!(a64.match_rank(&p("linux/amd64")), None);
        assert_eq!(p("linux/amd64").match_rank(&p("linux/x86_64")), Some(0));
        assert_eq!(p("linux/amd64").match_rank(&p("windows/amd64")), None);
        assert_eq!(p("arm/v7").to_string(), "linux/arm/v7");
    }

    #[test]
    fn bad_platforms_are_errors() {
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }
}
