//! Clock sanity: boards without a real-time clock (most Raspberry Pis) boot in 1970 or at the
//! last saved time until NTP answers. With such a clock, certificates look "not yet valid" and
//! leases expire at once, so a clock earlier than the binary's build year is a failed check.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Seconds since the epoch when this binary was built (`build.rs`, honours `SOURCE_DATE_EPOCH`).
pub const BUILD_EPOCH: &str = env!("SKERRY_BUILD_EPOCH");

/// The clock reading and the year it must at least show.
#[derive(Debug, Clone, Serialize)]
pub struct ClockInfo {
    /// Seconds since the epoch (negative if the clock is before 1970).
    pub now_unix: i64,
    /// The calendar year of `now_unix` (UTC).
    pub year: i64,
    /// The year this binary was built in: the earliest the clock may show.
    pub build_year: i64,
    /// Whether `year >= build_year`.
    pub sane: bool,
}

/// The year of a Unix time, UTC (proleptic Gregorian; days-to-civil after H. Hinnant).
pub fn year_of(unix: i64) -> i64 {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    yoe + era * 400 + i64::from(month <= 2)
}

/// Seconds since the epoch of `t`, negative before 1970.
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Compares `now` with the build year.
pub fn inspect(now: SystemTime) -> ClockInfo {
    let now_unix = unix_seconds(now);
    let build_year = year_of(BUILD_EPOCH.parse().unwrap_or(0));
    let year = year_of(now_unix);
    ClockInfo { now_unix, year, build_year, sane: year >= build_year }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn years_of_known_instants() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(951_782_400), 2000); // 2000-02-29
        assert_eq!(year_of(1_735_689_599), 2024); // 2024-12-31T23:59:59
        assert_eq!(year_of(1_735_689_600), 2025);
        assert_eq!(year_of(-1), 1969);
    }

    #[test]
    fn a_board_booting_in_1970_is_flagged() {
        let info = inspect(UNIX_EPOCH + Duration::from_secs(42));
        assert_eq!(info.year, 1970);
        assert!(!info.sane);
        assert!(inspect(SystemTime::now()).sane);
    }
}
