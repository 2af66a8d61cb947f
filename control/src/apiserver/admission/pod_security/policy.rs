//! The policy a namespace asks for through its `pod-security.kubernetes.io/<mode>` and
//! `<mode>-version` labels: a level (privileged, baseline, restricted) and a Pod Security
//! Standards version (`latest` or `v1.N`) for each of the enforce, audit and warn modes.
//!
//! Parsing follows the reference (`k8s.io/pod-security-admission/api`): without labels every
//! mode is `privileged:latest`; a bad enforce level fails closed (restricted), a bad audit or
//! warn level fails open (privileged), a bad version reads as `latest`; and when only the
//! enforce level is set and it is stricter than warn, warn follows it, so a rejected pod's
//! controllers are warned about at the same level.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

/// The label prefix of every Pod Security Admission label.
const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    fn parse(text: &str) -> Option<Level> {
        match text {
            "privileged" => Some(Level::Privileged),
            "baseline" => Some(Level::Baseline),
            "restricted" => Some(Level::Restricted),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// A Pod Security Standards version: the checks as they were in Kubernetes `v1.N`, or the
/// newest ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Minor(u32),
    Latest,
}

impl Version {
    fn parse(text: &str) -> Option<Version> {
        if text == "latest" {
            return Some(Version::Latest);
        }
        let minor = text.strip_prefix("v1.")?;
        // `^v1\.([0-9]|[1-9][0-9]*)$`: digits only, no leading zero.
        let digits_only = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
        if !digits_only || (minor.len() > 1 && minor.starts_with('0')) {
            return None;
        }
        minor.parse().ok().map(Version::Minor)
    }

    /// The minor version the checks are chosen by; `latest` is newer than any.
    pub fn minor(self) -> u32 {
        match self {
            Version::Minor(minor) => minor,
            Version::Latest => u32::MAX,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::Minor(minor) => write!(f, "v1.{minor}"),
            Version::Latest => f.write_str("latest"),
        }
    }
}

/// A level at a version, shown as `restricted:latest` in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: Version,
}

impl fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

const PRIVILEGED_LATEST: LevelVersion =
    LevelVersion { level: Level::Privileged, version: Version::Latest };

/// What a namespace enforces, audits and warns about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub enforce: LevelVersion,
    pub audit: LevelVersion,
    pub warn: LevelVersion,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { enforce: PRIVILEGED_LATEST, audit: PRIVILEGED_LATEST, warn: PRIVILEGED_LATEST }
    }
}

impl Policy {
    /// Whether nothing is checked in any mode.
    pub fn fully_privileged(&self) -> bool {
        [self.enforce, self.audit, self.warn].iter().all(|lv| lv.level == Level::Privileged)
    }
}

/// A label with a value the policy cannot use: the label key, its value and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelError {
    pub label: String,
    pub value: String,
    pub detail: &'static str,
}

const LEVEL_DETAIL: &str = "must be one of privileged, baseline, restricted";
const VERSION_DETAIL: &str = "must be \"latest\" or \"v1.x\"";

/// The policy of a namespace with `labels` (its `metadata.labels`, any shape), and the labels
/// that could not be read (in enforce, audit, warn order).
pub fn from_labels(labels: Option<&Value>) -> (Policy, Vec<LabelError>) {
    let labels: BTreeMap<&str, &str> = labels
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter(|(k, _)| k.starts_with(LABEL_PREFIX))
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let mut policy = Policy::default();
    let mut errors = Vec::new();
    let mut error = |label: String, value: &str, detail| {
        errors.push(LabelError { label, value: value.to_string(), detail });
    };
    let mut has_enforce_level = false;
    let mut has_warn_level = false;
    let mut has_warn_version = false;
    for (mode, target) in
        [("enforce", &mut policy.enforce), ("audit", &mut policy.audit), ("warn", &mut policy.warn)]
    {
        let level_label = format!("{LABEL_PREFIX}{mode}");
        if let Some(value) = labels.get(level_label.as_str()) {
            match Level::parse(value) {
                Some(level) => {
                    target.level = level;
                    has_enforce_level |= mode == "enforce";
                }
                None => {
                    // Enforce fails closed; audit and warn fail open.
                    target.level =
                        if mode == "enforce" { Level::Restricted } else { Level::Privileged };
                    error(level_label, value, LEVEL_DETAIL);
                }
            }
            has_warn_level |= mode == "warn";
        }
        let version_label = format!("{LABEL_PREFIX}{mode}-version");
        if let Some(value) = labels.get(version_label.as_str()) {
            target.version = Version::parse(value).unwrap_or(Version::Latest);
            if Version::parse(value).is_none() {
                error(version_label, value, VERSION_DETAIL);
            }
            has_warn_version |= mode == "warn";
        }
    }
    if !has_warn_level && has_enforce_level && policy.enforce.level > policy.warn.level {
        policy.warn.level = policy.enforce.level;
        if !has_warn_version {
            policy.warn.version = policy.enforce.version;
        }
    }
    (policy, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn no_labels_is_privileged_everywhere() {
        let (policy, errors) = from_labels(None);
        assert!(policy.fully_privileged());
        assert!(errors.is_empty());
        assert_eq!(policy.enforce.to_string(), "privileged:latest");
    }

    #[test]
    fn enforce_with_version_and_warn_following_it() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline",
                            "pod-security.kubernetes.io/enforce-version": "v1.29"});
        let (policy, errors) = from_labels(Some(&labels));
        assert!(errors.is_empty());
        assert_eq!(policy.enforce.to_string(), "baseline:v1.29");
        // Warn is raised to the enforce level and version when not set itself.
        assert_eq!(policy.warn.to_string(), "baseline:v1.29");
        assert_eq!(policy.audit.to_string(), "privileged:latest");
    }

    #[test]
    fn explicit_warn_is_kept() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "restricted",
                            "pod-security.kubernetes.io/warn": "baseline"});
        let (policy, _) = from_labels(Some(&labels));
        assert_eq!(policy.warn.level, Level::Baseline);
    }

    #[test]
    fn bad_values_fail_closed_for_enforce_and_open_for_warn() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "strict",
                            "pod-security.kubernetes.io/warn": "loud",
                            "pod-security.kubernetes.io/audit-version": "v1.01"});
        let (policy, errors) = from_labels(Some(&labels));
        assert_eq!(policy.enforce.level, Level::Restricted);
        assert_eq!(policy.warn.level, Level::Privileged);
        assert_eq!(policy.audit.version, Version::Latest);
        let labels: Vec<&str> = errors.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "pod-security.kubernetes.io/enforce",
                "pod-security.kubernetes.io/audit-version",
                "pod-security.kubernetes.io/warn"
            ]
        );
        assert_eq!(errors[0].detail, "must be one of privileged, baseline, restricted");
    }

    #[test]
    fn versions_parse_like_the_reference() {
        assert_eq!(Version::parse("v1.0"), Some(Version::Minor(0)));
        assert_eq!(Version::parse("v1.33"), Some(Version::Minor(33)));
        assert_eq!(Version::parse("v1.033"), None);
        assert_eq!(Version::parse("v2.1"), None);
        assert_eq!(Version::parse("v1."), None);
    }
}
