//! Headroom: how much a key and a provider have left, and when it comes back. Read from
//! the provider's own `x-ratelimit-*` headers where it sends them (the latest reading per
//! key, kept by the pool), otherwise from the agent's own counts against the limits the
//! user set in the config (`requests_per_day` and friends). Also the forecast "at this
//! pace it runs out at 15:40" and the words the CLI and the menu use.
//!
//! Pure functions; `now` is passed in. No I/O, no locks: the pool calls these while it
//! builds a snapshot.

use chrono::{DateTime, Duration, DurationRound, Local, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Limits;

/// One window as the provider's headers described it on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// What was left.
    pub remaining: u64,
    /// When the window refills.
    pub reset: DateTime<Utc>,
}

/// What one answer's rate-limit headers said about a key's windows (see
/// [`crate::upstream::limits::reading`]). Kept per key with the time it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// Requests left today (Groq's `-requests`, Cerebras's `-requests-day`).
    pub requests_day: Option<Slot>,
    /// Requests left in a shorter window (OpenAI's and xAI's `-requests`).
    pub requests_minute: Option<Slot>,
    /// Tokens left in the tightest short window (`-tokens`, `-tokens-minute`).
    pub tokens_minute: Option<Slot>,
    /// Tokens left today (`-tokens-day`).
    pub tokens_day: Option<Slot>,
}

impl Reading {
    /// Whether the headers said anything at all.
    pub fn is_empty(&self) -> bool {
        *self == Reading::default()
    }
}

/// A key's own counts, kept by the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Requests today (local day).
    pub requests_today: u64,
    /// Tokens today (local day).
    pub tokens_today: u64,
    /// The calendar minute the next two count, if any.
    pub minute: Option<DateTime<Utc>>,
    /// Requests in `minute`.
    pub minute_requests: u64,
    /// Tokens in `minute`.
    pub minute_tokens: u64,
}

impl Counts {
    /// Counts one request (and its tokens, when known) at `now`.
    pub fn add(&mut self, requests: u64, tokens: u64, now: DateTime<Utc>) {
        let minute = minute_start(now);
        if self.minute != Some(minute) {
            self.minute = Some(minute);
            self.minute_requests = 0;
            self.minute_tokens = 0;
        }
        self.minute_requests = self.minute_requests.saturating_add(requests);
        self.minute_tokens = self.minute_tokens.saturating_add(tokens);
        self.requests_today = self.requests_today.saturating_add(requests);
        self.tokens_today = self.tokens_today.saturating_add(tokens);
    }

    /// Requests and tokens in the calendar minute of `now`.
    fn this_minute(&self, now: DateTime<Utc>) -> (u64, u64) {
        if self.minute == Some(minute_start(now)) {
            (self.minute_requests, self.minute_tokens)
        } else {
            (0, 0)
        }
    }
}

/// The local calendar day around `now`: when it started and when the next begins (the
/// agent's own "today" counts roll over there). A midnight that a daylight-saving switch
/// skips is taken an hour later.
pub fn day_bounds(now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let date = now.with_timezone(&Local).date_naive();
    let start_of = |d: chrono::NaiveDate| {
        let midnight = d.and_time(chrono::NaiveTime::MIN);
        midnight
            .and_local_timezone(Local)
            .earliest()
            .or_else(|| {
                (midnight + Duration::hours(1))
                    .and_local_timezone(Local)
                    .earliest()
            })
            .map(|t| t.with_timezone(&Utc))
    };
    let start = start_of(date).unwrap_or(now);
    let end = date
        .succ_opt()
        .and_then(start_of)
        .unwrap_or(now + Duration::days(1));
    (start, end)
}

/// The start of the calendar minute of `t`.
pub fn minute_start(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(Duration::minutes(1)).unwrap_or(t)
}

/// Where a figure comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The provider's own headers.
    Provider,
    /// The agent's counts against a limit set in the config.
    Config,
}

/// What is left in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Left {
    /// How much is left.
    pub left: u64,
    /// When the window refills (RFC 3339 UTC).
    pub resets_at: DateTime<Utc>,
    /// Where the figure comes from.
    pub source: Source,
}

/// What a key or a provider has left: each window that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Headroom {
    /// Requests left today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_today: Option<Left>,
    /// Requests left this minute (or the provider's shorter request window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_minute: Option<Left>,
    /// Tokens left this minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_minute: Option<Left>,
    /// Tokens left today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_today: Option<Left>,
}

impl Headroom {
    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        *self == Headroom::default()
    }

    /// The windows, in a fixed order (for sums and checks).
    fn slots(&self) -> [Option<Left>; 4] {
        [
            self.requests_today,
            self.requests_minute,
            self.tokens_minute,
            self.tokens_today,
        ]
    }

    /// The first of its windows that is used up and is the agent's own count against a
    /// configured limit: (when it refills, whether it is a daily window). The pool rests
    /// the key until then.
    pub fn own_limit_reached(&self) -> Option<(DateTime<Utc>, bool)> {
        let daily = [true, false, false, true];
        self.slots()
            .into_iter()
            .zip(daily)
            .filter_map(|(l, d)| l.map(|l| (l, d)))
            .filter(|(l, _)| l.source == Source::Config && l.left == 0)
            .map(|(l, d)| (l.resets_at, d))
            .max_by_key(|(t, _)| *t)
    }
}

/// Seconds precision is all anyone reads.
fn whole_secs(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_round(Duration::seconds(1)).unwrap_or(t)
}

/// One window: the provider's reading while it is current (less what was sent since, for
/// request windows), else the configured limit against our count.
fn window(
    slot: Option<Slot>,
    sent_since: u64,
    limit: Option<u64>,
    used: u64,
    window_end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Left> {
    if let Some(s) = slot.filter(|s| s.reset > now) {
        return Some(Left {
            left: s.remaining.saturating_sub(sent_since),
            resets_at: whole_secs(s.reset),
            source: Source::Provider,
        });
    }
    limit.map(|limit| Left {
        left: limit.saturating_sub(used),
        resets_at: window_end,
        source: Source::Config,
    })
}

/// Everything a key's headroom is computed from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The latest header reading, if any.
    pub reading: Option<&'a Reading>,
    /// The key's requests today when that reading was taken.
    pub requests_at_reading: u64,
    /// The key's own counts.
    pub counts: &'a Counts,
    /// The limits set in the config.
    pub limits: &'a Limits,
    /// When today's count starts again (the next local midnight).
    pub day_end: DateTime<Utc>,
}

/// A key's headroom at `now`.
pub fn for_key(input: &KeyInput<'_>, now: DateTime<Utc>) -> Headroom {
    let r = input.reading.copied().unwrap_or_default();
    let c = input.counts;
    let since = c.requests_today.saturating_sub(input.requests_at_reading);
    let (minute_requests, minute_tokens) = c.this_minute(now);
    let minute_end = minute_start(now) + Duration::minutes(1);
    let l = input.limits;
    Headroom {
        requests_today: window(
            r.requests_day,
            since,
            l.requests_per_day,
            c.requests_today,
            input.day_end,
            now,
        ),
        requests_minute: window(
            r.requests_minute,
            since,
            l.requests_per_minute,
            minute_requests,
            minute_end,
            now,
        ),
        tokens_minute: window(
            r.tokens_minute,
            0,
            l.tokens_per_minute,
            minute_tokens,
            minute_end,
            now,
        ),
        tokens_today: window(
            r.tokens_day,
            0,
            l.tokens_per_day,
            c.tokens_today,
            input.day_end,
            now,
        ),
    }
}

fn sum(a: Option<Left>, b: Option<Left>) -> Option<Left> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Left {
            left: a.left.saturating_add(b.left),
            resets_at: a.resets_at.min(b.resets_at),
            source: if a.source == Source::Provider || b.source == Source::Provider {
                Source::Provider
            } else {
                Source::Config
            },
        }),
        (a, b) => a.or(b),
    }
}

/// A provider's headroom: the sum over its keys that can still serve (what each key that
/// says nothing has is unknown, so the sum is what is known to be left); each window
/// refills when its first key's does.
pub fn for_provider<'a>(keys: impl IntoIterator<Item = &'a Headroom>) -> Headroom {
    keys.into_iter()
        .fold(Headroom::default(), |acc, k| Headroom {
            requests_today: sum(acc.requests_today, k.requests_today),
            requests_minute: sum(acc.requests_minute, k.requests_minute),
            tokens_minute: sum(acc.tokens_minute, k.tokens_minute),
            tokens_today: sum(acc.tokens_today, k.tokens_today),
        })
}

/// When `left` runs out at today's pace: `used` requests since `day_start` make a rate,
/// and `left` more at that rate take until the answer. `None` without a pace to go by
/// (nothing used yet, or no time passed); `now` when nothing is left.
pub fn runs_out_at(
    used: u64,
    day_start: DateTime<Utc>,
    now: DateTime<Utc>,
    left: u64,
) -> Option<DateTime<Utc>> {
    if left == 0 {
        return Some(now);
    }
    let elapsed_ms = (now - day_start).num_milliseconds();
    if used == 0 || elapsed_ms <= 0 {
        return None;
    }
    // ms per request × requests left, in u128 so no count overflows it.
    let ms = u128::from(left) * elapsed_ms.unsigned_abs() as u128 / u128::from(used);
    let ms = i64::try_from(ms).ok()?;
    let at = now.checked_add_signed(Duration::milliseconds(ms))?;
    Some(whole_secs(at))
}

/// The whole pool's requests left today, over the providers that know theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PoolHeadroom {
    /// Requests left today, summed.
    pub requests_left_today: Option<u64>,
    /// How many providers that figure covers.
    pub providers: usize,
}

/// `1,900`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `02:00` in the user's time, with the weekday when it is not within the next day.
pub fn clock(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = t.with_timezone(&Local);
    if t - now > Duration::hours(20) {
        local.format("%a %H:%M").to_string()
    } else {
        local.format("%H:%M").to_string()
    }
}

/// The menu's line for a provider: "412 left today · resets 02:00", with "· runs out
/// ~15:40 at this pace" when the forecast comes before the reset. `None` when its
/// requests left today are unknown (minute windows are gone before anyone reads them).
pub fn line(h: &Headroom, runs_out: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<String> {
    let d = h.requests_today?;
    let mut text = format!(
        "{} left today · resets {}",
        thousands(d.left),
        clock(d.resets_at, now)
    );
    if let Some(t) = runs_out.filter(|t| *t > now && d.left > 0) {
        text.push_str(&format!(" · runs out ~{} at this pace", clock(t, now)));
    }
    Some(text)
}

/// The menu header's line: "~1,900 requests left today across 5 providers".
pub fn pool_line(p: &PoolHeadroom) -> Option<String> {
    let left = p.requests_left_today?;
    Some(format!(
        "~{} requests left today across {} provider{}",
        thousands(left),
        p.providers,
        if p.providers == 1 { "" } else { "s" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, h, m, 0)
            .single()
            .expect("time")
    }

    fn midnight() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 11, 0, 0, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn the_providers_reading_wins_less_what_was_sent_since() {
        let reading = Reading {
            requests_day: Some(Slot {
                remaining: 420,
                reset: at(23, 0),
            }),
            tokens_minute: Some(Slot {
                remaining: 9000,
                reset: at(12, 1),
            }),
            ..Reading::default()
        };
        let counts = Counts {
            requests_today: 108,
            ..Counts::default()
        };
        let limits = Limits {
            requests_per_day: Some(1000),
            ..Limits::default()
        };
        let h = for_key(
            &KeyInput {
                reading: Some(&reading),
                requests_at_reading: 100,
                counts: &counts,
                limits: &limits,
                day_end: midnight(),
            },
            at(12, 0),
        );
        let d = h.requests_today.expect("day");
        assert_eq!(
            (d.left, d.resets_at, d.source),
            (412, at(23, 0), Source::Provider)
        );
        assert_eq!(h.tokens_minute.map(|t| t.left), Some(9000));
        assert_eq!(h.own_limit_reached(), None);
    }

    #[test]
    fn a_reading_past_its_reset_gives_way_to_the_configured_limit() {
        let reading = Reading {
            requests_day: Some(Slot {
                remaining: 0,
                reset: at(11, 0),
            }),
            ..Reading::default()
        };
        let counts = Counts {
            requests_today: 250,
            ..Counts::default()
        };
        let limits = Limits {
            requests_per_day: Some(1000),
            ..Limits::default()
        };
        let input = KeyInput {
            reading: Some(&reading),
            requests_at_reading: 200,
            counts: &counts,
            limits: &limits,
            day_end: midnight(),
        };
        let d = for_key(&input, at(12, 0)).requests_today.expect("day");
        assert_eq!(
            (d.left, d.resets_at, d.source),
            (750, midnight(), Source::Config)
        );
        // Without a limit, an old reading says nothing.
        let none = Limits::default();
        let h = for_key(
            &KeyInput {
                limits: &none,
                ..input
            },
            at(12, 0),
        );
        assert!(h.is_empty());
    }

    #[test]
    fn own_minute_counts_start_again_each_minute_and_a_reached_limit_says_until_when() {
        let mut counts = Counts::default();
        let t = at(12, 0) + Duration::seconds(10);
        counts.add(1, 4000, t);
        counts.add(1, 2000, t + Duration::seconds(5));
        let limits = Limits {
            requests_per_minute: Some(2),
            tokens_per_minute: Some(8000),
            ..Limits::default()
        };
        let input = KeyInput {
            reading: None,
            requests_at_reading: 0,
            counts: &counts,
            limits: &limits,
            day_end: midnight(),
        };
        let h = for_key(&input, t + Duration::seconds(20));
        assert_eq!(h.tokens_minute.map(|l| l.left), Some(2000));
        assert_eq!(h.requests_minute.map(|l| l.left), Some(0));
        assert_eq!(h.own_limit_reached(), Some((at(12, 1), false)));
        // The next minute, everything is back.
        let h = for_key(&input, at(12, 1) + Duration::seconds(1));
        assert_eq!(h.tokens_minute.map(|l| l.left), Some(8000));
        assert_eq!(h.requests_minute.map(|l| l.left), Some(2));
        assert_eq!(h.own_limit_reached(), None);
        assert_eq!(counts.tokens_today, 6000);
    }

    #[test]
    fn a_provider_sums_its_keys_and_refills_with_the_first() {
        let key = |left, reset| Headroom {
            requests_today: Some(Left {
                left,
                resets_at: reset,
                source: Source::Config,
            }),
            ..Headroom::default()
        };
        let p = for_provider(&[key(100, at(23, 0)), key(50, at(22, 0)), Headroom::default()]);
        let d = p.requests_today.expect("sum");
        assert_eq!((d.left, d.resets_at), (150, at(22, 0)));
        assert!(for_provider(&[]).is_empty());
    }

    #[test]
    fn a_local_day_holds_now_and_lasts_about_a_day() {
        let now = at(12, 34);
        let (start, end) = day_bounds(now);
        assert!(start <= now && now < end);
        let hours = (end - start).num_hours();
        assert!((23..=25).contains(&hours), "{hours}");
        assert_eq!(day_bounds(end).0, end);
    }

    #[test]
    fn the_forecast_follows_todays_pace() {
        let day_start = at(0, 0);
        // 600 requests in 10 hours: 60 an hour; 300 left last 5 more hours.
        assert_eq!(runs_out_at(600, day_start, at(10, 0), 300), Some(at(15, 0)));
        // Nothing used yet: no pace to go by.
        assert_eq!(runs_out_at(0, day_start, at(10, 0), 300), None);
        // Nothing left: now.
        assert_eq!(runs_out_at(600, day_start, at(10, 0), 0), Some(at(10, 0)));
        // Absurd figures do not overflow.
        assert_eq!(runs_out_at(1, day_start, at(10, 0), u64::MAX), None);
    }

    #[test]
    fn lines_read_as_people_say_it() {
        let now = at(12, 0);
        let h = Headroom {
            requests_today: Some(Left {
                left: 1412,
                resets_at: at(23, 0),
                source: Source::Provider,
            }),
            ..Headroom::default()
        };
        let reset = clock(at(23, 0), now);
        assert_eq!(
            line(&h, None, now).as_deref(),
            Some(&*format!("1,412 left today · resets {reset}"))
        );
        let soon = clock(at(15, 40), now);
        assert_eq!(
            line(&h, Some(at(15, 40)), now).as_deref(),
            Some(&*format!(
                "1,412 left today · resets {reset} · runs out ~{soon} at this pace"
            ))
        );
        let tokens = Headroom {
            tokens_minute: Some(Left {
                left: 9000,
                resets_at: now + Duration::seconds(42),
                source: Source::Provider,
            }),
            ..Headroom::default()
        };
        assert_eq!(line(&tokens, None, now), None);
        assert_eq!(line(&Headroom::default(), None, now), None);
        let pool = PoolHeadroom {
            requests_left_today: Some(1900),
            providers: 5,
        };
        assert_eq!(
            pool_line(&pool).as_deref(),
            Some("~1,900 requests left today across 5 providers")
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
