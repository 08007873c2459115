//! When daily quotas come back: Gemini's reset at midnight Pacific time, OpenRouter's at
//! midnight UTC. Pure functions; `now` is passed in.
//!
//! Pacific time is computed with the US daylight-saving rule in force since 2007 (UTC-7
//! from the second Sunday of March, 02:00 local, to the first Sunday of November, 02:00
//! local; UTC-8 otherwise) rather than a time-zone database: one fixed rule is all this
//! needs, it is tested on both transitions, and it keeps a tz database out of the binary.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};

/// The `n`-th `weekday` of `month` in `year` (n from 1).
fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u32) -> Option<NaiveDate> {
    let first = NaiveDate::from_ymd_opt(year, month, 1)?;
    let offset = (7 + weekday.num_days_from_monday() - first.weekday().num_days_from_monday()) % 7;
    first.checked_add_signed(Duration::days(i64::from(offset + 7 * (n - 1))))
}

/// Whether local midnight starting `date` in Pacific time is in daylight-saving time.
/// The switches happen at 02:00, so midnight of the March switch day is still standard
/// time and midnight of the November switch day is still daylight time.
fn pacific_midnight_is_dst(date: NaiveDate) -> bool {
    let year = date.year();
    match (
        nth_weekday(year, 3, Weekday::Sun, 2),
        nth_weekday(year, 11, Weekday::Sun, 1),
    ) {
        (Some(start), Some(end)) => date > start && date <= end,
        _ => false,
    }
}

/// The UTC offset (hours) of Pacific time at the instant `t`.
fn pacific_offset_hours(t: DateTime<Utc>) -> i64 {
    let year = t.year();
    let at = |d: Option<NaiveDate>, hour_utc: u32| {
        d.and_then(|d| d.and_hms_opt(hour_utc, 0, 0))
            .map(|n| Utc.from_utc_datetime(&n))
    };
    // 02:00 PST = 10:00 UTC; 02:00 PDT = 09:00 UTC.
    let start = at(nth_weekday(year, 3, Weekday::Sun, 2), 10);
    let end = at(nth_weekday(year, 11, Weekday::Sun, 1), 9);
    match (start, end) {
        (Some(s), Some(e)) if t >= s && t < e => -7,
        _ => -8,
    }
}

/// The next midnight in US Pacific time after `now` (Gemini's daily quota reset).
pub fn next_pacific_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local_date = (now + Duration::hours(pacific_offset_hours(now))).date_naive();
    let next = local_date.succ_opt().unwrap_or(local_date);
    let offset = if pacific_midnight_is_dst(next) { 7 } else { 8 };
    let midnight = next.and_hms_opt(0, 0, 0).unwrap_or_default();
    Utc.from_utc_datetime(&midnight) + Duration::hours(offset)
}

/// The next midnight UTC after `now` (OpenRouter's daily free-model reset).
pub fn next_utc_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let date = now.date_naive();
    let next = date.succ_opt().unwrap_or(date);
    Utc.from_utc_datetime(&next.and_hms_opt(0, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn pacific_midnight_in_winter_and_summer() {
        // 27 Nov 2026 12:00 UTC = 04:00 PST -> next midnight 28 Nov 00:00 PST = 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 11, 27, 12, 0)),
            utc(2026, 11, 28, 8, 0)
        );
        // 15 Jul 2026 06:59 UTC = 23:59 PDT on the 14th -> 15 Jul 00:00 PDT = 07:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 7, 15, 6, 59)),
            utc(2026, 7, 15, 7, 0)
        );
        // One minute later it is the 15th locally -> the 16th.
        assert_eq!(
            next_pacific_midnight(utc(2026, 7, 15, 7, 0)),
            utc(2026, 7, 16, 7, 0)
        );
    }

    #[test]
    fn pacific_midnight_across_daylight_saving_switches() {
        // 2026: DST starts Sun 8 Mar, ends Sun 1 Nov.
        // Sat 7 Mar 12:00 PST -> Sun 8 Mar 00:00 is still PST (switch at 02:00) = 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 3, 7, 20, 0)),
            utc(2026, 3, 8, 8, 0)
        );
        // Sun 8 Mar 12:00 PDT (19:00 UTC) -> Mon 9 Mar 00:00 PDT = 07:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 3, 8, 19, 0)),
            utc(2026, 3, 9, 7, 0)
        );
        // Sat 31 Oct 12:00 PDT -> Sun 1 Nov 00:00 is still PDT = 07:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 10, 31, 19, 0)),
            utc(2026, 11, 1, 7, 0)
        );
        // Sun 1 Nov 12:00 PST (20:00 UTC) -> Mon 2 Nov 00:00 PST = 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 11, 1, 20, 0)),
            utc(2026, 11, 2, 8, 0)
        );
        // Sun 1 Nov 01:30 PST (second pass, 09:30 UTC) is the 1st -> 2 Nov 08:00 UTC.
        assert_eq!(
            next_pacific_midnight(utc(2026, 11, 1, 9, 30)),
            utc(2026, 11, 2, 8, 0)
        );
    }

    #[test]
    fn utc_midnight_is_the_next_day() {
        assert_eq!(
            next_utc_midnight(utc(2026, 11, 27, 23, 59)),
            utc(2026, 11, 28, 0, 0)
        );
        assert_eq!(
            next_utc_midnight(utc(2026, 12, 31, 0, 0)),
            utc(2027, 1, 1, 0, 0)
        );
    }
}
