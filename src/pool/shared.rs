//! What the pool shares with other machines through [`crate::shared`]: the facts about
//! its keys that another agent using the same keys needs (cooldowns and benches,
//! rejections, retired models, today's counts), and taking in theirs. No I/O here: the
//! shared task reads [`Pool::shared_facts`] and calls [`Pool::apply_shared`].
//!
//! Keys are matched by [`shared_key_id`], a SHA-256 of the key alone: two machines may
//! name the same account differently, and nothing reversible leaves the Mac.

use sha2::{Digest, Sha256};

use super::*;

/// A key's id in the shared pool: 32 hex digits of SHA-256 over a fixed prefix and the
/// key. Not salted with the provider name: the same account may be "groq" on one machine
/// and "groq-free" on another.
pub fn shared_key_id(key: &ApiKey) -> String {
    let mut h = Sha256::new();
    h.update(b"llm-rotator shared key\0");
    h.update(key.expose().as_bytes());
    hex16(&h.finalize())
}

/// An endpoint's id in the shared pool (retired models are the endpoint's, not a key's).
pub fn endpoint_id(base_url: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"llm-rotator shared endpoint\0");
    h.update(base_url.trim_end_matches('/').as_bytes());
    hex16(&h.finalize())
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// A cooldown as other machines learn it: its kind, what it is about and when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedHold {
    /// What kind of pause.
    pub hold: Hold,
    /// What it is about (a daily quota, a rate limit...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<CauseKind>,
    /// When it ends.
    pub until: DateTime<Utc>,
}

/// What this agent knows of one key that others should know too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFacts {
    /// [`shared_key_id`].
    pub id: String,
    /// Its cooldown, when it has one worth sharing (transient failures are not: they may
    /// be this machine's own network).
    pub hold: Option<SharedHold>,
    /// The provider rejected it.
    pub rejected: bool,
    /// This agent's own requests on it today.
    pub requests_today: u64,
    /// This agent's own tokens on it today.
    pub tokens_today: u64,
}

/// A key the user freed by hand (reset, or turning its provider on): the others free it
/// too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freed {
    /// [`shared_key_id`].
    pub id: String,
    /// Its rejection was lifted as well.
    pub rejection: bool,
}

/// Everything to share, as of one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The local day the counts are for.
    pub day: Option<NaiveDate>,
    /// Per key (each key once, even when two providers use it).
    pub keys: Vec<KeyFacts>,
    /// Retired models: (endpoint id, model).
    pub retired: Vec<(String, String)>,
    /// Keys freed by hand since the last call.
    pub freed: Vec<Freed>,
}

/// What another machine said, to apply here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A key cools down (kept if ours ends later).
    Hold {
        /// [`shared_key_id`].
        key: String,
        /// The cooldown.
        hold: SharedHold,
        /// The machine's name, for the reason shown.
        machine: String,
    },
    /// A key was freed by hand there.
    Freed {
        /// [`shared_key_id`].
        key: String,
        /// Its rejection was lifted too.
        rejection: bool,
    },
    /// The provider rejected a key there.
    Rejected {
        /// [`shared_key_id`].
        key: String,
        /// The machine's name.
        machine: String,
    },
    /// The provider retired a model there.
    Retired {
        /// [`endpoint_id`].
        endpoint: String,
        /// The model.
        model: String,
        /// The machine's name.
        machine: String,
    },
    /// What the other machines used of a key today, all together.
    Others {
        /// [`shared_key_id`].
        key: String,
        /// The local day they count.
        day: NaiveDate,
        /// Their requests.
        requests: u64,
        /// Their tokens.
        tokens: u64,
    },
}

/// The shared pool's state as this agent sees it (for `/status`, the CLI and the menu).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStatus {
    /// The pool's name.
    pub pool: String,
    /// The server, as shown (host and port, never a password).
    pub server: String,
    /// Connected now.
    pub online: bool,
    /// Since when it is online or offline.
    pub since: DateTime<Utc>,
    /// Why it is offline.
    pub error: Option<String>,
    /// The machines in the pool (this one included) and when each was last seen.
    pub machines: Vec<(String, bool, DateTime<Utc>)>,
}

impl KeyState {
    /// Today's counts over every machine sharing the key (this agent's own without a
    /// shared pool): what the configured limits and the headroom are measured against.
    pub(super) fn day_counts(&self) -> Counts {
        let mut c = self.counts;
        // `others` is for the pool's current day: `roll_day` drops it at midnight.
        if let Some((_, requests, tokens)) = self.others {
            c.requests_today = c.requests_today.saturating_add(requests);
            c.tokens_today = c.tokens_today.saturating_add(tokens);
        }
        c
    }
}

impl Pool {
    /// Turns the shared pool's bookkeeping on (the shared task calls it once): from then
    /// on keys freed by hand are remembered for [`Pool::shared_facts`], and the status
    /// shows in snapshots.
    pub fn set_shared_status(&self, status: SharedStatus) {
        {
            let mut inner = self.lock();
            if inner.shared.as_ref() == Some(&status) {
                return;
            }
            inner.shared = Some(status);
        }
        self.changed();
    }

    /// The shared pool's status, when one is configured.
    pub fn shared_status(&self) -> Option<SharedStatus> {
        self.lock().shared.clone()
    }

    /// What to share, as of `now`; drains the keys freed by hand since the last call.
    pub fn shared_facts(&self, now: DateTime<Utc>) -> Facts {
        let mut inner = self.lock();
        let today = local_day(now);
        let mut facts = Facts {
            day: Some(today),
            freed: std::mem::take(&mut inner.shared_freed),
            ..Facts::default()
        };
        for p in &mut inner.providers {
            p.roll_day(today);
            for k in &p.keys {
                let Some(id) = &k.shared_id else { continue };
                if facts.keys.iter().any(|f| f.id == **id) {
                    continue;
                }
                let hold = match (&k.cause, k.cooldown_until) {
                    (Some(cause), Some(until))
                        if cause.hold() != Hold::Transient
                            && until > now
                            && !matches!(cause, Cause::Shared { .. } | Cause::Saved { .. }) =>
                    {
                        Some(SharedHold {
                            hold: cause.hold(),
                            cause: Some(cause.kind()),
                            until,
                        })
                    }
                    (Some(Cause::Shared { hold, cause, .. }), Some(until)) if until > now => {
                        Some(SharedHold {
                            hold: *hold,
                            cause: *cause,
                            until,
                        })
                    }
                    _ => None,
                };
                facts.keys.push(KeyFacts {
                    id: id.to_string(),
                    hold,
                    rejected: k.auth_failed,
                    requests_today: k.counts.requests_today,
                    tokens_today: k.counts.tokens_today,
                });
            }
            if !p.retired.is_empty() && p.config.requires_key {
                let endpoint = endpoint_id(&p.config.base_url);
                for model in p.retired.keys() {
                    facts.retired.push((endpoint.clone(), model.clone()));
                }
            }
        }
        facts
    }

    /// Applies what another machine said. Returns whether anything changed here.
    pub fn apply_shared(&self, remote: &Remote, now: DateTime<Utc>) -> bool {
        let mut changed = false;
        {
            let mut inner = self.lock();
            for p in &mut inner.providers {
                changed |= match remote {
                    Remote::Retired {
                        endpoint,
                        model,
                        machine,
                    } => p.retire_shared(endpoint, model, machine),
                    _ => p.apply_to_keys(remote, now),
                };
            }
        }
        if changed {
            self.changed();
        }
        changed
    }

    /// Notes keys freed by hand, for the other machines (only while a shared pool is
    /// configured; the queue is drained by [`Pool::shared_facts`]).
    pub(super) fn note_freed(inner: &mut Inner, provider: usize, rejection: bool) {
        if inner.shared.is_none() {
            return;
        }
        let ids: Vec<String> = inner.providers[provider]
            .keys
            .iter()
            .filter_map(|k| k.shared_id.as_deref().map(str::to_string))
            .collect();
        for id in ids {
            if inner.shared_freed.len() < 1024 {
                inner.shared_freed.push(Freed { id, rejection });
            }
        }
    }
}

impl ProviderState {
    /// A model another machine met retired, when this provider sends it to the same
    /// endpoint. Returns whether it is news here.
    fn retire_shared(&mut self, endpoint: &str, model: &str, machine: &str) -> bool {
        let news = self.config.requires_key
            && self.config.configured_models().any(|m| m == model)
            && !self.retired.contains_key(model)
            && endpoint_id(&self.config.base_url) == endpoint;
        if news {
            self.retired.insert(
                model.to_string(),
                format!("retired or unknown (the provider told {machine})"),
            );
        }
        news
    }

    /// What another machine said of a key, applied to this provider's keys that are the
    /// same key. Returns whether anything changed.
    fn apply_to_keys(&mut self, remote: &Remote, now: DateTime<Utc>) -> bool {
        let mut changed = false;
        for k in &mut self.keys {
            let Some(id) = k.shared_id.as_deref() else {
                continue;
            };
            match remote {
                Remote::Hold { key, hold, machine }
                    if key == id
                        && hold.until > now
                        && k.cooldown_until.is_none_or(|t| t < hold.until) =>
                {
                    let cause = Cause::Shared {
                        hold: hold.hold,
                        cause: hold.cause,
                        until: hold.until,
                        machine: machine.clone(),
                    };
                    k.hold(cause, hold.until);
                    changed = true;
                }
                Remote::Freed { key, rejection } if key == id => {
                    if k.cooling(now) {
                        k.clear_cooldown();
                        changed = true;
                    }
                    if *rejection && k.auth_failed {
                        k.auth_failed = false;
                        changed = true;
                    }
                }
                Remote::Rejected { key, machine } if key == id && !k.auth_failed => {
                    k.auth_failed = true;
                    self.last_error = Some(format!(
                        "the key {} was rejected (seen on {machine})",
                        k.label
                    ));
                    self.last_error_kind = Some(CauseKind::KeyRejected);
                    changed = true;
                }
                Remote::Others {
                    key,
                    day,
                    requests,
                    tokens,
                } if key == id => {
                    let new = Some((*day, *requests, *tokens));
                    if *day == local_day(now) && k.others != new {
                        k.others = new;
                        changed = true;
                    }
                }
                _ => {}
            }
        }
        changed
    }
}
