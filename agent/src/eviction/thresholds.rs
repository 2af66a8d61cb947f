//! Hard eviction thresholds as the kubelet's `--eviction-hard` takes them
//! (`memory.available<100Mi,nodefs.available<10%`): the signals, their parsing, the quantity a
//! threshold stands for on a node of a given size, and the formatting of quantities the way
//! apimachinery prints them (`100Mi`, `51200Ki`, `12k`), which eviction messages quote.
//!
//! As in the kubelet, a given `--eviction-hard` replaces the defaults as a whole: signals it
//! does not name have no threshold.

use std::fmt;
use std::time::Duration;

use crate::env::quantity::Quantity;

/// An eviction signal: something the node runs out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// Memory capacity minus the root cgroup's working set.
    MemoryAvailable,
    /// Free bytes of the file system holding the agent's data dir.
    NodeFsAvailable,
    /// Free inodes of that file system.
    NodeFsInodesFree,
    /// Free bytes of the file system holding the image store.
    ImageFsAvailable,
    /// Free inodes of that file system.
    ImageFsInodesFree,
    /// Process IDs left (min of `pid_max` and `threads-max`, minus tasks running).
    PidAvailable,
}

/// The node condition a signal drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    MemoryPressure,
    DiskPressure,
    PidPressure,
}

/// What evicting a pod reclaims, as the kubelet names it in its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memory,
    EphemeralStorage,
    Inodes,
    Pids,
}

impl Resource {
    /// The name in messages (`The node was low on resource: memory.`).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Memory => "memory",
            Resource::EphemeralStorage => "ephemeral-storage",
            Resource::Inodes => "inodes",
            Resource::Pids => "pids",
        }
    }

    /// Bytes print in binary units (`Mi`), counts in decimal ones (`k`).
    pub fn is_bytes(self) -> bool {
        matches!(self, Resource::Memory | Resource::EphemeralStorage)
    }
}

const SIGNALS: [(Signal, &str); 6] = [
    (Signal::MemoryAvailable, "memory.available"),
    (Signal::NodeFsAvailable, "nodefs.available"),
    (Signal::NodeFsInodesFree, "nodefs.inodesFree"),
    (Signal::ImageFsAvailable, "imagefs.available"),
    (Signal::ImageFsInodesFree, "imagefs.inodesFree"),
    (Signal::PidAvailable, "pid.available"),
];

impl Signal {
    /// The kubelet's name of the signal.
    pub fn name(self) -> &'static str {
        SIGNALS.iter().find(|(s, _)| *s == self).map_or("", |(_, n)| n)
    }

    /// The signal of a kubelet name (`memory.available`).
    pub fn parse(name: &str) -> Option<Signal> {
        SIGNALS.iter().find(|(_, n)| *n == name).map(|(s, _)| *s)
    }

    /// The condition that is True while a threshold of this signal is crossed.
    pub fn condition(self) -> Condition {
        match self {
            Signal::MemoryAvailable => Condition::MemoryPressure,
            Signal::PidAvailable => Condition::PidPressure,
            _ => Condition::DiskPressure,
        }
    }

    /// What evicting a pod for this signal reclaims.
    pub fn resource(self) -> Resource {
        match self {
            Signal::MemoryAvailable => Resource::Memory,
            Signal::NodeFsAvailable | Signal::ImageFsAvailable => Resource::EphemeralStorage,
            Signal::NodeFsInodesFree | Signal::ImageFsInodesFree => Resource::Inodes,
            Signal::PidAvailable => Resource::Pids,
        }
    }

    /// Which crossed threshold is acted on first: memory, then disk space, then inodes, then
    /// PIDs (the kubelet's eviction priority puts memory first).
    pub fn priority(self) -> u8 {
        match self.resource() {
            Resource::Memory => 0,
            Resource::EphemeralStorage => 1,
            Resource::Inodes => 2,
            Resource::Pids => 3,
        }
    }
}

/// The value of a threshold: an absolute quantity or a share of capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// Base units (bytes, inodes, PIDs); `binary`: written with a binary suffix (`Mi`), which
    /// is how it prints back.
    Quantity { value: i64, binary: bool },
    /// A fraction of capacity (`10%` → 0.1).
    Percentage(f64),
}

/// One hard eviction threshold: `signal < value`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub signal: Signal,
    pub value: Value,
}

impl Threshold {
    /// The amount this threshold stands for on a node with `capacity` of the signal's resource.
    pub fn quantity(&self, capacity: i64) -> i64 {
        match self.value {
            Value::Quantity { value, .. } => value,
            Value::Percentage(p) => (capacity as f64 * p) as i64,
        }
    }

    /// The threshold quantity as the kubelet prints it (percentages become bytes/counts).
    pub fn quantity_text(&self, capacity: i64) -> String {
        match self.value {
            Value::Quantity { value, binary } => format_quantity(value, binary),
            Value::Percentage(_) => format_quantity(self.quantity(capacity), true),
        }
    }

    /// Whether `available` of `capacity` has crossed the threshold.
    pub fn is_met(&self, available: i64, capacity: i64) -> bool {
        self.quantity(capacity) > available
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.value {
            Value::Quantity { value, binary } => {
                write!(f, "{}<{}", self.signal.name(), format_quantity(value, binary))
            }
            Value::Percentage(p) => write!(f, "{}<{}%", self.signal.name(), p * 100.0),
        }
    }
}

/// The crossed thresholds in the order they are acted on (memory first).
pub fn by_eviction_priority(met: &mut [Threshold]) {
    met.sort_by_key(|t| t.signal.priority());
}

/// The kubelet's default hard thresholds on Linux, plus `pid.available<10%` so PIDPressure
/// means something without configuration (the kubelet sets no PID threshold by default).
pub fn defaults() -> Vec<Threshold> {
    let pct = |signal, p| Threshold { signal, value: Value::Percentage(p) };
    vec![
        Threshold {
            signal: Signal::MemoryAvailable,
            value: Value::Quantity { value: 100 << 20, binary: true },
        },
        pct(Signal::NodeFsAvailable, 0.10),
        pct(Signal::NodeFsInodesFree, 0.05),
        pct(Signal::ImageFsAvailable, 0.15),
        pct(Signal::ImageFsInodesFree, 0.05),
        pct(Signal::PidAvailable, 0.10),
    ]
}

/// Parses `--eviction-hard`: comma-separated `SIGNAL<QUANTITY` or `SIGNAL<PERCENT%`. An empty
/// string sets no thresholds. `0%` and `100%` are ignored, as the kubelet does.
pub fn parse_hard(text: &str) -> Result<Vec<Threshold>, String> {
    let mut out: Vec<Threshold> = Vec::new();
    for statement in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = statement.split_once('<').ok_or_else(|| {
            format!("{statement:?}: expected SIGNAL<QUANTITY (only < is allowed)")
        })?;
        let signal = Signal::parse(name.trim())
            .ok_or_else(|| format!("{statement:?}: unsupported eviction signal {name:?}"))?;
        if out.iter().any(|t| t.signal == signal) {
            return Err(format!("found duplicate eviction threshold for signal {name}"));
        }
        let value = value.trim();
        let value = if let Some(number) = value.strip_suffix('%') {
            let p: f64 = number
                .parse()
                .map_err(|_| format!("{statement:?}: {value:?} is not a percentage"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("eviction percentage threshold {name} must be in [0%, 100%]"));
            }
            if p == 0.0 || p == 100.0 {
                continue;
            }
            Value::Percentage(p / 100.0)
        } else {
            let q = Quantity::parse(value)
                .map_err(|e| format!("{statement:?}: {value:?} is not a quantity: {e}"))?;
            let bytes = q.value();
            if bytes < 0 {
                return Err(format!("eviction threshold {name} must be positive: {value}"));
            }
            Value::Quantity { value: bytes, binary: value.ends_with('i') }
        };
        out.push(Threshold { signal, value });
    }
    Ok(out)
}

/// Parses a Go-style duration (`5m`, `30s`, `1m30s`, `500ms`, `0`), as the kubelet's
/// `--eviction-pressure-transition-period` takes.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?}: expected a duration like 5m, 30s or 1m30s");
    let mut rest = text;
    let mut total = Duration::ZERO;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
    }
    Ok(total)
}

/// A quantity in apimachinery's canonical form: binary (`Ki`…`Ei`) when exact and ≥ 1024,
/// otherwise decimal (`k`…`E` when exact, else the plain number).
pub fn format_quantity(value: i64, binary: bool) -> String {
    if binary && value.unsigned_abs() >= 1024 {
        let mut n = value;
        let mut unit = 0;
        while unit < 6 && n % 1024 == 0 {
            n /= 1024;
            unit += 1;
        }
        return format!("{n}{}", ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][unit]);
    }
    if value == 0 {
        return "0".into();
    }
    let mut n = value;
    let mut unit = 0;
    while unit < 6 && n % 1000 == 0 {
        n /= 1000;
        unit += 1;
    }
    format!("{n}{}", ["", "k", "M", "G", "T", "P", "E"][unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_hard_parses_quantities_and_percentages() {
        let t =
            parse_hard("memory.available<100Mi, nodefs.available<10%,pid.available<1k").unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].signal, Signal::MemoryAvailable);
        assert_eq!(t[0].quantity(1 << 30), 100 << 20);
        assert_eq!(t[0].quantity_text(0), "100Mi");
        assert_eq!(t[1].quantity(1000), 100);
        assert_eq!(t[1].quantity_text(10 << 30), "1Gi");
        assert_eq!(t[2].quantity(0), 1000);
        assert_eq!(t[2].quantity_text(0), "1k");
        assert_eq!(t[0].to_string(), "memory.available<100Mi");
        // 0% and 100% mean "no threshold"; the empty flag means none at all.
        assert!(parse_hard("nodefs.available<0%").unwrap().is_empty());
        assert!(parse_hard("").unwrap().is_empty());
    }

    #[test]
    fn eviction_hard_rejects_what_the_kubelet_rejects() {
        for bad in [
            "memory.available>100Mi",
            "memory.free<100Mi",
            "memory.available<lots",
            "memory.available<-1",
            "nodefs.available<150%",
            "memory.available<1Gi,memory.available<2Gi",
        ] {
            assert!(parse_hard(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn a_threshold_is_met_when_less_is_available() {
        let t = parse_hard("memory.available<100Mi").unwrap()[0];
        assert!(t.is_met((100 << 20) - 1, 1 << 30));
        assert!(!t.is_met(100 << 20, 1 << 30));
        let defaults = defaults();
        assert!(defaults.iter().any(|t| t.to_string() == "imagefs.available<15%"));
        assert_eq!(defaults.len(), 6);
    }

    #[test]
    fn memory_is_acted_on_before_disk_and_pids() {
        let mut met = parse_hard(
            "pid.available<10%,nodefs.inodesFree<5%,nodefs.available<1Gi,memory.available<1Gi",
        )
        .unwrap();
        by_eviction_priority(&mut met);
        let order: Vec<Signal> = met.iter().map(|t| t.signal).collect();
        assert_eq!(
            order,
            [
                Signal::MemoryAvailable,
                Signal::NodeFsAvailable,
                Signal::NodeFsInodesFree,
                Signal::PidAvailable
            ]
        );
    }

    #[test]
    fn quantities_print_like_apimachinery() {
        assert_eq!(format_quantity(100 << 20, true), "100Mi");
        assert_eq!(format_quantity(52_428_800 + 4096, true), "51204Ki");
        assert_eq!(format_quantity(1536 * 1024 + 1, true), "1572865");
        assert_eq!(format_quantity(0, true), "0");
        assert_eq!(format_quantity(1000, true), "1k");
        assert_eq!(format_quantity(12_000, false), "12k");
        assert_eq!(format_quantity(1234, false), "1234");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5d").is_err());
    }
}
