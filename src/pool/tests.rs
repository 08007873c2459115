use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::config::{Config, ProviderConfig};
use crate::secrets::{ApiKey, KeyOrigin, ProviderKey};

fn provider(name: &str, priority: u32, models: &[&str]) -> Arc<ProviderConfig> {
    Arc::new(ProviderConfig {
        name: name.into(),
        base_url: format!("http://127.0.0.1:1/{name}"),
        chat_url: reqwest::Url::parse(&format!("http://127.0.0.1:1/{name}/chat/completions"))
            .expect("url"),
        model: format!("{name}-default"),
        preferred: vec![format!("{name}-default")],
        models: models.iter().map(|m| (*m).to_string()).collect(),
        list_all_models: false,
        embedding_models: vec![],
        legacy_completions: false,
        priority,
        enabled: true,
        api_key_env: vec![],
        requires_key: true,
        quirks: crate::config::quirks::Quirks::defaults(
            crate::config::quirks::ProviderKind::Generic,
        ),
        limits: Default::default(),
    })
}

fn key(text: &str) -> ProviderKey {
    ProviderKey {
        key: ApiKey::new(text).expect("key"),
        origin: KeyOrigin::Env("X".into()),
    }
}

fn keys(list: &[(&str, &[&str])]) -> HashMap<String, Vec<ProviderKey>> {
    list.iter()
        .map(|(p, ks)| ((*p).to_string(), ks.iter().map(|k| key(k)).collect()))
        .collect()
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
        .single()
        .expect("time")
}

fn routing() -> crate::config::RoutingConfig {
    Config::builtin().expect("builtin").routing
}

fn pool(ps: &[Arc<ProviderConfig>], ks: &HashMap<String, Vec<ProviderKey>>) -> Pool {
    Pool::new(ps, ks, routing(), t0())
}

#[test]
fn lower_priority_number_is_tried_first() {
    let ps = [provider("b", 2, &[]), provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"]), ("b", &["kb"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    assert_eq!(a.provider.name, "a");
    assert_eq!(a.model, "a-default");
    let b = pool.pick(&Route::Any, &[a.key_id], t0()).expect("pick");
    assert_eq!(b.provider.name, "b");
    assert!(pool
        .pick(&Route::Any, &[a.key_id, b.key_id], t0())
        .is_none());
}

#[test]
fn equal_priorities_share_load_round_robin() {
    let ps = [provider("a", 1, &[]), provider("b", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"]), ("b", &["kb"])]));
    let names: Vec<String> = (0..4)
        .map(|_| {
            pool.pick(&Route::Any, &[], t0())
                .expect("pick")
                .provider
                .name
                .clone()
        })
        .collect();
    assert_eq!(names, ["a", "b", "a", "b"]);
}

#[test]
fn providers_without_keys_or_disabled_are_skipped() {
    let ps = [
        provider("a", 1, &[]),
        provider("b", 2, &[]),
        provider("c", 3, &[]),
    ];
    let pool = pool(&ps, &keys(&[("b", &["kb"]), ("c", &["kc"])]));
    assert!(pool.set_enabled("b", false));
    assert_eq!(
        pool.pick(&Route::Any, &[], t0())
            .expect("pick")
            .provider
            .name,
        "c"
    );
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::NoKey);
    assert_eq!(snap.providers[1].state, ProviderStateKind::Disabled);
    assert_eq!(snap.providers[2].state, ProviderStateKind::Ready);
    assert!(!pool.set_enabled("nope", true));
}

#[test]
fn rate_limit_cools_down_for_exactly_the_hint() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"]), ("b", &["kb"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &a,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(37)),
            reason: "429".into(),
        },
        t0(),
    );
    let later = t0() + chrono::Duration::seconds(36);
    assert_eq!(
        pool.pick(&Route::Any, &[], later)
            .expect("pick")
            .provider
            .name,
        "b"
    );
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::CoolingDown);
    assert_eq!(snap.providers[0].cooldown_remaining_secs, 37);
    assert_eq!(
        snap.providers[0].rate_limited_until.as_deref(),
        Some("2026-11-27T12:00:37Z")
    );
    assert_eq!(snap.providers[0].request_count, 1);
    let after = t0() + chrono::Duration::seconds(37);
    assert_eq!(
        pool.pick(&Route::Any, &[], after)
            .expect("pick")
            .provider
            .name,
        "a"
    );
}

#[test]
fn hintless_rate_limits_grow_and_cap() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"])]));
    let mut now = t0();
    let mut waits = vec![];
    for _ in 0..8 {
        let a = pool.pick(&Route::Any, &[], now).expect("pick");
        let outcome = Outcome::RateLimited {
            retry_after: None,
            reason: "429".into(),
        };
        pool.report(&a, &outcome, now);
        let s = pool.snapshot(now);
        waits.push(s.providers[0].cooldown_remaining_secs);
        now += chrono::Duration::seconds(
            i64::try_from(s.providers[0].cooldown_remaining_secs).expect("fits"),
        );
    }
    assert_eq!(waits, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
}

#[test]
fn auth_failure_benches_until_reenabled_or_key_changes() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &a,
        &Outcome::AuthFailed {
            reason: "401".into(),
        },
        t0(),
    );
    assert!(pool.pick(&Route::Any, &[], t0()).is_none());
    assert_eq!(
        pool.snapshot(t0()).providers[0].state,
        ProviderStateKind::AuthFailed
    );
    assert!(matches!(
        pool.unavailable(&Route::Any, t0()),
        Unavailable::NoneUsable { .. }
    ));
    // A new key makes it eligible again.
    pool.apply_keys(&keys(&[("a", &["ka2"])]), t0());
    assert!(pool.pick(&Route::Any, &[], t0()).is_some());
}

#[test]
fn several_keys_rotate_and_cool_down_on_their_own() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(
        &ps,
        &keys(&[("a", &["key-one-0000000000000", "key-two-0000000000000"])]),
    );
    let first = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &first,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(10)),
            reason: "429".into(),
        },
        t0(),
    );
    let second = pool.pick(&Route::Any, &[first.key_id], t0()).expect("pick");
    assert_ne!(first.key_id, second.key_id);
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::Ready);
    assert_eq!(snap.providers[0].keys[0].state, "cooling_down");
    assert!(!format!("{snap:?}").contains("key-one"));
}

#[test]
fn all_cooling_reports_time_to_first_ready() {
    let ps = [provider("a", 1, &[]), provider("b", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"]), ("b", &["kb"])]));
    for secs in [30, 12] {
        let at = pool.pick(&Route::Any, &[], t0()).expect("pick");
        pool.report(
            &at,
            &Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(secs)),
                reason: "429".into(),
            },
            t0(),
        );
    }
    match pool.unavailable(&Route::Any, t0()) {
        Unavailable::AllCooling {
            retry_after,
            states,
        } => {
            assert_eq!(retry_after, Duration::from_secs(12));
            assert_eq!(states.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn routes_follow_the_requested_model() {
    let ps = vec![
        provider("groq", 1, &["llama-8b", "openai/gpt-oss"]),
        provider("openai", 2, &["gpt-4"]),
    ];
    assert_eq!(route_for(None, &ps), Route::Any);
    assert_eq!(route_for(Some("auto"), &ps), Route::Any);
    assert_eq!(route_for(Some("unknown-model"), &ps), Route::Any);
    assert_eq!(route_for(Some("gpt-4"), &ps), Route::Model("gpt-4".into()));
    // A listed model id wins over a provider-name prefix.
    assert_eq!(
        route_for(Some("openai/gpt-oss"), &ps),
        Route::Model("openai/gpt-oss".into())
    );
    assert_eq!(
        route_for(Some("openai/gpt-5"), &ps),
        Route::Pinned {
            provider: "openai".into(),
            model: "gpt-5".into()
        }
    );
    let pool = pool(&ps, &keys(&[("groq", &["k1"]), ("openai", &["k2"])]));
    let a = pool
        .pick(&Route::Model("gpt-4".into()), &[], t0())
        .expect("pick");
    assert_eq!(
        (a.provider.name.as_str(), a.model.as_str()),
        ("openai", "gpt-4")
    );
}

#[test]
fn requests_today_roll_over_at_local_midnight() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(&a, &Outcome::Success { tokens: Some(7) }, t0());
    assert_eq!(pool.snapshot(t0()).providers[0].request_count, 1);
    let tomorrow = t0() + chrono::Duration::hours(24);
    let s = pool.snapshot(tomorrow);
    assert_eq!(s.providers[0].request_count, 0);
    assert_eq!(s.providers[0].total_requests, 1);
    assert_eq!(s.providers[0].total_tokens_used, 7);
}

#[test]
fn reload_keeps_state_by_name_and_drops_removed_providers() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let ks = keys(&[("a", &["ka"]), ("b", &["kb"])]);
    let pool = pool(&ps, &ks);
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &a,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(100)),
            reason: "429".into(),
        },
        t0(),
    );
    let mut a2 = (*ps[0]).clone();
    a2.model = "new-model".into();
    pool.apply(&[Arc::new(a2)], &ks, routing(), t0());
    let s = pool.snapshot(t0());
    assert_eq!(s.providers.len(), 1);
    assert_eq!(s.providers[0].model, "new-model");
    assert_eq!(s.providers[0].state, ProviderStateKind::CoolingDown);
    assert_eq!(s.providers[0].request_count, 1);
}

#[test]
fn records_round_trip_without_the_key() {
    let ps = [provider("a", 1, &[])];
    let ks = keys(&[("a", &["super-secret-key-123456"])]);
    let pool1 = pool(&ps, &ks);
    let a = pool1.pick(&Route::Any, &[], t0()).expect("pick");
    pool1.report(
        &a,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(100)),
            reason: "429".into(),
        },
        t0(),
    );
    pool1.set_enabled("a", false);
    let records = pool1.records(t0());
    let text = serde_json::to_string(&records).expect("json");
    assert!(!text.contains("super-secret"));
    let pool2 = pool(&ps, &ks);
    pool2.restore(&records, t0() + chrono::Duration::seconds(10));
    let s = pool2.snapshot(t0() + chrono::Duration::seconds(10));
    assert!(!s.providers[0].enabled);
    assert_eq!(s.providers[0].request_count, 1);
    let restored = pool2.records(t0() + chrono::Duration::seconds(10));
    let key = restored["a"].keys.values().next().expect("key record");
    assert_eq!(
        key.cooldown_until,
        Some(t0() + chrono::Duration::seconds(100)),
        "the cooldown survives"
    );
    // Enabling it by hand is the user saying "try it now": the cooldown goes.
    pool2.set_enabled("a", true);
    let s = pool2.snapshot(t0() + chrono::Duration::seconds(10));
    assert_eq!(s.providers[0].cooldown_remaining_secs, 0);
    assert_eq!(s.providers[0].state, ProviderStateKind::Ready);
}

fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    chrono::Local
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .earliest()
        .expect("local time")
        .with_timezone(&Utc)
}

#[test]
fn requests_today_roll_over_at_local_midnight_in_status_and_records_alike() {
    let ps = [provider("a", 1, &[])];
    let ks = keys(&[("a", &["ka"])]);
    let before = local(2026, 11, 27, 23, 59, 58);
    let pool = Pool::new(&ps, &ks, routing(), before);
    let a = pool.pick(&Route::Any, &[], before).expect("pick");
    pool.report(&a, &Outcome::Success { tokens: Some(9) }, before);

    let still_today = local(2026, 11, 27, 23, 59, 59);
    assert_eq!(pool.snapshot(still_today).providers[0].request_count, 1);
    let r = &pool.records(still_today)["a"];
    assert_eq!((r.day, r.request_count), (Some(local_day(still_today)), 1));

    // Nothing happens at midnight itself: the next look rolls the day over.
    let after = local(2026, 11, 28, 0, 0, 1);
    let s = pool.snapshot(after);
    assert_eq!(s.providers[0].request_count, 0);
    assert_eq!(s.providers[0].keys[0].request_count, 0);
    assert_eq!(s.providers[0].total_requests, 1);
    assert_eq!(s.providers[0].total_tokens_used, 9);
    let r = &pool.records(after)["a"];
    assert_eq!(r.day, Some(local_day(after)));
    assert_ne!(r.day, Some(local_day(still_today)));
    assert_eq!(
        (r.request_count, r.total_requests, r.total_tokens),
        (0, 1, 9)
    );
    assert!(r.keys.values().all(|k| k.request_count == 0));
}

#[test]
fn records_saved_yesterday_restore_with_no_requests_today() {
    let ps = [provider("a", 1, &[])];
    let ks = keys(&[("a", &["ka"])]);
    let evening = local(2026, 11, 27, 22, 0, 0);
    let pool1 = Pool::new(&ps, &ks, routing(), evening);
    let a = pool1.pick(&Route::Any, &[], evening).expect("pick");
    pool1.report(&a, &Outcome::Success { tokens: Some(3) }, evening);
    let saved = pool1.records(evening);

    let same_evening = local(2026, 11, 27, 23, 0, 0);
    let pool2 = Pool::new(&ps, &ks, routing(), same_evening);
    pool2.restore(&saved, same_evening);
    assert_eq!(pool2.snapshot(same_evening).providers[0].request_count, 1);

    let morning = local(2026, 11, 28, 8, 0, 0);
    let pool3 = Pool::new(&ps, &ks, routing(), morning);
    pool3.restore(&saved, morning);
    let s = pool3.snapshot(morning);
    assert_eq!(s.providers[0].request_count, 0);
    assert_eq!(s.providers[0].total_requests, 1);
    assert_eq!(s.providers[0].total_tokens_used, 3);
}

#[test]
fn a_changed_base_url_clears_auth_failed_and_cooldowns_but_keeps_counters() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let ks = keys(&[("a", &["ka"]), ("b", &["kb"])]);
    let pool = pool(&ps, &ks);
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &a,
        &Outcome::AuthFailed {
            reason: "401".into(),
        },
        t0(),
    );
    let b = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &b,
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(600)),
            reason: "429".into(),
        },
        t0(),
    );
    // Same base_url: both stay benched.
    pool.apply(&ps, &ks, routing(), t0());
    let s = pool.snapshot(t0());
    assert_eq!(s.providers[0].state, ProviderStateKind::AuthFailed);
    assert_eq!(s.providers[1].state, ProviderStateKind::CoolingDown);

    let moved: Vec<Arc<ProviderConfig>> = ps
        .iter()
        .map(|p| {
            let mut c = (**p).clone();
            c.base_url = format!("{}-moved", c.base_url);
            Arc::new(c)
        })
        .collect();
    pool.apply(&moved, &ks, routing(), t0());
    let s = pool.snapshot(t0());
    assert_eq!(s.providers[0].state, ProviderStateKind::Ready);
    assert_eq!(s.providers[1].state, ProviderStateKind::Ready);
    assert_eq!(s.providers[0].total_requests, 1);
    assert_eq!(s.providers[1].request_count, 1);
}

#[test]
fn a_used_up_daily_quota_benches_the_key_until_the_reset_and_survives_a_restart() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let ks = keys(&[("a", &["ka"]), ("b", &["kb"])]);
    let pool1 = pool(&ps, &ks);
    let a = pool1.pick(&Route::Any, &[], t0()).expect("pick");
    let until = t0() + chrono::Duration::hours(20);
    pool1.report(
        &a,
        &Outcome::QuotaExhausted {
            until,
            reason: "HTTP 429: per day".into(),
        },
        t0(),
    );
    let snap = pool1.snapshot(t0());
    let st = &snap.providers[0];
    assert_eq!(st.state, ProviderStateKind::CoolingDown);
    let local = until.with_timezone(&Local).format("%H:%M").to_string();
    assert_eq!(
        st.cooldown_reason.as_deref(),
        Some(format!("daily quota used, back at {local}").as_str())
    );
    assert_eq!(st.last_error.as_deref(), Some("HTTP 429: per day"));
    let later = t0() + chrono::Duration::hours(19);
    assert_eq!(
        pool1
            .pick(&Route::Any, &[], later)
            .expect("pick")
            .provider
            .name,
        "b"
    );
    match pool1.unavailable(
        &Route::Pinned {
            provider: "a".into(),
            model: "m".into(),
        },
        t0(),
    ) {
        Unavailable::AllCooling {
            retry_after,
            states,
        } => {
            assert_eq!(retry_after, Duration::from_secs(20 * 3600));
            assert!(
                states[0].starts_with("a: daily quota used, back at"),
                "{states:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A restart restores the bench from the persisted record.
    let pool2 = pool(&ps, &ks);
    pool2.restore(&pool1.records(t0()), later);
    assert_eq!(
        pool2
            .pick(&Route::Any, &[], later)
            .expect("pick")
            .provider
            .name,
        "b"
    );
    assert_eq!(
        pool2
            .pick(&Route::Any, &[], until)
            .expect("pick")
            .provider
            .name,
        "a"
    );
}

#[test]
fn proactive_bench_counts_no_request_and_never_shortens_a_cooldown() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    let long = t0() + chrono::Duration::minutes(10);
    pool.bench(&a, long, false, t0());
    pool.bench(&a, t0() + chrono::Duration::minutes(1), true, t0());
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].cooldown_remaining_secs, 600);
    assert_eq!(snap.providers[0].request_count, 0);
    assert!(snap.providers[0]
        .cooldown_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("request allowance used up")));
    assert!(pool.pick(&Route::Any, &[], long).is_some());
}

#[test]
fn keys_whose_token_window_cannot_fit_the_request_are_passed_over_while_others_can() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka"]), ("b", &["kb"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    let reset = t0() + chrono::Duration::seconds(40);
    let budget = crate::upstream::limits::Budget {
        tokens: Some((800, reset)),
        ..Default::default()
    };
    pool.note_limits(&a, &budget, t0());
    let name = |need: Option<u64>, now| {
        pool.pick_for(&Route::Any, &[], need, now)
            .expect("pick")
            .provider
            .name
            .clone()
    };
    assert_eq!(name(Some(500), t0()), "a");
    assert_eq!(name(Some(1000), t0()), "b");
    assert_eq!(name(None, t0()), "a");
    assert_eq!(name(Some(1000), reset), "a", "the window refilled");
    // When no key fits, any usable key is still tried.
    let only_a = Route::Pinned {
        provider: "a".into(),
        model: "m".into(),
    };
    assert!(pool.pick_for(&only_a, &[], Some(1000), t0()).is_some());
}

#[test]
fn token_counters_saturate_instead_of_wrapping() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["k1"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(
        &a,
        &Outcome::Success {
            tokens: Some(u64::MAX - 5),
        },
        t0(),
    );
    pool.add_tokens(&a, 100, t0());
    pool.report(
        &a,
        &Outcome::Success {
            tokens: Some(u64::MAX),
        },
        t0(),
    );
    let s = pool.snapshot(t0());
    assert_eq!(s.providers[0].total_tokens_used, u64::MAX);
    let saved = pool.records(t0());
    assert_eq!(
        saved["a"].total_tokens,
        u64::MAX,
        "the saturated value is what persists"
    );
}

/// One key per provider a–e, each put on a different kind of hold.
fn held_pool() -> Pool {
    let ps = [
        provider("hinted", 1, &[]),
        provider("guessed", 2, &[]),
        provider("flaky", 3, &[]),
        provider("benched", 4, &[]),
        provider("billing", 5, &[]),
    ];
    let pool = pool(
        &ps,
        &keys(&[
            ("hinted", &["k1"]),
            ("guessed", &["k2"]),
            ("flaky", &["k3"]),
            ("benched", &["k4"]),
            ("billing", &["k5"]),
        ]),
    );
    let pick = |name: &str| {
        pool.pick(
            &Route::Pinned {
                provider: name.into(),
                model: "m".into(),
            },
            &[],
            t0(),
        )
        .expect("pick")
    };
    let reason = || "why".to_string();
    pool.report(
        &pick("hinted"),
        &Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
            reason: reason(),
        },
        t0(),
    );
    pool.report(
        &pick("guessed"),
        &Outcome::RateLimited {
            retry_after: None,
            reason: reason(),
        },
        t0(),
    );
    pool.report(
        &pick("flaky"),
        &Outcome::Transient {
            reason: reason(),
            reached: true,
        },
        t0(),
    );
    pool.bench(
        &pick("benched"),
        t0() + chrono::Duration::hours(10),
        true,
        t0(),
    );
    pool.report(
        &pick("billing"),
        &Outcome::PaymentRequired { reason: reason() },
        t0(),
    );
    pool
}

fn cooling_names(pool: &Pool, now: DateTime<Utc>) -> Vec<String> {
    pool.snapshot(now)
        .providers
        .iter()
        .filter(|p| p.state == ProviderStateKind::CoolingDown)
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn waking_from_sleep_ends_our_own_cooldowns_and_keeps_the_providers_waits() {
    let pool = held_pool();
    let now = t0() + chrono::Duration::seconds(5);
    assert_eq!(
        cooling_names(&pool, now),
        ["hinted", "guessed", "flaky", "benched", "billing"]
    );
    assert_eq!(pool.woke(now), 2);
    assert_eq!(cooling_names(&pool, now), ["hinted", "benched", "billing"]);
    // Nothing left to free: a second wake changes nothing.
    assert_eq!(pool.woke(now), 0);
}

#[test]
fn the_kind_of_hold_survives_a_restart_so_a_later_wake_still_tells_them_apart() {
    let pool = held_pool();
    let records = pool.records(t0());
    let ps: Vec<_> = pool.configs();
    let ks = keys(&[
        ("hinted", &["k1"]),
        ("guessed", &["k2"]),
        ("flaky", &["k3"]),
        ("benched", &["k4"]),
        ("billing", &["k5"]),
    ]);
    let restarted = Pool::new(&ps, &ks, routing(), t0());
    restarted.restore(&records, t0());
    assert_eq!(restarted.woke(t0()), 2);
}

#[test]
fn a_reset_ends_every_cooldown_and_bench_of_that_provider_only() {
    let pool = held_pool();
    let snap = pool.reset("benched", t0()).expect("known");
    assert_eq!(snap.state, ProviderStateKind::Ready);
    assert_eq!(snap.last_error, None);
    assert!(pool.reset("nope", t0()).is_none());
    assert_eq!(
        cooling_names(&pool, t0()),
        ["hinted", "guessed", "flaky", "billing"]
    );
    for name in ["hinted", "guessed", "flaky", "billing"] {
        pool.reset(name, t0());
    }
    assert!(cooling_names(&pool, t0()).is_empty());
}

fn limited(name: &str, limits: crate::config::Limits) -> Arc<ProviderConfig> {
    let mut p = (*provider(name, 1, &[])).clone();
    p.limits = limits;
    Arc::new(p)
}

#[test]
fn a_configured_daily_limit_counts_down_and_rests_the_key_when_reached() {
    let limits = crate::config::Limits {
        requests_per_day: Some(3),
        ..Default::default()
    };
    let ps = [limited("a", limits), provider("b", 2, &[])];
    let pool = pool(&ps, &keys(&[("a", &["k1"]), ("b", &["kb"])]));
    let ok = Outcome::Success { tokens: Some(10) };
    for left in [2, 1] {
        let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
        assert_eq!(a.provider.name, "a");
        pool.report(&a, &ok, t0());
        let snap = pool.snapshot(t0());
        let d = snap.providers[0].headroom.requests_today.expect("known");
        assert_eq!(d.left, left);
        assert_eq!(d.source, crate::headroom::Source::Config);
        assert_eq!(d.resets_at, crate::headroom::day_bounds(t0()).1);
        assert_eq!(snap.providers[0].keys[0].headroom.requests_today, Some(d));
        assert_eq!(snap.headroom.requests_left_today, Some(left));
        assert_eq!(snap.headroom.providers, 1);
    }
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    pool.report(&a, &ok, t0());
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::CoolingDown);
    assert!(snap.providers[0]
        .cooldown_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("daily quota used")));
    assert_eq!(
        pool.pick(&Route::Any, &[], t0())
            .expect("pick")
            .provider
            .name,
        "b"
    );
    // Nothing left, so no forecast either.
    assert_eq!(snap.providers[0].runs_out_at, None);
}

#[test]
fn the_latest_header_reading_is_kept_per_key_and_counted_down_by_what_is_sent_since() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["k1"])]));
    let a = pool.pick(&Route::Any, &[], t0()).expect("pick");
    let reset = t0() + chrono::Duration::hours(3);
    let budget = crate::upstream::limits::Budget {
        reading: crate::headroom::Reading {
            requests_day: Some(crate::headroom::Slot {
                remaining: 500,
                reset,
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    // Headers first, then the answer they came with is reported; then one more.
    pool.note_limits(&a, &budget, t0());
    pool.report(&a, &Outcome::Success { tokens: None }, t0());
    let snap = pool.snapshot(t0());
    assert_eq!(
        snap.providers[0].headroom.requests_today.map(|d| d.left),
        Some(500)
    );
    pool.report(&a, &Outcome::Success { tokens: None }, t0());
    let snap = pool.snapshot(t0());
    let p = &snap.providers[0];
    let d = p.headroom.requests_today.expect("known");
    assert_eq!((d.left, d.resets_at), (499, reset));
    assert_eq!(d.source, crate::headroom::Source::Provider);
    assert_eq!(
        p.keys[0].headroom_read_at.as_deref(),
        Some("2026-11-27T12:00:00Z")
    );
    // Past its reset, the reading says nothing more.
    let later = reset + chrono::Duration::seconds(1);
    assert!(pool.snapshot(later).providers[0].headroom.is_empty());
}

#[test]
fn another_machines_cooldown_applies_only_when_it_ends_later_and_never_to_other_keys() {
    let ps = [provider("a", 1, &[]), provider("b", 2, &[])];
    let pool = pool(
        &ps,
        &keys(&[("a", &["ka-1111111111"]), ("b", &["kb-2222222222"])]),
    );
    let id = shared_key_id(&ApiKey::new("ka-1111111111").expect("key"));
    let hold = |secs: i64| Remote::Hold {
        key: id.clone(),
        hold: SharedHold {
            hold: Hold::RateLimit,
            cause: None,
            until: t0() + chrono::Duration::seconds(secs),
        },
        machine: "desk".into(),
    };
    assert!(pool.apply_shared(&hold(60), t0()));
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::CoolingDown);
    assert!(snap.providers[0]
        .cooldown_reason
        .as_deref()
        .is_some_and(|r| r.contains("desk")));
    assert_eq!(snap.providers[1].state, ProviderStateKind::Ready);
    assert!(
        !pool.apply_shared(&hold(30), t0()),
        "an earlier end changes nothing"
    );
    assert!(
        !pool.apply_shared(&hold(-1), t0()),
        "an ended one changes nothing"
    );
    // What the pool shares back is the same cooldown, so it is not news to anyone.
    let facts = pool.shared_facts(t0());
    let a = facts.keys.iter().find(|k| k.id == id).expect("key a");
    assert_eq!(
        a.hold.map(|h| h.until),
        Some(t0() + chrono::Duration::seconds(60))
    );
}

#[test]
fn other_machines_counts_are_measured_against_configured_limits() {
    let mut cfg = (*provider("a", 1, &[])).clone();
    cfg.limits.requests_per_day = Some(10);
    let ps = [Arc::new(cfg)];
    let pool = pool(&ps, &keys(&[("a", &["ka-1111111111"])]));
    pool.set_shared_status(SharedStatus {
        pool: "p".into(),
        server: "redis://x:6379".into(),
        online: true,
        since: t0(),
        error: None,
        machines: vec![],
    });
    let id = shared_key_id(&ApiKey::new("ka-1111111111").expect("key"));
    let day = t0().with_timezone(&Local).date_naive();
    assert!(pool.apply_shared(
        &Remote::Others {
            key: id,
            day,
            requests: 7,
            tokens: 0
        },
        t0()
    ));
    let snap = pool.snapshot(t0());
    let p = &snap.providers[0];
    assert_eq!(p.request_count, 0);
    assert_eq!(p.request_count_all_machines, Some(7));
    assert_eq!(p.headroom.requests_today.map(|d| d.left), Some(3));
    assert_eq!(p.keys[0].requests_all_machines, Some(7));
}

#[test]
fn keys_freed_by_hand_are_told_to_the_shared_pool_only_when_there_is_one() {
    let ps = [provider("a", 1, &[])];
    let pool = pool(&ps, &keys(&[("a", &["ka-1111111111"])]));
    pool.reset("a", t0());
    assert!(pool.shared_facts(t0()).freed.is_empty());
    pool.set_shared_status(SharedStatus {
        pool: "p".into(),
        server: "s".into(),
        online: true,
        since: t0(),
        error: None,
        machines: vec![],
    });
    pool.set_enabled("a", true);
    let freed = pool.shared_facts(t0()).freed;
    assert_eq!(freed.len(), 1);
    assert!(freed[0].rejection);
    assert!(pool.shared_facts(t0()).freed.is_empty(), "drained");
}

#[test]
fn a_model_retired_on_another_machine_is_skipped_here_only_on_the_same_endpoint() {
    let a = provider("a", 1, &[]);
    let ps = [Arc::clone(&a), provider("b", 2, &[])];
    let pool = pool(
        &ps,
        &keys(&[("a", &["ka-1111111111"]), ("b", &["kb-2222222222"])]),
    );
    let retired = |endpoint: String| Remote::Retired {
        endpoint,
        model: "a-default".into(),
        machine: "desk".into(),
    };
    assert!(!pool.apply_shared(&retired(endpoint_id("https://elsewhere/v1")), t0()));
    assert!(pool.apply_shared(&retired(endpoint_id(&a.base_url)), t0()));
    let snap = pool.snapshot(t0());
    assert_eq!(snap.providers[0].state, ProviderStateKind::ModelRetired);
    assert_eq!(snap.providers[1].state, ProviderStateKind::Ready);
    assert_eq!(
        pool.shared_facts(t0()).retired,
        vec![(endpoint_id(&a.base_url), "a-default".to_string())]
    );
}

#[test]
fn a_cooldowns_cause_is_kept_as_data_across_a_restart_and_older_files_keep_their_words() {
    let ps = [provider("a", 1, &[])];
    let ks = keys(&[("a", &["ka-1111111111"])]);
    let pool1 = pool(&ps, &ks);
    let a = pool1.pick(&Route::Any, &[], t0()).expect("pick");
    let until = t0() + chrono::Duration::hours(3);
    pool1.report(
        &a,
        &Outcome::QuotaExhausted {
            until,
            reason: "per day limit".into(),
        },
        t0(),
    );
    let snap = pool1.snapshot(t0());
    assert_eq!(
        snap.providers[0].cooldown_cause,
        Some(CauseKind::DailyQuota)
    );
    assert_eq!(
        snap.providers[0].last_error_kind,
        Some(CauseKind::DailyQuota)
    );
    let words = snap.providers[0].cooldown_reason.clone().expect("words");
    assert!(words.starts_with("daily quota used"), "{words}");

    let mut records = pool1.records(t0());
    let pool2 = pool(&ps, &ks);
    pool2.restore(&records, t0());
    let again = pool2.snapshot(t0());
    assert_eq!(
        again.providers[0].cooldown_cause,
        Some(CauseKind::DailyQuota)
    );
    assert_eq!(
        again.providers[0].cooldown_reason.as_deref(),
        Some(words.as_str())
    );

    // A file from before causes were kept: its kind and words come back as they were.
    for k in records.get_mut("a").expect("a").keys.values_mut() {
        k.cause = None;
        k.cooldown_reason = Some("HTTP 402: no credits".into());
        k.hold = Some(Hold::Payment);
    }
    let pool3 = pool(&ps, &ks);
    pool3.restore(&records, t0());
    let old = pool3.snapshot(t0());
    assert_eq!(old.providers[0].cooldown_cause, Some(CauseKind::Credits));
    assert_eq!(
        old.providers[0].cooldown_reason.as_deref(),
        Some("HTTP 402: no credits")
    );
}
