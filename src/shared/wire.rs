//! What goes over the wire to the shared pool's server, and what this agent already told
//! it: key names under `llm-rotator:<pool>:`, the JSON of each event and record, and
//! [`Known`], the diff between the pool's facts and what the server has. Pure: no I/O.
//!
//! Every record carries its own expiry: a cooldown's key expires when the cooldown ends,
//! a rejection after a week, a retired model after a day, a day's counts the day after,
//! a machine a week after it was last seen. So a machine that dies leaves nothing stale.
//!
//! Nothing here ever holds an API key, a prompt or a completion: keys are named by
//! [`crate::pool::shared_key_id`], endpoints by [`crate::pool::endpoint_id`].

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::pool::{CauseKind, Facts, Hold, SharedHold};

/// How long a rejected key stays marked in the pool.
pub const REJECTED_SECS: u64 = 7 * 24 * 3600;
/// How long a retired model stays marked in the pool (re-learned by whoever still meets it).
pub const RETIRED_SECS: u64 = 24 * 3600;
/// How long a day's counts are kept (past the day itself, for clocks a little apart).
pub const COUNTS_SECS: u64 = 2 * 24 * 3600;
/// How long a machine is listed after it was last seen.
pub const MACHINE_SECS: u64 = 7 * 24 * 3600;

/// The Redis key names of one pool.
#[derive(Debug, Clone)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// The names of pool `pool`.
    pub fn new(pool: &str) -> Names {
        Names {
            prefix: format!("llm-rotator:{pool}:"),
        }
    }

    /// Where every key of the pool starts.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel events are published on.
    pub fn channel(&self) -> String {
        format!("{}events", self.prefix)
    }

    /// A key's cooldown.
    pub fn hold(&self, key: &str) -> String {
        format!("{}hold:{key}", self.prefix)
    }

    /// A key's rejection.
    pub fn rejected(&self, key: &str) -> String {
        format!("{}rejected:{key}", self.prefix)
    }

    /// A retired model of an endpoint.
    pub fn retired(&self, endpoint: &str, model: &str) -> String {
        format!("{}retired:{endpoint}:{model}", self.prefix)
    }

    /// A key's counts on `day`: a hash of machine id → "requests tokens".
    pub fn counts(&self, day: NaiveDate, key: &str) -> String {
        format!("{}count:{day}:{key}", self.prefix)
    }

    /// Where the counts of `day` start.
    pub fn counts_of_day(&self, day: NaiveDate) -> String {
        format!("{}count:{day}:", self.prefix)
    }

    /// A machine's record.
    pub fn machine(&self, id: &str) -> String {
        format!("{}machine:{id}", self.prefix)
    }

    /// What kind of record a key of this pool is, and its id part, from its name.
    pub fn kind_of<'a>(&self, name: &'a str) -> Option<(&'a str, &'a str)> {
        name.strip_prefix(self.prefix.as_str())?.split_once(':')
    }
}

/// One thing a machine tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A key cools down until `until`.
    Hold {
        /// The key's shared id.
        key: String,
        /// What kind of pause.
        hold: Hold,
        /// What it is about (absent from older agents).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<CauseKind>,
        /// When it ends.
        until: DateTime<Utc>,
    },
    /// A key was freed by hand.
    Freed {
        /// The key's shared id.
        key: String,
        /// Its rejection was lifted too.
        rejection: bool,
    },
    /// The provider rejected a key.
    Rejected {
        /// The key's shared id.
        key: String,
    },
    /// An endpoint retired a model.
    Retired {
        /// The endpoint's shared id.
        endpoint: String,
        /// The model.
        model: String,
    },
    /// The sender's own counts of a key today.
    Counts {
        /// The key's shared id.
        key: String,
        /// The sender's local day.
        day: NaiveDate,
        /// Requests.
        requests: u64,
        /// Tokens.
        tokens: u64,
    },
    /// A machine joined (or came back): the others refresh their list of machines.
    Hello,
}

/// An event with its sender: what is published, and what a record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's machine id (its own events come back to it and are skipped).
    pub from: String,
    /// The sender's name, as the others show it.
    pub name: String,
    /// What it says.
    #[serde(flatten)]
    pub event: Event,
}

/// A machine's record: its name and when it was last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    /// Its name.
    pub name: String,
    /// Last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// The llm-rotator version it runs.
    pub version: String,
}

/// A machine's counts of a key, as stored in the day's hash: "requests tokens".
pub fn counts_value(requests: u64, tokens: u64) -> String {
    format!("{requests} {tokens}")
}

/// Reads [`counts_value`] back.
pub fn parse_counts(text: &str) -> Option<(u64, u64)> {
    let (r, t) = text.split_once(' ')?;
    Some((r.parse().ok()?, t.parse().ok()?))
}

/// What the server already has, as far as this agent knows: what it wrote and what it
/// read. [`Known::diff`] turns the pool's facts into the events the server lacks, so
/// nothing is published twice and what came from the server is never sent back.
#[derive(Debug, Default)]
pub struct Known {
    holds: HashMap<String, SharedHold>,
    rejected: HashSet<String>,
    retired: HashSet<(String, String)>,
    counts: HashMap<String, (NaiveDate, u64, u64)>,
}

impl Known {
    /// Notes what an event (sent or received) put on the server.
    pub fn learn(&mut self, event: &Event) {
        match event {
            Event::Hold {
                key,
                hold,
                cause,
                until,
            } => {
                let h = SharedHold {
                    hold: *hold,
                    cause: *cause,
                    until: *until,
                };
                let entry = self.holds.entry(key.clone()).or_insert(h);
                if entry.until < *until {
                    *entry = h;
                }
            }
            Event::Freed { key, rejection } => {
                self.holds.remove(key);
                if *rejection {
                    self.rejected.remove(key);
                }
            }
            Event::Rejected { key } => {
                self.rejected.insert(key.clone());
            }
            Event::Retired { endpoint, model } => {
                self.retired.insert((endpoint.clone(), model.clone()));
            }
            Event::Counts { .. } | Event::Hello => {}
        }
    }

    /// The events the server lacks, given the pool's `facts` at `now`; they count as
    /// known from here on. With `counts`, this agent's changed counts too (they go out
    /// batched, once a second).
    pub fn diff(&mut self, facts: &Facts, now: DateTime<Utc>, counts: bool) -> Vec<Event> {
        self.holds.retain(|_, h| h.until > now);
        let mut out = Vec::new();
        for f in &facts.freed {
            out.push(Event::Freed {
                key: f.id.clone(),
                rejection: f.rejection,
            });
        }
        for k in &facts.keys {
            if let Some(h) = k.hold {
                if self
                    .holds
                    .get(&k.id)
                    .is_none_or(|known| known.until < h.until)
                {
                    out.push(Event::Hold {
                        key: k.id.clone(),
                        hold: h.hold,
                        cause: h.cause,
                        until: h.until,
                    });
                }
            }
            if k.rejected && !self.rejected.contains(&k.id) {
                out.push(Event::Rejected { key: k.id.clone() });
            } else if !k.rejected {
                // Lifted here without a hand (a config reload with the key anew): a later
                // rejection is news again.
                self.rejected.remove(&k.id);
            }
            if counts {
                if let Some(day) = facts.day {
                    let now_counts = (day, k.requests_today, k.tokens_today);
                    let sent = self.counts.get(&k.id);
                    let news = match sent {
                        Some(s) => *s != now_counts,
                        None => k.requests_today > 0 || k.tokens_today > 0,
                    };
                    if news {
                        self.counts.insert(k.id.clone(), now_counts);
                        out.push(Event::Counts {
                            key: k.id.clone(),
                            day,
                            requests: k.requests_today,
                            tokens: k.tokens_today,
                        });
                    }
                }
            }
        }
        for (endpoint, model) in &facts.retired {
            if !self.retired.contains(&(endpoint.clone(), model.clone())) {
                out.push(Event::Retired {
                    endpoint: endpoint.clone(),
                    model: model.clone(),
                });
            }
        }
        for e in &out {
            self.learn(e);
        }
        out
    }
}

/// The other machines' counts of each key today, summed for the pool.
#[derive(Debug, Default)]
pub struct Others {
    /// key → machine id → (day, requests, tokens).
    by_key: HashMap<String, HashMap<String, (NaiveDate, u64, u64)>>,
}

impl Others {
    /// Notes machine `from`'s counts of `key`; returns the others' sum for `day`.
    pub fn note(
        &mut self,
        key: &str,
        from: &str,
        day: NaiveDate,
        requests: u64,
        tokens: u64,
    ) -> (u64, u64) {
        let machines = self.by_key.entry(key.to_string()).or_default();
        machines.insert(from.to_string(), (day, requests, tokens));
        machines
            .values()
            .filter(|(d, _, _)| *d == day)
            .fold((0, 0), |(r, t), (_, mr, mt)| {
                (r.saturating_add(*mr), t.saturating_add(*mt))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Freed, KeyFacts};

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default()
    }

    fn facts(keys: Vec<KeyFacts>) -> Facts {
        Facts {
            day: Some(day()),
            keys,
            ..Facts::default()
        }
    }

    fn key(id: &str, hold: Option<(Hold, i64)>, rejected: bool, requests: u64) -> KeyFacts {
        KeyFacts {
            id: id.into(),
            hold: hold.map(|(hold, s)| SharedHold {
                hold,
                cause: None,
                until: t(s),
            }),
            rejected,
            requests_today: requests,
            tokens_today: 0,
        }
    }

    #[test]
    fn a_new_cooldown_is_sent_once_and_a_later_one_again() {
        let mut known = Known::default();
        let f = facts(vec![key("k", Some((Hold::RateLimit, 60)), false, 0)]);
        assert_eq!(known.diff(&f, t(0), false).len(), 1);
        assert!(known.diff(&f, t(1), false).is_empty(), "sent twice");
        let later = facts(vec![key("k", Some((Hold::Bench, 600)), false, 0)]);
        assert_eq!(
            known.diff(&later, t(2), false),
            vec![Event::Hold {
                key: "k".into(),
                hold: Hold::Bench,
                cause: None,
                until: t(600)
            }]
        );
    }

    #[test]
    fn what_came_from_the_server_is_not_sent_back() {
        let mut known = Known::default();
        known.learn(&Event::Hold {
            key: "k".into(),
            hold: Hold::RateLimit,
            cause: None,
            until: t(60),
        });
        known.learn(&Event::Rejected { key: "r".into() });
        let f = facts(vec![
            key("k", Some((Hold::RateLimit, 60)), false, 0),
            key("r", None, true, 0),
        ]);
        assert!(known.diff(&f, t(0), false).is_empty());
    }

    #[test]
    fn an_expired_cooldown_is_news_when_it_comes_again() {
        let mut known = Known::default();
        let f = facts(vec![key("k", Some((Hold::RateLimit, 60)), false, 0)]);
        known.diff(&f, t(0), false);
        let again = facts(vec![key("k", Some((Hold::RateLimit, 200)), false, 0)]);
        assert_eq!(known.diff(&again, t(100), false).len(), 1);
    }

    #[test]
    fn counts_go_out_only_with_the_batch_and_only_when_changed() {
        let mut known = Known::default();
        let f = facts(vec![key("k", None, false, 3)]);
        assert!(known.diff(&f, t(0), false).is_empty());
        assert_eq!(known.diff(&f, t(1), true).len(), 1);
        assert!(known.diff(&f, t(2), true).is_empty());
        let more = facts(vec![key("k", None, false, 4)]);
        assert_eq!(
            known.diff(&more, t(3), true),
            vec![Event::Counts {
                key: "k".into(),
                day: day(),
                requests: 4,
                tokens: 0
            }]
        );
    }

    #[test]
    fn keys_freed_by_hand_are_sent_and_forgotten() {
        let mut known = Known::default();
        known.diff(
            &facts(vec![key("k", Some((Hold::RateLimit, 60)), true, 0)]),
            t(0),
            false,
        );
        let mut f = facts(vec![key("k", None, false, 0)]);
        f.freed.push(Freed {
            id: "k".into(),
            rejection: true,
        });
        assert_eq!(
            known.diff(&f, t(1), false),
            vec![Event::Freed {
                key: "k".into(),
                rejection: true
            }]
        );
        // Cooling again later is news.
        let again = facts(vec![key("k", Some((Hold::RateLimit, 30)), false, 0)]);
        assert_eq!(known.diff(&again, t(2), false).len(), 1);
    }

    #[test]
    fn retired_models_are_sent_once() {
        let mut known = Known::default();
        let mut f = facts(Vec::new());
        f.retired.push(("e".into(), "m".into()));
        assert_eq!(known.diff(&f, t(0), false).len(), 1);
        assert!(known.diff(&f, t(1), false).is_empty());
    }

    #[test]
    fn others_sum_every_machine_of_the_same_day() {
        let mut o = Others::default();
        assert_eq!(o.note("k", "a", day(), 2, 10), (2, 10));
        assert_eq!(o.note("k", "b", day(), 3, 5), (5, 15));
        assert_eq!(o.note("k", "a", day(), 4, 10), (7, 15));
        let yesterday = day().pred_opt().unwrap_or_default();
        assert_eq!(o.note("k", "c", yesterday, 100, 0), (100, 0));
    }

    #[test]
    fn messages_read_back_as_written_and_name_no_secret_field() {
        let m = Message {
            from: "id".into(),
            name: "laptop".into(),
            event: Event::Hold {
                key: "abc".into(),
                hold: Hold::Bench,
                cause: Some(CauseKind::DailyQuota),
                until: t(5),
            },
        };
        let text = serde_json::to_string(&m).unwrap_or_default();
        assert!(text.contains(r#""kind":"hold""#), "{text}");
        let back: Message = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, m);
        assert_eq!(parse_counts(&counts_value(7, 900)), Some((7, 900)));
        assert_eq!(parse_counts("x y"), None);
    }

    #[test]
    fn names_are_namespaced_by_pool_and_read_back() {
        let n = Names::new("home");
        assert_eq!(n.hold("k"), "llm-rotator:home:hold:k");
        assert_eq!(n.kind_of("llm-rotator:home:hold:k"), Some(("hold", "k")));
        assert_eq!(
            n.kind_of(&n.counts(day(), "k")),
            Some(("count", "2026-12-01:k"))
        );
        assert_eq!(n.kind_of("llm-rotator:other:hold:k"), None);
    }
}
