//! The kernel: its release, and whether a feature the node needs (overlayfs, nf_tables, veth,
//! bridge, vxlan, …) is built in, loaded, or loadable as a module.
//!
//! Evidence, strongest first: the module is present in `/sys/module`; the kernel's own config
//! (`/proc/config.gz`, else `/boot/config-RELEASE`) says `=y` or `=m`; the module lists in
//! `/lib/modules/RELEASE` (`modules.builtin`, `modules.dep`). Nothing here loads a module or
//! touches the network stack, so the check is safe to run on a production node.

use std::collections::HashMap;

use super::host::Host;

/// The oldest kernel the agent supports (Debian 10 / Raspberry Pi OS buster shipped 4.19).
pub const MIN_KERNEL: (u32, u32) = (4, 19);

/// `uname -r` split into numbers: "6.1.0-rpi7-rpi-v8" is (6, 1, 0).
pub fn parse_release(release: &str) -> Option<(u32, u32, u32)> {
    let mut parts =
        release.trim().split(|c: char| !c.is_ascii_digit()).take(3).map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The running kernel's release string (`/proc/sys/kernel/osrelease`).
pub fn release(host: &Host) -> Option<String> {
    host.read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string())
}

/// A kernel config: `CONFIG_X` → `y` / `m`, and the file it came from.
#[derive(Debug, Default)]
pub struct KernelConfig {
    /// Where it was read from (`/proc/config.gz`, `/boot/config-…`).
    pub source: String,
    options: HashMap<String, char>,
}

impl KernelConfig {
    /// The running kernel's config, if the kernel exposes it or /boot has it.
    pub fn load(host: &Host, release: Option<&str>) -> Option<Self> {
        if let Some(text) = host.read_gz("/proc/config.gz") {
            return Some(Self::parse("/proc/config.gz", &text));
        }
        let path = format!("/boot/config-{}", release?);
        host.read(&path).map(|text| Self::parse(&path, &text))
    }

    /// Parses `CONFIG_X=y` / `CONFIG_X=m` lines; everything else means "not set".
    pub fn parse(source: &str, text: &str) -> Self {
        let options = text
            .lines()
            .filter_map(|line| line.split_once('='))
            .filter_map(|(key, value)| match value.trim() {
                "y" => Some((key.trim().to_string(), 'y')),
                "m" => Some((key.trim().to_string(), 'm')),
                _ => None,
            })
            .collect();
        Self { source: source.to_string(), options }
    }

    /// `Some('y')`, `Some('m')` or `None` (not set).
    pub fn get(&self, option: &str) -> Option<char> {
        self.options.get(option).copied()
    }
}

/// The module lists of `/lib/modules/RELEASE`: module names (dashes as underscores).
#[derive(Debug, Default)]
pub struct ModuleLists {
    builtin: Option<Vec<String>>,
    installed: Option<Vec<String>>,
}

impl ModuleLists {
    /// Reads `modules.builtin` and `modules.dep` for `release`; either may be absent.
    pub fn load(host: &Host, release: Option<&str>) -> Self {
        let Some(release) = release else { return Self::default() };
        let read = |name: &str| {
            host.read(&format!("/lib/modules/{release}/{name}")).map(|t| module_names(&t))
        };
        Self { builtin: read("modules.builtin"), installed: read("modules.dep") }
    }
}

/// Module names from `modules.builtin` / `modules.dep` lines such as
/// `kernel/drivers/net/veth.ko.xz: kernel/…` → `veth`.
fn module_names(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.split(':').next())
        .filter_map(|path| path.trim().rsplit('/').next())
        .filter_map(|file| file.split(".ko").next())
        .filter(|name| !name.is_empty())
        .map(|name| name.replace('-', "_"))
        .collect()
}

/// A kernel feature the node needs, by module name and config option.
#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// Check name shown to users.
    pub name: &'static str,
    /// The module's name (also its `/sys/module` directory when loaded or built in with params).
    pub module: &'static str,
    /// The Kconfig option.
    pub config: &'static str,
    /// Whether the node cannot work without it.
    pub required: bool,
    /// What uses it, for the report.
    pub used_for: &'static str,
}

/// The features the agent's runtime, pod network and service proxy use.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: "overlayfs",
        module: "overlay",
        config: "CONFIG_OVERLAY_FS",
        required: true,
        used_for: "container root file systems",
    },
    Feature {
        name: "nf_tables",
        module: "nf_tables",
        config: "CONFIG_NF_TABLES",
        required: true,
        used_for: "service proxy",
    },
    Feature {
        name: "nft_nat",
        module: "nft_nat",
        config: "CONFIG_NFT_NAT",
        required: true,
        used_for: "service DNAT and masquerade",
    },
    Feature {
        name: "nft_ct",
        module: "nft_ct",
        config: "CONFIG_NFT_CT",
        required: true,
        used_for: "conntrack matches in service rules",
    },
    Feature {
        name: "veth",
        module: "veth",
        config: "CONFIG_VETH",
        required: true,
        used_for: "pod network interfaces",
    },
    Feature {
        name: "bridge",
        module: "bridge",
        config: "CONFIG_BRIDGE",
        required: true,
        used_for: "the node's pod bridge",
    },
    Feature {
        name: "vxlan",
        module: "vxlan",
        config: "CONFIG_VXLAN",
        required: false,
        used_for: "multi-node VXLAN pod network (host-gw works without)",
    },
    Feature {
        name: "br_netfilter",
        module: "br_netfilter",
        config: "CONFIG_BRIDGE_NETFILTER",
        required: false,
        used_for: "service rules for traffic between pods on one bridge",
    },
];

/// What the evidence says about a feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Compiled into the kernel.
    BuiltIn(String),
    /// A module that is loaded now.
    Loaded,
    /// A module the kernel will load on first use.
    Loadable(String),
    /// Positively absent, with the evidence.
    Missing(String),
    /// No config and no module lists to tell.
    Unknown,
}

/// Everything known about the kernel's features, gathered once.
#[derive(Debug)]
pub struct KernelFeatures<'h> {
    host: &'h Host,
    config: Option<KernelConfig>,
    modules: ModuleLists,
    filesystems: Option<String>,
}

impl<'h> KernelFeatures<'h> {
    /// Reads the config, module lists and `/proc/filesystems` of the running kernel.
    pub fn load(host: &'h Host, release: Option<&str>) -> Self {
        Self {
            host,
            config: KernelConfig::load(host, release),
            modules: ModuleLists::load(host, release),
            filesystems: host.read("/proc/filesystems"),
        }
    }

    /// Where the config came from, if any.
    pub fn config_source(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.source.as_str())
    }

    /// Whether a file system type is registered now (`/proc/filesystems`).
    pub fn filesystem_registered(&self, fs: &str) -> bool {
        self.filesystems
            .as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
    }

    /// The availability of one feature, from the strongest evidence there is.
    pub fn availability(&self, feature: &Feature) -> Availability {
        if feature.module == "overlay" && self.filesystem_registered("overlay") {
            return Availability::BuiltIn("registered in /proc/filesystems".into());
        }
        if self.host.exists(&format!("/sys/module/{}/initstate", feature.module)) {
            return Availability::Loaded;
        }
        let listed = |list: &Option<Vec<String>>| {
            list.as_ref().map(|names| names.iter().any(|n| n == feature.module))
        };
        if let Some(config) = &self.config {
            return match config.get(feature.config) {
                Some('y') => {
                    Availability::BuiltIn(format!("{}=y in {}", feature.config, config.source))
                }
                Some(_) if listed(&self.modules.installed) == Some(false) => Availability::Missing(
                    format!("{}=m but {}.ko is not installed", feature.config, feature.module),
                ),
                Some(_) => {
                    Availability::Loadable(format!("{}=m in {}", feature.config, config.source))
                }
                None => Availability::Missing(format!(
                    "{} is not set in {}",
                    feature.config, config.source
                )),
            };
        }
        if self.host.exists(&format!("/sys/module/{}", feature.module)) {
            return Availability::BuiltIn(format!("/sys/module/{}", feature.module));
        }
        match (listed(&self.modules.builtin), listed(&self.modules.installed)) {
            (Some(true), _) => Availability::BuiltIn("listed in modules.builtin".into()),
            (_, Some(true)) => Availability::Loadable("listed in modules.dep".into()),
            (Some(false), Some(false)) => {
                Availability::Missing("neither built in nor installed as a module".into())
            }
            _ => Availability::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_numbers_ignore_distribution_suffixes() {
        assert_eq!(parse_release("6.1.0-rpi7-rpi-v8"), Some((6, 1, 0)));
        assert_eq!(parse_release("5.10.103-v7l+\n"), Some((5, 10, 103)));
        assert_eq!(parse_release("6.8"), Some((6, 8, 0)));
        assert_eq!(parse_release("garbage"), None);
    }

    #[test]
    fn module_names_come_from_paths_with_any_compression() {
        let text = "kernel/drivers/net/veth.ko.xz: kernel/net/core/x.ko\nkernel/net/bridge/br-netfilter.ko:\n";
        assert_eq!(module_names(text), vec!["veth", "br_netfilter"]);
    }

    #[test]
    fn config_keeps_only_set_options() {
        let config = KernelConfig::parse(
            "t",
            "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n",
        );
        assert_eq!(config.get("CONFIG_A"), Some('y'));
        assert_eq!(config.get("CONFIG_B"), Some('m'));
        assert_eq!(config.get("CONFIG_C"), None);
        assert_eq!(config.get("CONFIG_D"), None);
    }
}
