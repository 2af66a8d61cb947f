//! When a CronJob should run, as the reference's `mostRecentScheduleTime` decides it: the most
//! recent activation between the last scheduled time (or the CronJob's creation, or now minus
//! `startingDeadlineSeconds`, whichever is latest) and now; whether more than 100 were missed
//! (a stopped controller or a skewed clock, reported but not replayed); and how long to sleep
//! until the next activation (plus 100 ms for clock skew), so the controller wakes exactly then
//! instead of polling.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::schedule::Schedule;

/// More missed activations than this are "too many" (the reference's arbitrary 100).
const TOO_MANY_MISSED: i64 = 100;

/// Padding added to the requeue delay so the wake-up lands after the activation.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// How many activations were missed since the earliest time considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// What [`most_recent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    /// The last scheduled time, the creation time or the starting deadline.
    pub earliest: Timestamp,
    /// The most recent activation at or before now, if any is due.
    pub most_recent: Option<Timestamp>,
    pub missed: Missed,
}

/// The inputs of a CronJob the planning reads.
#[derive(Debug, Clone)]
pub struct Timing<'a> {
    pub schedule: &'a Schedule,
    /// The zone the fields are read in (the CronJob's `timeZone`, else the controller's).
    pub zone: TimeZone,
    pub created: Timestamp,
    pub last_schedule: Option<Timestamp>,
    pub starting_deadline_seconds: Option<i64>,
}

/// The reference's `mostRecentScheduleTime`. An error means the schedule is grammatical but
/// never fires twice (e.g. `0 0 30 2 *`).
pub fn most_recent(t: &Timing, now: Timestamp, with_deadline: bool) -> Result<Recent, String> {
    let mut earliest = t.last_schedule.unwrap_or(t.created);
    if let (true, Some(deadline)) = (with_deadline, t.starting_deadline_seconds) {
        // Nothing older than the deadline will be started anyway.
        let cutoff = now.checked_sub(SignedDuration::from_secs(deadline)).unwrap_or(now);
        earliest = earliest.max(cutoff);
    }
    let none = |missed| Recent { earliest, most_recent: None, missed };
    let next = |at: Timestamp| t.schedule.next(at, &t.zone);
    let never = || "no schedule time within five years: the schedule never fires".to_string();
    let first = next(earliest).ok_or_else(never)?;
    if now < first {
        return Ok(none(Missed::None));
    }
    let second = next(first).ok_or_else(never)?;
    if now < second {
        return Ok(Recent { earliest, most_recent: Some(first), missed: Missed::None });
    }
    let between = second.duration_since(first).as_secs();
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    // Roughly how many periods fit between the first activation and now; then walk the last
    // two of them exactly (irregular schedules such as `30 6-16/4 * * 1-5` drift from the
    // estimate).
    let elapsed = now.duration_since(first).as_secs();
    let missed = elapsed / between + 1;
    let back = (missed - 2).saturating_mul(between);
    let potential = first.checked_add(SignedDuration::from_secs(back)).unwrap_or(first);
    let mut most_recent = None;
    let mut at = next(potential);
    while let Some(time) = at.filter(|time| *time <= now) {
        most_recent = Some(time);
        at = next(time);
    }
    let missed = if missed > TOO_MANY_MISSED { Missed::Many } else { Missed::Few };
    Ok(Recent { earliest, most_recent, missed })
}

/// The activation to run now, if one is due (the reference's `nextScheduleTime`), and whether
/// too many were missed to replay.
pub fn due(t: &Timing, now: Timestamp) -> Result<(Option<Timestamp>, bool), String> {
    let recent = most_recent(t, now, true)?;
    let due = recent.most_recent.filter(|time| *time <= now);
    Ok((due, due.is_some() && recent.missed == Missed::Many))
}

/// How long until the next activation after the most recent one, plus a little padding (the
/// reference's `nextScheduleTimeDuration`); `None` if the schedule never fires again.
pub fn requeue_after(t: &Timing, now: Timestamp) -> Option<Duration> {
    let from = match most_recent(t, now, false) {
        Err(_) => now,
        Ok(Recent { most_recent: Some(time), .. }) => time,
        Ok(Recent { most_recent: None, missed: Missed::None, earliest }) => earliest,
        Ok(Recent { most_recent: None, .. }) => now,
    };
    let next = t.schedule.next(from, &t.zone)?;
    let wait = next.duration_since(now).as_millis();
    let wait = Duration::from_millis(u64::try_from(wait).unwrap_or(0));
    Some(wait + NEXT_SCHEDULE_DELTA)
}

/// The name of the Job for an activation: `<cronjob>-<minutes since the epoch>`, so a second
/// attempt at the same activation collides instead of running twice.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The `batch.kubernetes.io/cronjob-scheduled-timestamp` value: RFC 3339 in the CronJob's zone
/// (UTC without one), `Z` for a zero offset as Go prints it.
pub fn scheduled_timestamp(scheduled: Timestamp, zone: &TimeZone) -> String {
    let zoned = scheduled.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn timing<'a>(schedule: &'a Schedule, created: &str, last: Option<&str>) -> Timing<'a> {
        Timing {
            schedule,
            zone: TimeZone::UTC,
            created: ts(created),
            last_schedule: last.map(ts),
            starting_deadline_seconds: None,
        }
    }

    #[test]
    fn nothing_due_before_the_first_activation() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let t = timing(&s, "2024-03-01T10:01:00Z", None);
        assert_eq!(due(&t, ts("2024-03-01T10:04:59Z")).unwrap(), (None, false));
        // Sleeps until 10:05 plus the padding.
        let wait = requeue_after(&t, ts("2024-03-01T10:04:00Z")).unwrap();
        assert_eq!(wait, Duration::from_millis(60_100));
    }

    #[test]
    fn the_most_recent_missed_activation_is_run_once() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let t = timing(&s, "2024-03-01T10:01:00Z", Some("2024-03-01T10:05:00Z"));
        // 10:10, 10:15 and 10:20 were missed: only 10:20 runs.
        let (time, too_many) = due(&t, ts("2024-03-01T10:22:00Z")).unwrap();
        assert_eq!(time, Some(ts("2024-03-01T10:20:00Z")));
        assert!(!too_many);
        // Already run: the next wake-up is 10:25.
        let t = timing(&s, "2024-03-01T10:01:00Z", Some("2024-03-01T10:20:00Z"));
        assert_eq!(due(&t, ts("2024-03-01T10:22:00Z")).unwrap(), (None, false));
        assert_eq!(
            requeue_after(&t, ts("2024-03-01T10:22:00Z")).unwrap(),
            Duration::from_millis(180_100)
        );
    }

    #[test]
    fn more_than_a_hundred_missed_is_reported() {
        let s = Schedule::parse("* * * * *").unwrap();
        let t = timing(&s, "2024-03-01T00:00:00Z", None);
        let (time, too_many) = due(&t, ts("2024-03-01T03:00:30Z")).unwrap();
        assert_eq!(time, Some(ts("2024-03-01T03:00:00Z")));
        assert!(too_many);
        let (_, too_many) = due(&t, ts("2024-03-01T01:00:30Z")).unwrap();
        assert!(!too_many, "60 missed is not too many");
    }

    #[test]
    fn starting_deadline_bounds_what_is_missed() {
        let s = Schedule::parse("0 * * * *").unwrap();
        let mut t = timing(&s, "2024-03-01T00:30:00Z", None);
        t.starting_deadline_seconds = Some(600);
        // 05:00 is 20 minutes ago, beyond the 10-minute deadline: nothing is due.
        assert_eq!(due(&t, ts("2024-03-01T05:20:00Z")).unwrap(), (None, false));
        // Within the deadline it runs.
        assert_eq!(
            due(&t, ts("2024-03-01T05:05:00Z")).unwrap().0,
            Some(ts("2024-03-01T05:00:00Z"))
        );
        // Hundreds of missed hours do not count as too many once the deadline cuts them off.
        assert!(!due(&t, ts("2024-04-01T00:05:00Z")).unwrap().1);
    }

    #[test]
    fn a_schedule_that_never_fires_is_an_error() {
        let s = Schedule::parse("0 0 31 2 *").unwrap();
        let t = timing(&s, "2024-03-01T00:00:00Z", None);
        assert!(due(&t, ts("2024-03-02T00:00:00Z")).is_err());
        assert_eq!(requeue_after(&t, ts("2024-03-02T00:00:00Z")), None);
    }

    #[test]
    fn names_and_annotations() {
        let at = ts("2024-03-01T10:05:00Z");
        assert_eq!(job_name("hello", at), format!("hello-{}", 1_709_287_500 / 60));
        assert_eq!(scheduled_timestamp(at, &TimeZone::UTC), "2024-03-01T10:05:00Z");
        let ny = TimeZone::get("America/New_York").unwrap();
        assert_eq!(scheduled_timestamp(at, &ny), "2024-03-01T05:05:00-05:00");
    }
}
