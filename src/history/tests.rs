//! Unit tests of the usage history: counting in memory, the database (retention with
//! injected time, corrupt files), and the daily report.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use super::report::{self, Query, QueryError};
use super::*;

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("time")
}

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn attempt(provider: &str, key_index: u32, model: &str) -> Attempt {
    let text = format!(
        "[[providers]]\nname = \"{provider}\"\nbase_url = \"http://127.0.0.1:9\"\nmodel = \"{model}\"\nrequires_key = false\n"
    );
    let config = crate::config::Config::parse(&text, None).expect("config");
    Attempt {
        provider: Arc::clone(&config.providers[0]),
        key: None,
        key_id: 1,
        key_index,
        key_label: "no key needed".into(),
        model: model.into(),
        mask: Arc::new(crate::upstream::scrub::KeyMask::new(None)),
    }
}

fn enabled() -> History {
    let h = History::new();
    h.shared().enabled.store(true, Ordering::Relaxed);
    h
}

fn pending(h: &History) -> Vec<(BucketId, Counts)> {
    let mut v = lock(&h.shared().pending).buckets.clone();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn counts(requests: u64) -> Counts {
    Counts {
        requests,
        ..Counts::default()
    }
}

#[test]
fn attempts_are_summed_per_hour_provider_key_and_model_in_memory() {
    let h = enabled();
    let a = attempt("groq", 0, "llama");
    let b = attempt("groq", 1, "llama");
    let ok = Outcome::Success { tokens: Some(3) };
    let limited = Outcome::RateLimited {
        retry_after: None,
        reason: "429".into(),
    };
    for _ in 0..3 {
        h.attempt(&a, &ok, Some(Duration::from_millis(150)), at(T0 + 10));
    }
    h.attempt(&a, &limited, None, at(T0 + 20));
    h.rotation(&a, at(T0 + 20));
    h.tokens(
        &a,
        Tokens {
            prompt: 5,
            completion: 7,
            total: 12,
        },
        at(T0 + 30),
    );
    h.attempt(&b, &ok, Some(Duration::from_secs(4)), at(T0 + 40));
    // The next hour is a row of its own.
    h.attempt(&a, &ok, Some(Duration::from_millis(50)), at(T0 + 3600));
    let rows = pending(&h);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let (id, c) = &rows[0];
    assert_eq!(
        (id.provider.as_str(), id.key, id.model.as_str()),
        ("groq", 0, "llama")
    );
    assert_eq!(id.hour, hour_of(at(T0)));
    assert_eq!(
        (
            c.requests,
            c.rate_limited,
            c.rotations,
            c.prompt_tokens,
            c.completion_tokens
        ),
        (4, 1, 1, 5, 7)
    );
    assert_eq!(
        c.latency_quantile(0.5),
        Some(200),
        "150 ms is in the 200 ms bucket"
    );
    assert_eq!(rows[1].0.key, 1);
    assert_eq!(rows[1].1.latency_quantile(0.95), Some(5_000));
    assert_eq!(rows[2].0.hour, hour_of(at(T0)) + 1);
}

#[test]
fn a_handle_without_a_store_records_nothing() {
    let h = History::new();
    h.attempt(
        &attempt("groq", 0, "m"),
        &Outcome::Success { tokens: None },
        None,
        at(T0),
    );
    assert!(pending(&h).is_empty());
}

#[test]
fn outcomes_count_as_requests_rate_limits_and_failures() {
    let of = |o: Outcome| {
        let c = Counts::of_outcome(&o);
        (c.requests, c.rate_limited, c.failures)
    };
    assert_eq!(of(Outcome::Success { tokens: None }), (1, 0, 0));
    assert_eq!(of(Outcome::Relayed { status: 400 }), (1, 0, 0));
    assert_eq!(
        of(Outcome::QuotaExhausted {
            until: at(T0),
            reason: "daily".into()
        }),
        (1, 1, 0)
    );
    let unreached = Outcome::Transient {
        reason: "connect".into(),
        reached: false,
    };
    assert_eq!(
        of(unreached),
        (0, 0, 1),
        "a connection error reached no one"
    );
    assert_eq!(
        of(Outcome::AuthFailed {
            reason: "401".into()
        }),
        (1, 0, 1)
    );
}

#[test]
fn latency_quantiles_are_bucket_upper_bounds() {
    let mut c = Counts::default();
    assert_eq!(c.latency_quantile(0.5), None);
    for ms in [90, 90, 90, 90, 90, 90, 90, 90, 90, 2_500] {
        c.add_latency(Duration::from_millis(ms));
    }
    assert_eq!(c.latency_quantile(0.5), Some(100));
    assert_eq!(c.latency_quantile(0.95), Some(3_000));
    c.add_latency(Duration::from_secs(600));
    assert_eq!(
        c.latency_quantile(1.0),
        Some(120_000),
        "slowest bucket: its lower bound"
    );
}

#[test]
fn too_many_distinct_buckets_are_dropped_and_counted_not_kept() {
    let mut p = Pending::default();
    for i in 0..MAX_PENDING_BUCKETS + 10 {
        let _ = p.slot(1, "groq", 0, &format!("model-{i}"));
    }
    assert_eq!(p.buckets.len(), MAX_PENDING_BUCKETS);
    assert_eq!(p.dropped, 10);
}

#[test]
fn rows_are_stored_merged_and_read_back() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::create(&file(dir.path())).expect("store");
    let id = |hour, model: &str| BucketId {
        hour,
        provider: "groq".into(),
        key: 0,
        model: model.into(),
    };
    store
        .add(&[(id(10, "a"), counts(2)), (id(11, "a"), counts(1))])
        .expect("add");
    let mut more = counts(3);
    more.add_latency(Duration::from_millis(700));
    store.add(&[(id(10, "a"), more)]).expect("add");
    let rows = store.rows_since(10).expect("rows");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].1.requests, 5, "merged into the same row");
    assert_eq!(rows[0].1.latency_quantile(0.5), Some(750));
    assert_eq!(store.rows_since(11).expect("rows").len(), 1);
    drop(store);
    // Reopened: still there.
    let store = Store::open_existing(&file(dir.path())).expect("reopen");
    assert_eq!(store.rows_since(0).expect("rows").len(), 2);
}

#[test]
fn pruning_drops_rows_older_than_ninety_days_at_the_injected_now() {
    let dir = tempfile::tempdir().expect("dir");
    let store = Store::create(&file(dir.path())).expect("store");
    let now = at(T0 + 100 * 86_400);
    let day = |d: i64| hour_of(now - chrono::Duration::days(d));
    let row = |hour| {
        (
            BucketId {
                hour,
                provider: "groq".into(),
                key: 0,
                model: "m".into(),
            },
            counts(1),
        )
    };
    store
        .add(&[row(day(120)), row(day(91)), row(day(89)), row(day(0))])
        .expect("add");
    let cutoff = retention_cutoff(now);
    assert_eq!(cutoff, hour_of(now) - 90 * 24);
    assert_eq!(store.prune(cutoff).expect("prune"), 2);
    let left: Vec<u64> = store
        .rows_since(0)
        .expect("rows")
        .iter()
        .map(|(id, _)| id.hour)
        .collect();
    assert_eq!(left, [day(89), day(0)]);
    // A day later, the 89-day-old row is 90 days and one hour old... once it passes.
    let later = now + chrono::Duration::days(1) + chrono::Duration::hours(1);
    assert_eq!(store.prune(retention_cutoff(later)).expect("prune"), 1);
}

#[test]
fn a_corrupt_database_is_moved_aside_and_a_fresh_one_created() {
    let dir = tempfile::tempdir().expect("dir");
    let path = file(dir.path());
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&path, &garbage).expect("write");
    let now = at(T0);
    match writer::open(dir.path(), now) {
        writer::Opened::Ok {
            store,
            moved_aside: Some((aside, _why)),
        } => {
            assert_eq!(std::fs::read(&aside).expect("aside"), garbage);
            let name = aside.file_name().map(|n| n.to_string_lossy().into_owned());
            assert_eq!(
                name.as_deref(),
                Some("history.redb.corrupt-20260101T000000Z")
            );
            assert!(store.rows_since(0).expect("rows").is_empty());
        }
        other => panic!("not moved aside: {other:?}"),
    }
    // The fresh one opens cleanly next time.
    assert!(matches!(
        writer::open(dir.path(), now),
        writer::Opened::Ok {
            moved_aside: None,
            ..
        }
    ));
}

#[test]
fn a_database_open_elsewhere_is_busy_not_corrupt() {
    let dir = tempfile::tempdir().expect("dir");
    let _held = Store::create(&file(dir.path())).expect("store");
    assert!(matches!(
        Store::open_existing(&file(dir.path())),
        Err(HistoryError::InUse { .. })
    ));
}

#[test]
fn the_writer_stores_what_gathered_and_stop_flushes_the_rest() {
    let dir = tempfile::tempdir().expect("dir");
    let h = History::new();
    let w = writer::start(&h, dir.path());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !h.enabled() {
        assert!(std::time::Instant::now() < deadline, "never opened");
        std::thread::sleep(Duration::from_millis(5));
    }
    let a = attempt("groq", 0, "m");
    for _ in 0..5 {
        h.attempt(&a, &Outcome::Success { tokens: None }, None, Utc::now());
    }
    let rows = h.rows_since(0).expect("rows");
    assert_eq!(rows.iter().map(|(_, c)| c.requests).sum::<u64>(), 5);
    h.attempt(&a, &Outcome::Success { tokens: None }, None, Utc::now());
    w.stop();
    drop(h);
    let store = Store::open_existing(&file(dir.path())).expect("reopen");
    let total: u64 = store
        .rows_since(0)
        .expect("rows")
        .iter()
        .map(|(_, c)| c.requests)
        .sum();
    assert_eq!(total, 6);
}

fn d(s: &str) -> NaiveDate {
    s.parse().expect("date")
}

#[test]
fn the_report_has_a_row_per_provider_and_day_with_empty_days_included() {
    let id = |hour, provider: &str| BucketId {
        hour,
        provider: provider.into(),
        key: 0,
        model: "m".into(),
    };
    // Hour h belongs to day 2026-01-(1 + h / 24).
    let day_of = |h: u64| d("2026-01-01") + chrono::Days::new(h / 24);
    let rows = vec![
        (id(0, "groq"), counts(100)), // too old for 3 days ending on the 5th
        (id(2 * 24, "groq"), counts(4)),
        (id(2 * 24 + 5, "groq"), counts(1)),
        (id(4 * 24, "groq"), counts(2)),
        (id(4 * 24, "old-provider"), counts(9)),
    ];
    let q = Query::parse(Some("3"), None).expect("query");
    let configured = vec!["gemini".to_string(), "groq".to_string()];
    let r = report::daily(&rows, &q, d("2026-01-05"), day_of, &configured);
    assert_eq!(r.providers, ["gemini", "groq", "old-provider"]);
    assert_eq!((r.from, r.to), (d("2026-01-03"), d("2026-01-05")));
    let groq: Vec<(NaiveDate, u64)> = r
        .rows
        .iter()
        .filter(|r| r.provider == "groq")
        .map(|r| (r.day, r.requests))
        .collect();
    assert_eq!(
        groq,
        [
            (d("2026-01-03"), 5),
            (d("2026-01-04"), 0),
            (d("2026-01-05"), 2)
        ]
    );
    assert_eq!(r.rows.len(), 9);
    let only = Query::parse(Some("3"), Some("groq")).expect("query");
    let r = report::daily(&rows, &only, d("2026-01-05"), day_of, &configured);
    assert_eq!(r.providers, ["groq"]);
    let text = report::text(&r);
    assert!(text.contains("█▁▄"), "{text}");
    assert!(text.contains("Mon 2026-01-05"), "{text}");
}

#[test]
fn bad_questions_are_refused_with_words() {
    assert_eq!(Query::parse(None, None).expect("default").days, 7);
    for bad in ["0", "91", "-1", "seven"] {
        let e = Query::parse(Some(bad), None).expect_err(bad);
        assert!(e.to_string().contains("from 1 to 90"), "{e}");
    }
    let q = Query::parse(Some("2"), Some("nope")).expect("query");
    let known = vec!["groq".to_string()];
    assert_eq!(
        q.check_provider(&known),
        Err(QueryError::UnknownProvider {
            name: "nope".into(),
            known: "groq".into()
        })
    );
}

#[test]
fn sparklines_scale_to_the_busiest_day_and_show_any_traffic() {
    assert_eq!(report::sparkline(&[0, 0, 0]), "▁▁▁");
    assert_eq!(report::sparkline(&[0, 1, 50, 100]), "▁▂▅█");
    assert_eq!(report::sparkline(&[]), "");
}
