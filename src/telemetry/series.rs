//! Hourly buckets per provider (requests, tokens, 429s, latency), in memory, for the
//! dashboard's charts: the last 30 days at most, dropped oldest first. Pure: time is
//! passed in. [`Series::view`] is the one shape the charts read, so a persistent usage
//! history can produce the same [`SeriesView`] later.

use std::collections::VecDeque;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Hours kept: 30 days.
pub const MAX_HOURS: u32 = 30 * 24;

const HOUR_SECS: i64 = 3600;

/// One provider's counts in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    /// Requests it answered.
    pub requests: u64,
    /// Tokens they used.
    pub tokens: u64,
    /// Its 429 answers.
    pub rate_limited: u64,
    /// Sum of the answered requests' latency, in milliseconds.
    pub latency_ms_sum: u64,
    /// How many latencies the sum holds.
    pub latency_count: u64,
}

impl Bucket {
    /// One answered request. Counts saturate: a provider reporting absurd token counts
    /// cannot wrap them.
    pub fn answered(&mut self, tokens: u64, latency_ms: u64) {
        self.requests = self.requests.saturating_add(1);
        self.add_tokens(tokens);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(latency_ms);
        self.latency_count = self.latency_count.saturating_add(1);
    }

    /// Tokens counted after the answer (a stream's, when it ends).
    pub fn add_tokens(&mut self, tokens: u64) {
        self.tokens = self.tokens.saturating_add(tokens);
    }

    /// One 429.
    pub fn rate_limited(&mut self) {
        self.rate_limited = self.rate_limited.saturating_add(1);
    }
}

#[derive(Debug)]
struct Hour {
    /// Unix seconds at the start of the hour.
    start: i64,
    /// Per provider; a handful, so a list searched by name allocates nothing once seen.
    providers: Vec<(String, Bucket)>,
}

/// The buckets: the hour being counted, and the ones before it, oldest first.
#[derive(Debug)]
pub struct Series {
    current: Hour,
    past: VecDeque<Hour>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            current: Hour {
                start: i64::MIN,
                providers: Vec::new(),
            },
            past: VecDeque::new(),
        }
    }
}

fn hour_of(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(HOUR_SECS) * HOUR_SECS
}

impl Series {
    /// The bucket of `provider` for the hour of `now`, created empty when new. A clock
    /// that went back lands in the newest hour.
    pub fn bucket(&mut self, provider: &str, now: DateTime<Utc>) -> &mut Bucket {
        let start = hour_of(now);
        if self.current.start < start {
            let done = std::mem::replace(
                &mut self.current,
                Hour {
                    start,
                    providers: Vec::new(),
                },
            );
            if !done.providers.is_empty() {
                self.past.push_back(done);
            }
            let oldest = start - i64::from(MAX_HOURS) * HOUR_SECS;
            while self.past.front().is_some_and(|h| h.start <= oldest) {
                self.past.pop_front();
            }
        }
        let providers = &mut self.current.providers;
        let i = match providers.iter().position(|(n, _)| n == provider) {
            Some(i) => i,
            None => {
                providers.push((provider.to_string(), Bucket::default()));
                providers.len() - 1
            }
        };
        &mut providers[i].1
    }

    fn all(&self) -> impl Iterator<Item = &Hour> {
        self.past
            .iter()
            .chain(std::iter::once(&self.current))
            .filter(|h| !h.providers.is_empty())
    }

    /// The last `hours` hours (1 to [`MAX_HOURS`]) up to the hour of `now`, every hour
    /// present (empty ones as zeros), per provider seen in them.
    pub fn view(&self, hours: u32, now: DateTime<Utc>) -> SeriesView {
        let hours = hours.clamp(1, MAX_HOURS);
        let last = hour_of(now);
        let first = last - (i64::from(hours) - 1) * HOUR_SECS;
        let mut names: Vec<String> = Vec::new();
        for h in self.all().filter(|h| h.start >= first && h.start <= last) {
            for (n, _) in &h.providers {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        names.sort();
        let len = hours as usize;
        let mut providers: Vec<ProviderSeries> = names
            .into_iter()
            .map(|name| ProviderSeries {
                name,
                requests: vec![0; len],
                tokens: vec![0; len],
                rate_limited: vec![0; len],
                latency_ms: vec![None; len],
            })
            .collect();
        for h in self.all().filter(|h| h.start >= first && h.start <= last) {
            let Ok(i) = usize::try_from((h.start - first) / HOUR_SECS) else {
                continue;
            };
            for (n, b) in &h.providers {
                if let Some(p) = providers.iter_mut().find(|p| p.name == *n) {
                    p.requests[i] = b.requests;
                    p.tokens[i] = b.tokens;
                    p.rate_limited[i] = b.rate_limited;
                    p.latency_ms[i] =
                        (b.latency_count > 0).then(|| b.latency_ms_sum / b.latency_count);
                }
            }
        }
        let kept_since = self.all().next().map(|h| h.start);
        SeriesView {
            start: first,
            step_secs: HOUR_SECS,
            hours,
            since: kept_since,
            providers,
        }
    }
}

/// The same view from the usage history's rows (see [`crate::history`]): the hours survive
/// a restart and reach back 30 days. Requests are the attempts each provider received,
/// and the latency is each hour's median (the history keeps a histogram, not a sum).
pub fn from_history(
    rows: &[(crate::history::BucketId, crate::history::Counts)],
    hours: u32,
    now: DateTime<Utc>,
) -> SeriesView {
    let hours = hours.clamp(1, MAX_HOURS);
    let last = hour_of(now);
    let first = last - (i64::from(hours) - 1) * HOUR_SECS;
    let len = hours as usize;
    let mut since: Option<i64> = None;
    // Per provider, per hour: the hour's counts summed over keys and models.
    let mut merged: Vec<(String, Vec<crate::history::Counts>)> = Vec::new();
    for (id, counts) in rows {
        let Ok(start) = i64::try_from(id.hour).map(|h| h * HOUR_SECS) else {
            continue;
        };
        since = Some(since.map_or(start, |s: i64| s.min(start)));
        if start < first || start > last {
            continue;
        }
        let Ok(i) = usize::try_from((start - first) / HOUR_SECS) else {
            continue;
        };
        let slot = match merged.iter().position(|(n, _)| *n == id.provider) {
            Some(at) => &mut merged[at].1,
            None => {
                merged.push((id.provider.clone(), vec![Default::default(); len]));
                let at = merged.len() - 1;
                &mut merged[at].1
            }
        };
        if let Some(c) = slot.get_mut(i) {
            c.merge(counts);
        }
    }
    merged.sort_by(|a, b| a.0.cmp(&b.0));
    let providers = merged
        .into_iter()
        .map(|(name, hours)| ProviderSeries {
            name,
            requests: hours.iter().map(|c| c.requests).collect(),
            tokens: hours
                .iter()
                .map(|c| c.prompt_tokens.saturating_add(c.completion_tokens))
                .collect(),
            rate_limited: hours.iter().map(|c| c.rate_limited).collect(),
            latency_ms: hours.iter().map(|c| c.latency_quantile(0.5)).collect(),
        })
        .collect();
    SeriesView {
        start: first,
        step_secs: HOUR_SECS,
        hours,
        since,
        providers,
    }
}

/// What the charts draw: per provider, one value per hour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeriesView {
    /// Unix seconds at the start of the first hour.
    pub start: i64,
    /// Seconds per point (3600).
    pub step_secs: i64,
    /// Points per line.
    pub hours: u32,
    /// Unix seconds of the oldest hour there is data for (`None`: no data yet), so the
    /// page can tell whether a 30-day view has anything to show.
    pub since: Option<i64>,
    /// Per provider, by name.
    pub providers: Vec<ProviderSeries>,
}

/// One provider's lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderSeries {
    /// Provider name.
    pub name: String,
    /// Requests answered per hour.
    pub requests: Vec<u64>,
    /// Tokens per hour.
    pub tokens: Vec<u64>,
    /// 429 answers per hour.
    pub rate_limited: Vec<u64>,
    /// Latency per hour in milliseconds: the mean in memory, the median from the usage
    /// history (`None`: no answered request that hour).
    pub latency_ms: Vec<Option<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of an hour.
    const HOUR0: i64 = 1_800_000_000;

    fn at(h: i64, m: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(HOUR0 + h * 3600 + m * 60, 0).expect("time")
    }

    #[test]
    fn requests_in_the_same_hour_share_a_bucket_and_the_next_hour_starts_a_new_one() {
        let mut s = Series::default();
        s.bucket("groq", at(0, 1)).requests += 1;
        s.bucket("groq", at(0, 59)).requests += 1;
        s.bucket("groq", at(1, 0)).requests += 1;
        s.bucket("gemini", at(1, 5)).rate_limited += 1;
        let v = s.view(3, at(1, 30));
        assert_eq!(v.hours, 3);
        assert_eq!(v.start, at(-1, 0).timestamp());
        let names: Vec<&str> = v.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["gemini", "groq"]);
        assert_eq!(v.providers[1].requests, [0, 2, 1]);
        assert_eq!(v.providers[0].rate_limited, [0, 0, 1]);
    }

    #[test]
    fn latency_is_the_mean_of_the_hour_and_absent_when_nothing_was_answered() {
        let mut s = Series::default();
        for ms in [100, 300] {
            let b = s.bucket("groq", at(0, 0));
            b.latency_ms_sum += ms;
            b.latency_count += 1;
        }
        let v = s.view(2, at(1, 0));
        assert_eq!(v.providers[0].latency_ms, [Some(200), None]);
    }

    #[test]
    fn absurd_token_counts_saturate_instead_of_wrapping() {
        let mut s = Series::default();
        s.bucket("groq", at(0, 0)).answered(u64::MAX, 1);
        s.bucket("groq", at(0, 0)).answered(u64::MAX, 1);
        s.bucket("groq", at(0, 0)).add_tokens(5);
        assert_eq!(s.view(1, at(0, 0)).providers[0].tokens, [u64::MAX]);
    }

    #[test]
    fn hours_older_than_thirty_days_are_dropped() {
        let mut s = Series::default();
        s.bucket("old", at(0, 0)).requests += 1;
        s.bucket("new", at(i64::from(MAX_HOURS), 0)).requests += 1;
        assert!(s.past.is_empty(), "the first hour fell out of the window");
        let v = s.view(MAX_HOURS, at(i64::from(MAX_HOURS), 0));
        assert_eq!(v.providers.len(), 1);
        assert_eq!(v.since, Some(at(i64::from(MAX_HOURS), 0).timestamp()));
    }

    #[test]
    fn a_view_is_clamped_to_between_one_hour_and_thirty_days() {
        let s = Series::default();
        assert_eq!(s.view(0, at(0, 0)).hours, 1);
        assert_eq!(s.view(100_000, at(0, 0)).hours, MAX_HOURS);
        assert_eq!(s.view(24, at(0, 0)).since, None);
    }

    #[test]
    fn a_clock_that_goes_back_counts_in_the_newest_hour() {
        let mut s = Series::default();
        s.bucket("groq", at(5, 0)).requests += 1;
        s.bucket("groq", at(4, 0)).requests += 1;
        assert_eq!(s.view(1, at(5, 0)).providers[0].requests, [2]);
    }

    #[test]
    fn the_history_rows_make_the_same_view_summed_over_keys_and_models() {
        use crate::history::{BucketId, Counts};
        let hour = |h: i64| u64::try_from((HOUR0 + h * 3600) / 3600).expect("hour");
        let row = |h: i64, provider: &str, key: u32, model: &str, requests: u64| {
            let mut c = Counts {
                requests,
                prompt_tokens: 10 * requests,
                completion_tokens: requests,
                rate_limited: 1,
                ..Counts::default()
            };
            c.add_latency(std::time::Duration::from_millis(150));
            (
                BucketId {
                    hour: hour(h),
                    provider: provider.into(),
                    key,
                    model: model.into(),
                },
                c,
            )
        };
        let rows = vec![
            row(-30, "groq", 0, "a", 7), // before the window: only `since`
            row(0, "groq", 0, "a", 2),
            row(0, "groq", 1, "b", 3),
            row(2, "cerebras", 0, "c", 4),
        ];
        let v = from_history(&rows, 3, at(2, 10));
        assert_eq!(v.start, HOUR0);
        assert_eq!(v.hours, 3);
        assert_eq!(v.since, Some(HOUR0 - 30 * 3600));
        let names: Vec<&str> = v.providers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["cerebras", "groq"]);
        let groq = &v.providers[1];
        assert_eq!(groq.requests, [5, 0, 0]);
        assert_eq!(groq.tokens, [55, 0, 0]);
        assert_eq!(groq.rate_limited, [2, 0, 0]);
        assert_eq!(groq.latency_ms[1], None);
        assert!(groq.latency_ms[0].is_some_and(|ms| ms >= 150));
        assert_eq!(v.providers[0].requests, [0, 0, 4]);
    }
}
