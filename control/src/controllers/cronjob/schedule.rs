//! Cron schedules as the reference parses them (`robfig/cron` v3's `ParseStandard`): five fields
//! (minute, hour, day of month, month, day of week) with `*`/`?`, lists, ranges, steps and
//! month/weekday names; the descriptors `@yearly`/`@annually`/`@monthly`/`@weekly`/`@daily`/
//! `@midnight`/`@hourly` and `@every <duration>`; and a `TZ=`/`CRON_TZ=` prefix naming the zone
//! the fields are read in. [`Schedule::next`] is the first activation strictly after an instant,
//! evaluated on the wall clock of the schedule's zone (so `0 9 * * *` stays at 09:00 across DST).

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// Set in a field's bits when it was written `*` or `?`: day-of-month and day-of-week then
/// combine with AND instead of OR (the reference's `starBit`).
const STAR: u64 = 1 << 63;

/// How far ahead [`Schedule::next`] looks before deciding a schedule never fires (the
/// reference gives up after five years, e.g. for `0 0 30 2 *`).
const YEARS_AHEAD: i16 = 5;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    /// The zone from a `TZ=`/`CRON_TZ=` prefix; `None` reads the fields in the caller's zone.
    zone: Option<TimeZone>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fields(Fields),
    /// `@every <duration>`: a fixed period from the previous activation.
    Every(Duration),
}

/// One bit per allowed value of each field (plus [`STAR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

/// A field's name, range and value names.
struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { name: "hour", min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
/// Day of week 0–6 from Sunday; 7 is accepted as Sunday too (the API server's validation lets it
/// through, so refusing it here would leave a CronJob that never runs).
const DOW: Bounds = Bounds {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses a schedule in the reference's standard syntax.
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut zone = None;
        let mut rest = spec;
        if let Some(tail) = spec.strip_prefix("TZ=").or_else(|| spec.strip_prefix("CRON_TZ=")) {
            let (name, fields) = tail.split_once(char::is_whitespace).unwrap_or((tail, ""));
            let tz =
                TimeZone::get(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
            zone = Some(tz);
            rest = fields.trim();
        }
        let kind = if let Some(descriptor) = rest.strip_prefix('@') {
            descriptor_kind(descriptor)?
        } else {
            Kind::Fields(parse_fields(rest)?)
        };
        Ok(Schedule { kind, zone })
    }

    /// The first activation strictly after `after`, with the fields read on the wall clock of
    /// the schedule's own zone, else `zone`. `None` if it never fires within five years.
    pub fn next(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let zone = self.zone.as_ref().unwrap_or(zone);
        match &self.kind {
            Kind::Every(period) => {
                // The reference drops the sub-second part of the previous activation.
                let whole = Timestamp::from_second(after.as_second()).ok()?;
                let period = jiff::SignedDuration::try_from(*period).ok()?;
                whole.checked_add(period).ok()
            }
            Kind::Fields(fields) => fields.next(after, zone),
        }
    }
}

fn descriptor_kind(descriptor: &str) -> Result<Kind, String> {
    let fields = match descriptor {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        other => {
            let Some(period) = other.strip_prefix("every ") else {
                return Err(format!("unrecognized descriptor: @{other}"));
            };
            let period = parse_duration(period.trim())
                .ok_or_else(|| format!("failed to parse duration @{other}"))?;
            // The reference rounds periods below a second up to one second.
            return Ok(Kind::Every(period.max(Duration::from_secs(1))));
        }
    };
    Ok(Kind::Fields(parse_fields(fields)?))
}

/// A Go duration string of whole units (`1h30m`, `90s`, `500ms`).
fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "h" => Duration::from_secs(3600),
            "m" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "us" | "µs" => Duration::from_micros(1),
            "ns" => Duration::from_nanos(1),
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(value).ok()?)?)?;
    }
    Some(total)
}

fn parse_fields(text: &str) -> Result<Fields, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!("expected exactly 5 fields, found {}: {text}", fields.len()));
    }
    let mut dow = parse_field(fields[4], &DOW)?;
    // 7 is Sunday.
    if dow & (1 << 7) != 0 {
        dow = (dow & !(1 << 7)) | 1;
    }
    Ok(Fields {
        minute: parse_field(fields[0], &MINUTE)?,
        hour: parse_field(fields[1], &HOUR)?,
        dom: parse_field(fields[2], &DOM)?,
        month: parse_field(fields[3], &MONTH)?,
        dow,
    })
}

/// The bits of one field: a comma-separated list of ranges.
fn parse_field(field: &str, bounds: &Bounds) -> Result<u64, String> {
    let mut bits = 0;
    for part in field.split(',') {
        bits |= parse_range(part, bounds)?;
    }
    Ok(bits)
}

/// `*`, `?`, `N`, `N-M`, each optionally `/step` (`N/step` runs to the field's maximum).
fn parse_range(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    let (range, step) = match expr.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (expr, None),
    };
    let (start, end, mut extra) = if range == "*" || range == "?" {
        // A day-of-week star is 0–6: 7 would only repeat Sunday.
        (bounds.min, if bounds.max == 7 { 6 } else { bounds.max }, STAR)
    } else {
        let mut ends = range.splitn(2, '-');
        let start = parse_value(ends.next().unwrap_or_default(), bounds)?;
        let end = match ends.next() {
            Some(last) => parse_value(last, bounds)?,
            None if step.is_some() => bounds.max,
            None => start,
        };
        (start, end, 0)
    };
    let step = match step {
        None => 1,
        Some(step) => {
            let step: u32 = step.parse().map_err(|_| format!("failed to parse int from {step}"))?;
            if step == 0 {
                return Err(format!("step of range should be a positive number: {expr}"));
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < bounds.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", bounds.min));
    }
    if end > bounds.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", bounds.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    let mut bits = extra;
    let mut value = start;
    while value <= end {
        bits |= 1 << value;
        value += step;
    }
    Ok(bits)
}

fn parse_value(text: &str, bounds: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = bounds.names.iter().position(|n| *n == lower) {
        let index = u32::try_from(index).unwrap_or(0);
        return Ok(index + if bounds.name == "month" { 1 } else { 0 });
    }
    text.parse().map_err(|_| format!("failed to parse int from {text}"))
}

fn has(bits: u64, value: impl Into<i64>) -> bool {
    u32::try_from(value.into()).is_ok_and(|v| v < 63 && bits & (1 << v) != 0)
}

impl Fields {
    /// The reference's `dayMatches`: if either day field is `*`, both must match; otherwise
    /// either may.
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = has(self.dom, dt.day());
        let dow = has(self.dow, dt.weekday().to_sunday_zero_offset());
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Walks the wall clock of `zone` from the minute after `after`: skipping whole months,
    /// days and hours that cannot match keeps this to a few hundred steps per year.
    fn next(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(zone.clone()).datetime();
        let minute_start = local.with().second(0).subsec_nanosecond(0).build().ok()?;
        let mut dt = minute_start.checked_add(1.minute()).ok()?;
        let limit = dt.year().saturating_add(YEARS_AHEAD);
        while dt.year() <= limit {
            if !has(self.month, dt.month()) {
                dt =
                    dt.first_of_month().date().checked_add(1.month()).ok()?.to_datetime(midnight());
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.to_datetime(midnight());
                continue;
            }
            if !has(self.hour, dt.hour()) {
                let hour = dt.with().minute(0).build().ok()?;
                dt = hour.checked_add(1.hour()).ok()?;
                continue;
            }
            if !has(self.minute, dt.minute()) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // A wall time in a DST gap resolves forward, one in a fold to its first instance.
            let at = zone.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if at > after {
                return Some(at);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn midnight() -> jiff::civil::Time {
    jiff::civil::Time::midnight()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> Option<String> {
        Schedule::parse(spec).unwrap().next(ts(after), &TimeZone::UTC).map(|t| t.to_string())
    }

    #[test]
    fn every_minute_is_strictly_after() {
        assert_eq!(
            next("* * * * *", "2024-03-01T10:00:00Z").as_deref(),
            Some("2024-03-01T10:01:00Z")
        );
        assert_eq!(
            next("*/1 * * * *", "2024-03-01T10:00:30.5Z").as_deref(),
            Some("2024-03-01T10:01:00Z")
        );
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        assert_eq!(
            next("*/15 * * * *", "2024-03-01T10:16:00Z").as_deref(),
            Some("2024-03-01T10:30:00Z")
        );
        assert_eq!(
            next("5,10 8-9 * * *", "2024-03-01T09:10:00Z").as_deref(),
            Some("2024-03-02T08:05:00Z")
        );
        assert_eq!(
            next("0 12 * jan-mar/2 *", "2024-03-31T12:00:00Z").as_deref(),
            Some("2025-01-01T12:00:00Z")
        );
        // 2024-03-01 is a Friday; the next Monday noon is 03-04.
        assert_eq!(
            next("0 12 * * MON", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-04T12:00:00Z")
        );
        // 7 and 0 are both Sunday.
        assert_eq!(
            next("0 0 * * 7", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-03T00:00:00Z")
        );
        assert_eq!(
            next("0 0 * * 5-7", "2024-03-02T00:00:00Z").as_deref(),
            Some("2024-03-03T00:00:00Z")
        );
        // `N/step` runs to the maximum.
        assert_eq!(
            next("50/5 * * * *", "2024-03-01T10:56:00Z").as_deref(),
            Some("2024-03-01T11:50:00Z")
        );
    }

    #[test]
    fn day_of_month_and_week_are_or_unless_one_is_a_star() {
        // Both restricted: the 15th OR a Monday; 2024-03-04 is a Monday.
        assert_eq!(
            next("0 0 15 * 1", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-04T00:00:00Z")
        );
        // Day of week is `*`: only the 15th.
        assert_eq!(
            next("0 0 15 * *", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-15T00:00:00Z")
        );
        // A step above 1 clears the star: the 15th OR Sun/Tue/Thu/Sat (Saturday 03-02 first).
        assert_eq!(
            next("0 0 15 * */2", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-02T00:00:00Z")
        );
        // `*/1` is still a star, so only the 15th.
        assert_eq!(
            next("0 0 15 * */1", "2024-03-01T00:00:00Z").as_deref(),
            Some("2024-03-15T00:00:00Z")
        );
    }

    #[test]
    fn descriptors() {
        let after = "2024-03-01T10:30:00Z";
        assert_eq!(next("@hourly", after).as_deref(), Some("2024-03-01T11:00:00Z"));
        assert_eq!(next("@daily", after).as_deref(), Some("2024-03-02T00:00:00Z"));
        assert_eq!(next("@midnight", after).as_deref(), Some("2024-03-02T00:00:00Z"));
        assert_eq!(next("@weekly", after).as_deref(), Some("2024-03-03T00:00:00Z"));
        assert_eq!(next("@monthly", after).as_deref(), Some("2024-04-01T00:00:00Z"));
        assert_eq!(next("@yearly", after).as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(next("@annually", after).as_deref(), Some("2025-01-01T00:00:00Z"));
        assert_eq!(
            next("@every 1h30m", "2024-03-01T10:30:00.7Z").as_deref(),
            Some("2024-03-01T12:00:00Z")
        );
    }

    #[test]
    fn impossible_dates_never_fire() {
        assert_eq!(next("0 0 30 2 *", "2024-01-01T00:00:00Z"), None);
        // Leap day: only in leap years.
        assert_eq!(
            next("0 0 29 2 *", "2024-03-01T00:00:00Z").as_deref(),
            Some("2028-02-29T00:00:00Z")
        );
    }

    #[test]
    fn zones_keep_the_wall_clock() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 CET is 08:00Z in winter, 09:00 CEST is 07:00Z in summer.
        assert_eq!(
            s.next(ts("2024-03-01T12:00:00Z"), &berlin).unwrap().to_string(),
            "2024-03-02T08:00:00Z"
        );
        assert_eq!(
            s.next(ts("2024-04-01T12:00:00Z"), &berlin).unwrap().to_string(),
            "2024-04-02T07:00:00Z"
        );
        // A TZ= prefix overrides the caller's zone.
        let prefixed = Schedule::parse("CRON_TZ=Europe/Berlin 0 9 * * *").unwrap();
        assert_eq!(
            prefixed.next(ts("2024-03-01T12:00:00Z"), &TimeZone::UTC).unwrap().to_string(),
            "2024-03-02T08:00:00Z"
        );
        // 02:30 does not exist on 2024-03-31 in Berlin: it runs at the first instant after the gap.
        let gap = Schedule::parse("30 2 31 3 *").unwrap();
        assert_eq!(
            gap.next(ts("2024-03-30T12:00:00Z"), &berlin).unwrap().to_string(),
            "2024-03-31T01:30:00Z"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let err = |s: &str| Schedule::parse(s).unwrap_err();
        assert!(err("* * * *").contains("expected exactly 5 fields"));
        assert!(err("60 * * * *").contains("above maximum"));
        assert!(err("* * 0 * *").contains("below minimum"));
        assert!(err("5-1 * * * *").contains("beyond end of range"));
        assert!(err("*/0 * * * *").contains("positive number"));
        assert!(err("x * * * *").contains("failed to parse int"));
        assert!(err("@fortnightly").contains("unrecognized descriptor"));
        assert!(err("TZ=Mars/Olympus 0 * * * *").contains("bad location"));
    }
}
