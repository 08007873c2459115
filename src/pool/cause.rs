//! Why a key cools down, as data: the cause with what it needs (until when, what the
//! provider said, which machine of the shared pool saw it). [`Cause::words`] is the one
//! wording `/status`, the CLI, the menu and the notifications show; code that needs to
//! know what kind of pause it is asks [`Cause::kind`] or [`Cause::hold`], never the words.

use chrono::{DateTime, Local, Utc};
use serde::{Deserialize, Serialize};

use super::{secs_until, Hold};

/// What a cooldown, or a provider's last failure, is about (in `/status` as
/// `cooldown_cause` and `last_error_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// A 429 (rate limit).
    RateLimit,
    /// A daily quota used up.
    DailyQuota,
    /// A shorter allowance used up (a request window, a configured per-minute limit).
    Allowance,
    /// A billing problem (402, no credits).
    Credits,
    /// A failure that may pass: 5xx, timeout, connection error, a broken stream.
    Transient,
    /// The provider refused the key.
    KeyRejected,
    /// The provider no longer serves the model.
    ModelRetired,
    /// The model is not in the key's tier.
    NotInTier,
    /// The whole endpoint is gone (410).
    EndpointGone,
}

/// Why a key cools down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Cause {
    /// A 429: what the provider said (masked), and whether it said how long to wait.
    RateLimit {
        /// The provider's words.
        said: String,
        /// It gave a Retry-After or a reset time.
        hinted: bool,
    },
    /// A daily quota used up (the provider's answer or headers, or a configured
    /// per-day limit), back at `until`.
    DailyQuota {
        /// When it refills.
        until: DateTime<Utc>,
    },
    /// A shorter allowance used up, back at `until`.
    Allowance {
        /// When it refills.
        until: DateTime<Utc>,
        /// A configured per-minute limit (else the provider's request window).
        configured: bool,
    },
    /// A billing problem: what the provider said.
    Credits {
        /// The provider's words.
        said: String,
    },
    /// A failure that may pass: what happened.
    Transient {
        /// What happened, in words (the provider's, masked, or ours).
        said: String,
    },
    /// Another machine of the shared pool met it.
    Shared {
        /// What kind of pause.
        hold: Hold,
        /// What it was about, when the other machine said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cause: Option<CauseKind>,
        /// When it ends.
        until: DateTime<Utc>,
        /// The machine's name.
        machine: String,
    },
    /// Read from a state file of an older version: its kind and the words it kept.
    Saved {
        /// The kind, when the file said.
        hold: Option<Hold>,
        /// The words.
        said: String,
    },
}

impl Cause {
    /// What kind of pause it is (what a wake from sleep clears, what is shared).
    pub fn hold(&self) -> Hold {
        match self {
            Cause::RateLimit { hinted: true, .. } => Hold::RateLimit,
            Cause::RateLimit { hinted: false, .. } => Hold::RateLimitGuess,
            Cause::DailyQuota { .. } | Cause::Allowance { .. } => Hold::Bench,
            Cause::Credits { .. } => Hold::Payment,
            Cause::Transient { .. } => Hold::Transient,
            Cause::Shared { hold, .. } => *hold,
            Cause::Saved { hold, .. } => hold.unwrap_or(Hold::Transient),
        }
    }

    /// What it is about.
    pub fn kind(&self) -> CauseKind {
        match self {
            Cause::RateLimit { .. } => CauseKind::RateLimit,
            Cause::DailyQuota { .. } => CauseKind::DailyQuota,
            Cause::Allowance { .. } => CauseKind::Allowance,
            Cause::Credits { .. } => CauseKind::Credits,
            Cause::Transient { .. } => CauseKind::Transient,
            Cause::Shared { cause: Some(c), .. } => *c,
            Cause::Shared { hold, .. }
            | Cause::Saved {
                hold: Some(hold), ..
            } => kind_of_hold(*hold),
            Cause::Saved { hold: None, .. } => CauseKind::Transient,
        }
    }

    /// The words shown for it at `now`.
    pub fn words(&self, now: DateTime<Utc>) -> String {
        match self {
            Cause::RateLimit { said, .. }
            | Cause::Credits { said }
            | Cause::Transient { said }
            | Cause::Saved { said, .. } => said.clone(),
            Cause::DailyQuota { until } => quota_reason(*until, now),
            Cause::Allowance {
                until,
                configured: true,
            } => format!(
                "configured per-minute limit reached, back in {}s",
                secs_until(*until, now)
            ),
            Cause::Allowance {
                until,
                configured: false,
            } => format!(
                "request allowance used up, back in {}s",
                secs_until(*until, now)
            ),
            Cause::Shared {
                hold,
                cause,
                until,
                machine,
            } => {
                let what = match cause.unwrap_or_else(|| kind_of_hold(*hold)) {
                    CauseKind::DailyQuota => quota_reason(*until, now),
                    CauseKind::Allowance => "request allowance used up".to_string(),
                    CauseKind::Credits => "billing problem".to_string(),
                    CauseKind::Transient => "failing".to_string(),
                    _ => "rate limited".to_string(),
                };
                format!("{what} (seen on {machine})")
            }
        }
    }
}

/// The kind a bare [`Hold`] stands for.
fn kind_of_hold(hold: Hold) -> CauseKind {
    match hold {
        Hold::RateLimit | Hold::RateLimitGuess => CauseKind::RateLimit,
        Hold::Transient => CauseKind::Transient,
        Hold::Payment => CauseKind::Credits,
        Hold::Bench => CauseKind::DailyQuota,
    }
}

/// "daily quota used, back at 09:00" in the user's local time; the weekday is added when
/// the reset is not within the next day.
pub fn quota_reason(until: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let local = until.with_timezone(&Local);
    if until - now > chrono::Duration::hours(20) {
        format!("daily quota used, back {}", local.format("%a %H:%M"))
    } else {
        format!("daily quota used, back at {}", local.format("%H:%M"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default()
    }

    #[test]
    fn each_cause_has_its_kind_its_hold_and_its_words() {
        let cases = [
            (
                Cause::RateLimit {
                    said: "HTTP 429: slow down".into(),
                    hinted: true,
                },
                CauseKind::RateLimit,
                Hold::RateLimit,
                "HTTP 429: slow down",
            ),
            (
                Cause::Allowance {
                    until: t(42),
                    configured: true,
                },
                CauseKind::Allowance,
                Hold::Bench,
                "configured per-minute limit reached, back in 42s",
            ),
            (
                Cause::Allowance {
                    until: t(5),
                    configured: false,
                },
                CauseKind::Allowance,
                Hold::Bench,
                "request allowance used up, back in 5s",
            ),
            (
                Cause::Shared {
                    hold: Hold::RateLimit,
                    cause: None,
                    until: t(60),
                    machine: "studio".into(),
                },
                CauseKind::RateLimit,
                Hold::RateLimit,
                "rate limited (seen on studio)",
            ),
            (
                Cause::Saved {
                    hold: Some(Hold::Payment),
                    said: "no credits".into(),
                },
                CauseKind::Credits,
                Hold::Payment,
                "no credits",
            ),
        ];
        for (cause, kind, hold, words) in cases {
            assert_eq!(
                (cause.kind(), cause.hold(), cause.words(t(0)).as_str()),
                (kind, hold, words)
            );
        }
        let daily = Cause::DailyQuota { until: t(3600) };
        assert_eq!(daily.kind(), CauseKind::DailyQuota);
        assert!(daily.words(t(0)).starts_with("daily quota used, back at "));
    }
}
