//! The notifier core: from successive snapshots and the time, which notifications to
//! send. Pure (`now` is passed in), so every trigger and the hourly limit are unit-tested
//! without a desktop.
//!
//! What fires:
//! - the last provider that could serve starts cooling down ("all providers cooling,
//!   back at 14:05");
//! - a key is rejected;
//! - a daily quota is used up, or is forecast to run out within the hour while no other
//!   provider that serves has requests left;
//! - a model is retired.
//!
//! At most one notification per kind and provider an hour. The first snapshot is the
//! baseline: what was already so when the agent started is not news. Texts name
//! providers, models and times, never a key (not even its label) or anything a client
//! sent.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};

use crate::headroom::clock;
use crate::pool::{CauseKind, ProviderSnapshot, ProviderStateKind, Snapshot};

/// How long after one notification of a kind for a provider the next may come.
pub const QUIET: Duration = Duration::hours(1);

/// How soon a forecast run-out must be to warn about it.
pub const FORECAST_WITHIN: Duration = Duration::hours(1);

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// No provider can serve now; the first is back at a known time.
    AllCooling,
    /// A provider rejected a key.
    KeyRejected,
    /// A daily quota is used up.
    QuotaUsed,
    /// A daily quota runs out within the hour at today's pace, with no other provider
    /// to take over.
    QuotaForecast,
    /// A provider retired a model.
    ModelRetired,
}

/// One notification to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// What it is about.
    pub kind: Kind,
    /// The provider it concerns (`None`: the whole pool).
    pub provider: Option<String>,
    /// The headline.
    pub title: String,
    /// One or two sentences.
    pub body: String,
}

/// What one provider looked like in the last snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    rejected_keys: usize,
    quota_used: bool,
    retired: BTreeSet<String>,
}

fn seen(p: &ProviderSnapshot) -> Seen {
    let rejected_keys = if p.keys.is_empty() {
        usize::from(p.state == ProviderStateKind::AuthFailed)
    } else {
        p.keys.iter().filter(|k| k.state == "auth_failed").count()
    };
    let mut retired: BTreeSet<String> = p.retired_models.keys().cloned().collect();
    if p.gone.is_some() {
        retired.insert(String::new());
    }
    Seen {
        rejected_keys,
        quota_used: quota_used(p).is_some(),
        retired,
    }
}

/// Why a provider's daily quota is used up ("daily quota used, back at 09:00"), when it
/// is: a key benched for its day, or nothing left today by its headroom.
fn quota_used(p: &ProviderSnapshot) -> Option<String> {
    if !p.enabled {
        return None;
    }
    fn daily(cause: Option<CauseKind>, reason: &Option<String>) -> Option<&str> {
        reason
            .as_deref()
            .filter(|_| cause == Some(CauseKind::DailyQuota))
    }
    let benched = p
        .keys
        .iter()
        .filter_map(|k| daily(k.cooldown_cause, &k.cooldown_reason))
        .chain(daily(p.cooldown_cause, &p.cooldown_reason));
    if let Some(reason) = benched.into_iter().next() {
        return Some(reason.to_string());
    }
    p.headroom
        .requests_today
        .filter(|d| d.left == 0)
        .map(|_| "no requests left today".to_string())
}

/// Whether a provider can take requests now and has some left today (or does not say).
fn has_headroom(p: &ProviderSnapshot) -> bool {
    p.state == ProviderStateKind::Ready && p.headroom.requests_today.is_none_or(|d| d.left > 0)
}

/// Decides what to send from snapshot to snapshot.
#[derive(Debug, Default)]
pub struct Notifier {
    /// Per provider, as last seen; `None` before the first snapshot.
    last: Option<HashMap<String, Seen>>,
    /// Whether some provider could serve in the last snapshot.
    any_ready: bool,
    /// When each (kind, provider) was last sent.
    sent: HashMap<(Kind, String), DateTime<Utc>>,
}

impl Notifier {
    /// A notifier that has seen nothing yet.
    pub fn new() -> Notifier {
        Notifier::default()
    }

    /// The notifications `snap` (taken at `now`) calls for, after the hourly limit.
    pub fn observe(&mut self, snap: &Snapshot, now: DateTime<Utc>) -> Vec<Notice> {
        let current: HashMap<String, Seen> = snap
            .providers
            .iter()
            .map(|p| (p.name.clone(), seen(p)))
            .collect();
        let any_ready = snap.ready_count() > 0;
        let mut out = Vec::new();
        if let Some(last) = &self.last {
            if self.any_ready && !any_ready {
                out.extend(all_cooling(snap, now));
            }
            for p in &snap.providers {
                let before = last.get(&p.name).cloned().unwrap_or_default();
                let after = current.get(&p.name).cloned().unwrap_or_default();
                if after.rejected_keys > before.rejected_keys {
                    out.push(key_rejected(p));
                }
                if after.quota_used && !before.quota_used {
                    if let Some(why) = quota_used(p) {
                        out.push(Notice {
                            kind: Kind::QuotaUsed,
                            provider: Some(p.name.clone()),
                            title: format!("{}: daily quota used", p.name),
                            body: format!("{}: {why}.", p.name),
                        });
                    }
                }
                let new: Vec<&String> = after.retired.difference(&before.retired).collect();
                if !new.is_empty() {
                    out.push(model_retired(p, &new));
                }
            }
        }
        out.extend(forecasts(snap, now));
        self.last = Some(current);
        self.any_ready = any_ready;
        out.retain(|n| self.allow(n, now));
        out
    }

    /// The hourly limit: records what passes.
    fn allow(&mut self, n: &Notice, now: DateTime<Utc>) -> bool {
        let key = (n.kind, n.provider.clone().unwrap_or_default());
        if self.sent.get(&key).is_some_and(|t| now - *t < QUIET) {
            return false;
        }
        self.sent.insert(key, now);
        true
    }
}

fn all_cooling(snap: &Snapshot, now: DateTime<Utc>) -> Option<Notice> {
    let back = snap
        .providers
        .iter()
        .filter(|p| p.state == ProviderStateKind::CoolingDown)
        .filter_map(|p| p.rate_limited_until.as_deref())
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .min()?;
    Some(Notice {
        kind: Kind::AllCooling,
        provider: None,
        title: "All providers cooling down".into(),
        body: format!(
            "All providers cooling, back at {}. Requests get 429 until then.",
            clock(back, now)
        ),
    })
}

fn key_rejected(p: &ProviderSnapshot) -> Notice {
    let of = if p.keys.len() > 1 {
        let rejected = p.keys.iter().filter(|k| k.state == "auth_failed").count();
        format!(" ({rejected} of its {} keys now)", p.keys.len())
    } else {
        String::new()
    };
    Notice {
        kind: Kind::KeyRejected,
        provider: Some(p.name.clone()),
        title: format!("{} rejected a key", p.name),
        body: format!(
            "{} rejected an API key{of}. Set a new one with Set API key… or `llm-rotator keys set {}`.",
            p.name, p.name
        ),
    }
}

fn model_retired(p: &ProviderSnapshot, new: &[&String]) -> Notice {
    let names: Vec<&str> = new
        .iter()
        .filter(|m| !m.is_empty())
        .map(|m| m.as_str())
        .collect();
    let what = if names.is_empty() {
        format!("{}'s endpoint is retired", p.name)
    } else {
        format!("{} retired {}", p.name, names.join(", "))
    };
    let next = match (&p.model_in_use, p.offers.is_empty()) {
        (Some(m), _) if p.state != ProviderStateKind::ModelRetired => format!("; now on {m}"),
        (_, false) => format!(
            "; set another model in the config (it offers {})",
            p.offers.join(", ")
        ),
        _ => "; set another model in the config".into(),
    };
    Notice {
        kind: Kind::ModelRetired,
        provider: Some(p.name.clone()),
        title: what.clone(),
        body: format!("{what}{next}."),
    }
}

/// A provider that runs out within the hour at today's pace, while no other provider has
/// requests left to take over.
fn forecasts(snap: &Snapshot, now: DateTime<Utc>) -> Vec<Notice> {
    let mut out = Vec::new();
    for p in &snap.providers {
        let Some(at) = p.runs_out_at else {
            continue;
        };
        if p.state != ProviderStateKind::Ready || at > now + FORECAST_WITHIN {
            continue;
        }
        let others = snap
            .providers
            .iter()
            .any(|o| o.name != p.name && has_headroom(o));
        if others {
            continue;
        }
        let left = p.headroom.requests_today.map_or(0, |d| d.left);
        out.push(Notice {
            kind: Kind::QuotaForecast,
            provider: Some(p.name.clone()),
            title: format!("{} runs out at {}", p.name, clock(at, now)),
            body: format!(
                "At this pace {} runs out at {} ({} requests left today), and no other provider has requests left.",
                p.name,
                clock(at, now),
                crate::headroom::thousands(left)
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headroom::{Headroom, Left, Source};
    use crate::pool::{ConfigSnapshot, KeySnapshot};
    use chrono::TimeZone;

    fn t(min: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0)
            .single()
            .expect("time")
            + Duration::minutes(min)
    }

    fn key(state: &str) -> KeySnapshot {
        KeySnapshot {
            label: "env GROQ_API_KEY …WXYZ".into(),
            state: state.into(),
            request_count: 0,
            rate_limited_until: None,
            cooldown_remaining_secs: 0,
            tokens_left: None,
            requests_all_machines: None,
            cooldown_reason: None,
            cooldown_cause: None,
            headroom: Headroom::default(),
            headroom_read_at: None,
        }
    }

    fn provider(name: &str, state: ProviderStateKind) -> ProviderSnapshot {
        ProviderSnapshot {
            name: name.into(),
            enabled: true,
            enabled_in_config: true,
            has_key: true,
            priority: 1,
            model: "m".into(),
            models: Vec::new(),
            state,
            request_count: 0,
            total_requests: 0,
            total_tokens_used: 0,
            is_rate_limited: false,
            rate_limited_until: None,
            cooldown_remaining_secs: 0,
            cooldown_reason: None,
            cooldown_cause: None,
            last_error: None,
            last_error_kind: None,
            keys: vec![key("ready")],
            model_in_use: Some("m".into()),
            preferred: vec!["m".into()],
            retired_models: Default::default(),
            gone: None,
            catalog_fetched_at: None,
            catalog_models: 0,
            offers: Vec::new(),
            oversized_events: 0,
            headroom: Headroom::default(),
            runs_out_at: None,
            request_count_all_machines: None,
        }
    }

    fn cooling(name: &str, until: DateTime<Utc>) -> ProviderSnapshot {
        let mut p = provider(name, ProviderStateKind::CoolingDown);
        p.is_rate_limited = true;
        p.rate_limited_until = Some(until.to_rfc3339());
        p.keys = vec![key("cooling_down")];
        p
    }

    fn snap(providers: Vec<ProviderSnapshot>) -> Snapshot {
        Snapshot {
            providers,
            key_store: None,
            config: ConfigSnapshot {
                path: None,
                last_error: None,
            },
            generated_at: String::new(),
            waiting: 0,
            state_error: None,
            headroom: Default::default(),
            shared: None,
        }
    }

    fn kinds(n: &[Notice]) -> Vec<(Kind, Option<&str>)> {
        n.iter().map(|n| (n.kind, n.provider.as_deref())).collect()
    }

    #[test]
    fn what_was_so_at_start_is_not_news() {
        let mut n = Notifier::new();
        let mut rejected = provider("groq", ProviderStateKind::AuthFailed);
        rejected.keys = vec![key("auth_failed")];
        let s = snap(vec![rejected, cooling("gemini", t(5))]);
        assert!(n.observe(&s, t(0)).is_empty());
        assert!(n.observe(&s, t(1)).is_empty());
    }

    #[test]
    fn the_last_ready_provider_cooling_down_says_when_the_first_is_back() {
        let mut n = Notifier::new();
        let before = snap(vec![
            provider("groq", ProviderStateKind::Ready),
            cooling("gemini", t(10)),
        ]);
        assert!(n.observe(&before, t(0)).is_empty());
        let after = snap(vec![cooling("groq", t(5)), cooling("gemini", t(10))]);
        let sent = n.observe(&after, t(1));
        assert_eq!(kinds(&sent), vec![(Kind::AllCooling, None)]);
        assert_eq!(
            sent[0].body,
            format!(
                "All providers cooling, back at {}. Requests get 429 until then.",
                clock(t(5), t(1))
            )
        );
        // Back, then cooling again within the hour: quiet.
        assert!(n.observe(&before, t(6)).is_empty());
        assert!(n.observe(&after, t(7)).is_empty());
        // An hour after the first, it may say so again.
        assert!(n.observe(&before, t(60)).is_empty());
        assert_eq!(
            kinds(&n.observe(&after, t(61))),
            vec![(Kind::AllCooling, None)]
        );
    }

    #[test]
    fn a_rejected_key_is_told_once_an_hour_without_naming_the_key() {
        let mut n = Notifier::new();
        let mut groq = provider("groq", ProviderStateKind::Ready);
        groq.keys = vec![key("ready"), key("ready")];
        assert!(n.observe(&snap(vec![groq.clone()]), t(0)).is_empty());
        groq.keys[0] = key("auth_failed");
        let sent = n.observe(&snap(vec![groq.clone()]), t(1));
        assert_eq!(kinds(&sent), vec![(Kind::KeyRejected, Some("groq"))]);
        assert!(sent[0].body.contains("1 of its 2 keys"), "{}", sent[0].body);
        assert!(!sent[0].body.contains("WXYZ") && !sent[0].title.contains("WXYZ"));
        // The second key rejected ten minutes later: the hourly limit holds.
        groq.keys[1] = key("auth_failed");
        groq.state = ProviderStateKind::AuthFailed;
        assert!(n.observe(&snap(vec![groq]), t(11)).is_empty());
    }

    #[test]
    fn a_used_daily_quota_is_told_with_when_it_is_back() {
        let mut n = Notifier::new();
        let groq = provider("groq", ProviderStateKind::Ready);
        assert!(n.observe(&snap(vec![groq]), t(0)).is_empty());
        let mut benched = cooling("groq", t(600));
        benched.keys[0].cooldown_reason = Some("daily quota used, back at 22:00".into());
        benched.keys[0].cooldown_cause = Some(crate::pool::CauseKind::DailyQuota);
        let sent = n.observe(&snap(vec![benched.clone()]), t(1));
        // Also the last provider standing: both are said.
        assert_eq!(
            kinds(&sent),
            vec![(Kind::AllCooling, None), (Kind::QuotaUsed, Some("groq"))]
        );
        assert_eq!(sent[1].body, "groq: daily quota used, back at 22:00.");
        // Still used up: nothing new.
        assert!(n.observe(&snap(vec![benched]), t(2)).is_empty());
    }

    #[test]
    fn nothing_left_by_the_headroom_counts_as_a_used_quota() {
        let mut n = Notifier::new();
        let mut p = provider("groq", ProviderStateKind::Ready);
        let left = |left| Headroom {
            requests_today: Some(Left {
                left,
                resets_at: t(600),
                source: Source::Provider,
            }),
            ..Headroom::default()
        };
        p.headroom = left(3);
        let other = provider("mistral", ProviderStateKind::Ready);
        assert!(n
            .observe(&snap(vec![p.clone(), other.clone()]), t(0))
            .is_empty());
        p.headroom = left(0);
        let sent = n.observe(&snap(vec![p, other]), t(1));
        assert_eq!(kinds(&sent), vec![(Kind::QuotaUsed, Some("groq"))]);
        assert_eq!(sent[0].body, "groq: no requests left today.");
    }

    #[test]
    fn a_forecast_run_out_within_the_hour_warns_only_when_no_other_provider_has_headroom() {
        let mut n = Notifier::new();
        let mut groq = provider("groq", ProviderStateKind::Ready);
        groq.headroom = Headroom {
            requests_today: Some(Left {
                left: 40,
                resets_at: t(600),
                source: Source::Provider,
            }),
            ..Headroom::default()
        };
        groq.runs_out_at = Some(t(45));
        let mistral = provider("mistral", ProviderStateKind::Ready);
        // Another provider can take over: no warning.
        assert!(n
            .observe(&snap(vec![groq.clone(), mistral.clone()]), t(0))
            .is_empty());
        // It is benched: groq is all there is.
        let benched = cooling("mistral", t(600));
        let sent = n.observe(&snap(vec![groq.clone(), benched.clone()]), t(1));
        assert_eq!(kinds(&sent), vec![(Kind::QuotaForecast, Some("groq"))]);
        assert_eq!(
            sent[0].title,
            format!("groq runs out at {}", clock(t(45), t(1)))
        );
        // Still so a minute later: once an hour.
        assert!(n
            .observe(&snap(vec![groq.clone(), benched.clone()]), t(2))
            .is_empty());
        // A run-out further than an hour away is no news.
        let mut n = Notifier::new();
        groq.runs_out_at = Some(t(200));
        assert!(n.observe(&snap(vec![groq, benched]), t(0)).is_empty());
    }

    #[test]
    fn a_retired_model_says_where_the_provider_went_or_what_it_offers() {
        let mut n = Notifier::new();
        let mut groq = provider("groq", ProviderStateKind::Ready);
        groq.preferred = vec!["old".into(), "new".into()];
        assert!(n.observe(&snap(vec![groq.clone()]), t(0)).is_empty());
        groq.retired_models.insert(
            "old".into(),
            "model_decommissioned: secret provider text".into(),
        );
        groq.model_in_use = Some("new".into());
        let sent = n.observe(&snap(vec![groq.clone()]), t(1));
        assert_eq!(kinds(&sent), vec![(Kind::ModelRetired, Some("groq"))]);
        assert_eq!(sent[0].body, "groq retired old; now on new.");
        // What the provider said stays out of it.
        assert!(!sent[0].body.contains("secret"));
        // Every model retired: what it offers.
        let mut n = Notifier::new();
        let mut mistral = provider("mistral", ProviderStateKind::Ready);
        assert!(n.observe(&snap(vec![mistral.clone()]), t(0)).is_empty());
        mistral.retired_models.insert("m".into(), "gone".into());
        mistral.state = ProviderStateKind::ModelRetired;
        mistral.model_in_use = None;
        mistral.offers = vec!["m2".into(), "m3".into()];
        let sent = n.observe(&snap(vec![mistral]), t(1));
        assert_eq!(
            sent[0].body,
            "mistral retired m; set another model in the config (it offers m2, m3)."
        );
    }

    #[test]
    fn the_hourly_limit_is_per_kind_and_provider() {
        let mut n = Notifier::new();
        let a = Notice {
            kind: Kind::KeyRejected,
            provider: Some("groq".into()),
            title: String::new(),
            body: String::new(),
        };
        let b = Notice {
            provider: Some("gemini".into()),
            ..a.clone()
        };
        let c = Notice {
            kind: Kind::QuotaUsed,
            ..a.clone()
        };
        assert!(n.allow(&a, t(0)));
        assert!(n.allow(&b, t(0)));
        assert!(n.allow(&c, t(0)));
        assert!(!n.allow(&a, t(59)));
        assert!(n.allow(&a, t(60)));
    }
}
