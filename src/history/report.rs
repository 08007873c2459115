//! What `llm-rotator stats` and `GET /stats/history` show: the history's hourly rows
//! summed per provider and local day over the last N days (days without traffic
//! included, so every provider has N rows), and the text tables with a sparkline of daily
//! requests. Pure: rows, the day each hour belongs to and "today" are passed in.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{BucketId, Counts, RETENTION_DAYS};

/// Days shown when none are asked for.
pub const DEFAULT_DAYS: u32 = 7;

/// A validated question: how many days, which provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Days back, today included (1..=90).
    pub days: u32,
    /// Only this provider.
    pub provider: Option<String>,
}

/// Why a question cannot be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `days` out of range or not a number.
    #[error("days must be a whole number from 1 to {RETENTION_DAYS} (the history keeps {RETENTION_DAYS} days), not {0:?}")]
    Days(String),
    /// A provider neither configured nor in the history.
    #[error("no provider named {name:?}; providers: {known}")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// Those that exist, comma-separated.
        known: String,
    },
}

impl Query {
    /// Validates raw values (`days` as given on the command line or in the query string).
    pub fn parse(days: Option<&str>, provider: Option<&str>) -> Result<Query, QueryError> {
        let days = match days.map(str::trim) {
            None | Some("") => DEFAULT_DAYS,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|d| (1..=RETENTION_DAYS as u32).contains(d))
                .ok_or_else(|| QueryError::Days(text.to_string()))?,
        };
        Ok(Query {
            days,
            provider: provider
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
    }

    /// Checks the provider against those `known` (configured, then seen in the history).
    pub fn check_provider(&self, known: &[String]) -> Result<(), QueryError> {
        match &self.provider {
            Some(name) if !known.contains(name) => Err(QueryError::UnknownProvider {
                name: name.clone(),
                known: known.join(", "),
            }),
            _ => Ok(()),
        }
    }
}

/// One provider's day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRow {
    /// Provider name.
    pub provider: String,
    /// The local day.
    pub day: NaiveDate,
    /// Attempts the provider received.
    pub requests: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// 429s and spent quotas.
    pub rate_limited: u64,
    /// Other failures.
    pub failures: u64,
    /// Times a request moved on from this provider after a failure.
    pub rotations: u64,
    /// Median latency of successful attempts (ms, bucket upper bound).
    pub p50_ms: Option<u64>,
    /// 95th percentile latency of successful attempts (ms, bucket upper bound).
    pub p95_ms: Option<u64>,
}

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Days covered.
    pub days: u32,
    /// First day.
    pub from: NaiveDate,
    /// Last day (today).
    pub to: NaiveDate,
    /// Providers in order (configured ones first, by priority; then others seen).
    pub providers: Vec<String>,
    /// One row per provider and day, providers in order, days oldest first.
    pub rows: Vec<DayRow>,
}

/// The first hour to read for `days` local days ending with the one `now_hour` is in:
/// a day more than needed, so no time zone or DST change cuts the first day short (rows
/// are then placed by their local day).
pub fn first_hour(days: u32, now_hour: u64) -> u64 {
    now_hour.saturating_sub((u64::from(days) + 1) * 24)
}

/// Sums `rows` per provider and local day (`day_of(hour)`) for the `query.days` days
/// ending `today`. `providers` gives the order; providers seen only in the history
/// follow, sorted.
pub fn daily(
    rows: &[(BucketId, Counts)],
    query: &Query,
    today: NaiveDate,
    day_of: impl Fn(u64) -> NaiveDate,
    providers: &[String],
) -> Report {
    let from = today - chrono::Days::new(u64::from(query.days.saturating_sub(1)));
    let mut sums: BTreeMap<(&str, NaiveDate), Counts> = BTreeMap::new();
    let mut order: Vec<String> = providers.to_vec();
    for (id, c) in rows {
        let day = day_of(id.hour);
        if day < from || day > today {
            continue;
        }
        if !order.contains(&id.provider) {
            order.push(id.provider.clone());
        }
        sums.entry((id.provider.as_str(), day))
            .or_default()
            .merge(c);
    }
    order[providers.len()..].sort();
    order.retain(|p| query.provider.as_ref().is_none_or(|only| only == p));
    let mut out = Vec::new();
    for p in &order {
        for day in from.iter_days().take_while(|d| *d <= today) {
            let c = sums.get(&(p.as_str(), day)).copied().unwrap_or_default();
            out.push(DayRow {
                provider: p.clone(),
                day,
                requests: c.requests,
                prompt_tokens: c.prompt_tokens,
                completion_tokens: c.completion_tokens,
                rate_limited: c.rate_limited,
                failures: c.failures,
                rotations: c.rotations,
                p50_ms: c.latency_quantile(0.50),
                p95_ms: c.latency_quantile(0.95),
            });
        }
    }
    Report {
        days: query.days,
        from,
        to: today,
        providers: order,
        rows: out,
    }
}

/// Why [`answer`] has no report.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The question names an unknown provider.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The history could not be read.
    #[error(transparent)]
    History(#[from] super::HistoryError),
}

/// The report for `query` at `now` in local days: reads the rows it needs through
/// `rows_since` (the running agent's store, or the file opened by the CLI) and checks the
/// provider against those `configured` (in priority order) and those in the history.
pub fn answer(
    query: &Query,
    configured: &[String],
    now: chrono::DateTime<chrono::Utc>,
    rows_since: impl FnOnce(u64) -> Result<Vec<(BucketId, Counts)>, super::HistoryError>,
) -> Result<Report, AnswerError> {
    use chrono::Local;
    let today = now.with_timezone(&Local).date_naive();
    let rows = rows_since(first_hour(query.days, super::hour_of(now)))?;
    let mut known = configured.to_vec();
    for (id, _) in &rows {
        if !known.contains(&id.provider) {
            known.push(id.provider.clone());
        }
    }
    query.check_provider(&known)?;
    let day_of = |hour: u64| super::hour_start(hour).with_timezone(&Local).date_naive();
    Ok(daily(&rows, query, today, day_of, configured))
}

/// One bar per value, ▁ for zero and the rest scaled to the largest (█).
pub fn sparkline(values: &[u64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                BARS[0]
            } else {
                // 1..=7 for non-zero values, so any traffic shows above an idle day.
                let step = (v.saturating_mul(7)).div_ceil(max).clamp(1, 7);
                BARS[step as usize]
            }
        })
        .collect()
}

fn ms(v: Option<u64>) -> String {
    match v {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

/// The text `llm-rotator stats` prints: a summary line per provider with the sparkline
/// of its daily requests, then a table per provider, one row per day.
pub fn text(report: &Report) -> String {
    let mut out = format!(
        "Usage from {} to {} ({} day{})\n\n",
        report.from,
        report.to,
        report.days,
        if report.days == 1 { "" } else { "s" }
    );
    if report.providers.is_empty() {
        out.push_str("no providers\n");
        return out;
    }
    let mut summary: Vec<[String; 7]> = vec![[
        "PROVIDER".into(),
        "REQUESTS".into(),
        "TOKENS".into(),
        "429s".into(),
        "FAILED".into(),
        "ROTATIONS".into(),
        "DAILY REQUESTS".into(),
    ]];
    for p in &report.providers {
        let rows: Vec<&DayRow> = report.rows.iter().filter(|r| &r.provider == p).collect();
        let sum = |f: fn(&DayRow) -> u64| rows.iter().map(|r| f(r)).sum::<u64>();
        summary.push([
            p.clone(),
            sum(|r| r.requests).to_string(),
            sum(|r| r.prompt_tokens + r.completion_tokens).to_string(),
            sum(|r| r.rate_limited).to_string(),
            sum(|r| r.failures).to_string(),
            sum(|r| r.rotations).to_string(),
            sparkline(&rows.iter().map(|r| r.requests).collect::<Vec<_>>()),
        ]);
    }
    out.push_str(&crate::cli::text_table(&summary));
    for p in &report.providers {
        out.push('\n');
        out.push_str(p);
        out.push('\n');
        let mut table: Vec<[String; 9]> = vec![[
            "DAY".into(),
            "REQUESTS".into(),
            "PROMPT".into(),
            "COMPLETION".into(),
            "429s".into(),
            "FAILED".into(),
            "ROTATIONS".into(),
            "P50".into(),
            "P95".into(),
        ]];
        for r in report.rows.iter().filter(|r| &r.provider == p) {
            table.push([
                r.day.format("%a %Y-%m-%d").to_string(),
                r.requests.to_string(),
                r.prompt_tokens.to_string(),
                r.completion_tokens.to_string(),
                r.rate_limited.to_string(),
                r.failures.to_string(),
                r.rotations.to_string(),
                ms(r.p50_ms),
                ms(r.p95_ms),
            ]);
        }
        out.push_str(&crate::cli::text_table(&table));
    }
    out
}
