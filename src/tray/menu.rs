//! The menu-bar menu as a pure function of what the agent knows right now: the provider
//! snapshot (the same one `/status` serves), the bound address or the bind error, the
//! login-item state and the last notice. No UI toolkit here: [`super::app`] turns a
//! [`MenuModel`] into real menu items, so everything users read is unit-tested on Linux.

use chrono::{DateTime, Utc};

use crate::headroom;
use crate::pool::countdown;
use crate::pool::{CauseKind, ProviderSnapshot, ProviderStateKind, Snapshot};

/// Longest detail line (last error, notices) before it is cut with "…".
pub const MAX_DETAIL_CHARS: usize = 80;

/// Which menu-bar icon to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IconKind {
    /// Every provider that is on can serve.
    Ok,
    /// Something can serve, but some providers are cooling down or their key was rejected.
    Cooling,
    /// One provider is left serving while others that could are cooling down, benched
    /// or refused.
    Last,
    /// Nothing can serve (or the port could not be bound).
    Down,
}

impl IconKind {
    /// Short name, also the asset name (`tray-ok.png`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            IconKind::Ok => "ok",
            IconKind::Cooling => "cooling",
            IconKind::Last => "last",
            IconKind::Down => "down",
        }
    }
}

/// Whether the agent starts at login, as `llm-rotator service status` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginState {
    /// Not known yet (the check runs in the background).
    Checking,
    /// Installed as a login item.
    On,
    /// Not installed.
    Off,
    /// This build has no `service` command.
    Unavailable,
}

/// Why the proxy is not serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindProblem {
    /// The port that could not be bound.
    pub port: u16,
    /// Whether another program holds it (as opposed to, e.g., no permission).
    pub in_use: bool,
}

/// What a click on a menu item asks for. Menu item ids are [`Click::id`] strings, so a
/// click maps back without a lookup table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Click {
    /// Turn a provider on or off.
    Toggle(String),
    /// Put the endpoint URL on the clipboard.
    CopyUrl,
    /// Open the dashboard (`/ui`) in the default browser.
    OpenDashboard,
    /// Open the config file in the default editor.
    OpenConfig,
    /// Re-read the config file.
    Reload,
    /// Open the folder with the log files.
    OpenLogs,
    /// Prompt for a provider's API key and store it.
    SetKey(String),
    /// End a provider's cooldowns and benches now.
    ResetCooldowns(String),
    /// Install or remove the login item.
    StartAtLogin,
    /// Turn desktop notifications on or off.
    Notifications,
    /// Stop the proxy and quit.
    Quit,
}

impl Click {
    /// The menu item id for this click.
    pub fn id(&self) -> String {
        match self {
            Click::Toggle(p) => format!("provider:{p}"),
            Click::CopyUrl => "copy-url".into(),
            Click::OpenDashboard => "open-dashboard".into(),
            Click::OpenConfig => "open-config".into(),
            Click::Reload => "reload".into(),
            Click::OpenLogs => "open-logs".into(),
            Click::SetKey(p) => format!("set-key:{p}"),
            Click::ResetCooldowns(p) => format!("reset:{p}"),
            Click::StartAtLogin => "start-at-login".into(),
            Click::Notifications => "notifications".into(),
            Click::Quit => "quit".into(),
        }
    }

    /// The click a menu item id stands for; `None` for informational rows.
    pub fn from_id(id: &str) -> Option<Click> {
        if let Some(p) = id.strip_prefix("provider:") {
            return Some(Click::Toggle(p.to_string()));
        }
        if let Some(p) = id.strip_prefix("set-key:") {
            return Some(Click::SetKey(p.to_string()));
        }
        if let Some(p) = id.strip_prefix("reset:") {
            return Some(Click::ResetCooldowns(p.to_string()));
        }
        Some(match id {
            "copy-url" => Click::CopyUrl,
            "open-dashboard" => Click::OpenDashboard,
            "open-config" => Click::OpenConfig,
            "reload" => Click::Reload,
            "open-logs" => Click::OpenLogs,
            "start-at-login" => Click::StartAtLogin,
            "notifications" => Click::Notifications,
            "quit" => Click::Quit,
            _ => return None,
        })
    }
}

/// One row of the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// Informational text, not clickable.
    Label {
        /// Item id (stable across refreshes).
        id: String,
        /// Text.
        text: String,
    },
    /// A clickable row.
    Action {
        /// What it does.
        click: Click,
        /// Text.
        text: String,
        /// Clickable now.
        enabled: bool,
    },
    /// A row with a check mark.
    Check {
        /// What it does.
        click: Click,
        /// Text.
        text: String,
        /// Check mark.
        checked: bool,
        /// Clickable now.
        enabled: bool,
    },
    /// A row opening more rows.
    Submenu {
        /// Item id.
        id: String,
        /// Text.
        text: String,
        /// Openable now.
        enabled: bool,
        /// Its rows.
        items: Vec<Item>,
    },
    /// A line between groups.
    Separator,
}

impl Item {
    fn label(id: &str, text: String) -> Item {
        Item::Label {
            id: id.to_string(),
            text,
        }
    }

    fn action(click: Click, text: &str) -> Item {
        Item::Action {
            click,
            text: text.to_string(),
            enabled: true,
        }
    }

    /// The shown text ("" for a separator).
    pub fn text(&self) -> &str {
        match self {
            Item::Label { text, .. }
            | Item::Action { text, .. }
            | Item::Check { text, .. }
            | Item::Submenu { text, .. } => text,
            Item::Separator => "",
        }
    }

    /// The item's id (what the menu toolkit reports on a click).
    pub fn id(&self) -> String {
        match self {
            Item::Label { id, .. } | Item::Submenu { id, .. } => id.clone(),
            Item::Action { click, .. } | Item::Check { click, .. } => click.id(),
            Item::Separator => String::new(),
        }
    }
}

/// Everything the model is computed from.
#[derive(Debug, Clone, Copy)]
pub struct MenuInput<'a> {
    /// The provider snapshot; `None` while the engine is still starting.
    pub snapshot: Option<&'a Snapshot>,
    /// Host and port users connect to, e.g. `localhost:8000`.
    pub address: &'a str,
    /// Why the port could not be bound, if it could not.
    pub bind_error: Option<&'a BindProblem>,
    /// Providers that take an API key (the "Set API key…" submenu), in priority order.
    pub key_providers: &'a [String],
    /// The login item.
    pub login: LoginState,
    /// The outcome of the last action ("Copied …", "Key saved for groq", a CLI hint).
    pub notice: Option<&'a str>,
    /// Whether desktop notifications are on.
    pub notifications: bool,
    /// The time the headroom lines are written for (reset times within the next day
    /// read "02:00", later ones "Tue 02:00").
    pub now: DateTime<Utc>,
}

/// The whole menu plus the icon and tooltip that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuModel {
    /// Rows, top to bottom.
    pub items: Vec<Item>,
    /// Which icon to show.
    pub icon: IconKind,
    /// One-line summary (the tooltip where the platform shows one).
    pub tooltip: String,
    /// Whether some row counts down, so the menu needs a refresh every second.
    pub counting_down: bool,
}

/// Cuts `text` to `max` characters, ending with "…" when cut.
pub fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The last error of a provider that is ready again but whose last attempt failed. A
/// rate limit whose cooldown is over is not a failure: the provider asked for a pause and
/// got it.
pub fn failing(p: &ProviderSnapshot) -> Option<&str> {
    if p.state != ProviderStateKind::Ready {
        return None;
    }
    p.last_error
        .as_deref()
        .filter(|_| p.last_error_kind != Some(CauseKind::RateLimit))
}

/// A provider's state as the menu words it.
pub fn state_text(p: &ProviderSnapshot) -> String {
    match p.state {
        ProviderStateKind::Ready if failing(p).is_some() => "failing".into(),
        ProviderStateKind::CoolingDown => {
            format!(
                "{} {}",
                p.state.words(),
                countdown(p.cooldown_remaining_secs)
            )
        }
        other => other.words().into(),
    }
}

/// A provider's row: name, requests today and state, e.g. "gemini — 12 today — cooling
/// down 2:41".
pub fn provider_label(p: &ProviderSnapshot) -> String {
    let mut label = format!("{} — {} today — {}", p.name, p.request_count, state_text(p));
    // A preference list that had to step past a retired model says where it landed.
    if p.model_in_use.as_ref().is_some_and(|m| *m != p.model) {
        label.push_str(&format!(" — on {}", p.model_shown()));
    }
    label
}

/// The second line under a provider row, when there is something to explain.
pub fn provider_detail(p: &ProviderSnapshot) -> Option<String> {
    let why = match p.state {
        ProviderStateKind::Ready => failing(p)?,
        ProviderStateKind::AuthFailed => p.last_error.as_deref()?,
        ProviderStateKind::CoolingDown => {
            p.cooldown_reason.as_deref().or(p.last_error.as_deref())?
        }
        ProviderStateKind::NoKey => return Some(format!("    add one: Set API key… › {}", p.name)),
        ProviderStateKind::Disabled => return None,
        ProviderStateKind::ModelRetired => {
            return p
                .retired_text()
                .map(|t| format!("    {}", shorten(&t, MAX_DETAIL_CHARS)))
        }
    };
    Some(format!("    {}", shorten(why, MAX_DETAIL_CHARS)))
}

/// Whether any of a provider's keys cools down or is benched (what "Reset cooldowns"
/// would end).
pub fn cooling(p: &ProviderSnapshot) -> bool {
    p.is_rate_limited || p.keys.iter().any(|k| k.rate_limited_until.is_some())
}

/// A provider's headroom line under its row ("    412 left today · resets 02:00"),
/// while it is on and its requests left today are known.
pub fn headroom_detail(p: &ProviderSnapshot, now: DateTime<Utc>) -> Option<String> {
    if !p.enabled {
        return None;
    }
    headroom::line(&p.headroom, p.runs_out_at, now).map(|l| format!("    {l}"))
}

/// The icon for this state: all serving; some cooling down, benched or refused; the last
/// provider standing; nothing can serve. Providers that are off or have no key are not
/// trouble: they were never meant to serve.
pub fn icon_for(snapshot: Option<&Snapshot>, bind_error: Option<&BindProblem>) -> IconKind {
    let Some(snap) = snapshot else {
        return IconKind::Down;
    };
    let ready = snap.ready_count();
    if bind_error.is_some() || ready == 0 {
        return IconKind::Down;
    }
    let troubled = snap.providers.iter().any(|p| {
        matches!(
            p.state,
            ProviderStateKind::CoolingDown
                | ProviderStateKind::AuthFailed
                | ProviderStateKind::ModelRetired
        )
    });
    match (troubled, ready) {
        (false, _) => IconKind::Ok,
        (true, 1) => IconKind::Last,
        (true, _) => IconKind::Cooling,
    }
}

fn header(input: &MenuInput<'_>) -> Vec<Item> {
    if let Some(problem) = input.bind_error {
        let why = if problem.in_use {
            format!("port {} is taken by another program", problem.port)
        } else {
            format!("cannot listen on port {}", problem.port)
        };
        return vec![
            Item::label("header", format!("Not serving — {why}")),
            Item::label(
                "header-fix",
                "    Fix: set server.port in the config file, then quit and reopen".into(),
            ),
        ];
    }
    let Some(snap) = input.snapshot else {
        return vec![Item::label("header", "Starting…".into())];
    };
    let mut rows = vec![Item::label(
        "header",
        format!(
            "Serving on {} — {} of {} ready",
            input.address,
            snap.ready_count(),
            snap.providers.len()
        ),
    )];
    if let Some(total) = headroom::pool_line(&snap.headroom) {
        rows.push(Item::label("headroom", format!("    {total}")));
    }
    rows
}

fn tooltip(input: &MenuInput<'_>) -> String {
    if let Some(problem) = input.bind_error {
        return format!(
            "llm-rotator: not serving (port {} unavailable)",
            problem.port
        );
    }
    let Some(snap) = input.snapshot else {
        return "llm-rotator: starting".into();
    };
    let cooling = snap
        .providers
        .iter()
        .filter(|p| p.state == ProviderStateKind::CoolingDown)
        .count();
    let mut text = format!(
        "llm-rotator: {} of {} providers ready on {}",
        snap.ready_count(),
        snap.providers.len(),
        input.address
    );
    if cooling > 0 {
        text.push_str(&format!(", {cooling} cooling down"));
    }
    text
}

/// Builds the menu for this state.
pub fn build(input: &MenuInput<'_>) -> MenuModel {
    let mut items = header(input);
    if let Some(notice) = input.notice {
        items.push(Item::label(
            "notice",
            format!("    {}", shorten(notice, MAX_DETAIL_CHARS)),
        ));
    }
    let mut counting_down = false;
    if let Some(snap) = input.snapshot.filter(|s| s.waiting > 0) {
        let n = snap.waiting;
        items.push(Item::label(
            "waiting",
            format!(
                "    {n} request{} waiting for a provider to come back",
                if n == 1 { "" } else { "s" }
            ),
        ));
    }
    if let Some(snap) = input.snapshot {
        if let Some(err) = &snap.config.last_error {
            items.push(Item::label(
                "config-error",
                format!(
                    "    Config not reloaded: {}",
                    shorten(err, MAX_DETAIL_CHARS)
                ),
            ));
        }
        if let Some(shared) = &snap.shared {
            let mut line = shared.headline();
            if let Some(first) = line.get(..1) {
                line = first.to_uppercase() + &line[1..];
            }
            items.push(Item::label(
                "shared",
                format!("    {}", shorten(&line, MAX_DETAIL_CHARS)),
            ));
        }
        if let Some(err) = &snap.state_error {
            items.push(Item::label(
                "state-error",
                format!("    State not saved: {}", shorten(err, MAX_DETAIL_CHARS)),
            ));
        }
        items.push(Item::Separator);
        for p in snap.by_priority() {
            counting_down |=
                p.state == ProviderStateKind::CoolingDown && p.cooldown_remaining_secs > 0;
            items.push(Item::Check {
                click: Click::Toggle(p.name.clone()),
                text: provider_label(p),
                checked: p.enabled,
                enabled: true,
            });
            if let Some(detail) = provider_detail(p) {
                items.push(Item::label(&format!("detail:{}", p.name), detail));
            }
            if let Some(left) = headroom_detail(p, input.now) {
                items.push(Item::label(&format!("headroom:{}", p.name), left));
            }
        }
    }
    let ready = input.snapshot.is_some();
    items.push(Item::Separator);
    items.push(Item::action(Click::OpenDashboard, "Open dashboard"));
    items.push(Item::action(Click::CopyUrl, "Copy endpoint URL"));
    items.push(Item::action(Click::OpenConfig, "Open config file"));
    items.push(Item::Action {
        click: Click::Reload,
        text: "Reload config".into(),
        enabled: ready,
    });
    items.push(Item::action(Click::OpenLogs, "Open logs folder"));
    items.push(Item::Submenu {
        id: "set-key".into(),
        text: "Set API key…".into(),
        enabled: !input.key_providers.is_empty(),
        items: input
            .key_providers
            .iter()
            .map(|p| Item::action(Click::SetKey(p.clone()), &format!("{p}…")))
            .collect(),
    });
    let resets: Vec<Item> = input
        .snapshot
        .map(|s| s.by_priority())
        .unwrap_or_default()
        .into_iter()
        .map(|p| Item::Action {
            click: Click::ResetCooldowns(p.name.clone()),
            text: p.name.clone(),
            enabled: cooling(p),
        })
        .collect();
    items.push(Item::Submenu {
        id: "reset".into(),
        text: "Reset cooldowns".into(),
        enabled: resets
            .iter()
            .any(|i| matches!(i, Item::Action { enabled: true, .. })),
        items: resets,
    });
    let (login_text, login_checked, login_enabled) = match input.login {
        LoginState::Checking => ("Start at login", false, false),
        LoginState::On => ("Start at login", true, true),
        LoginState::Off => ("Start at login", false, true),
        LoginState::Unavailable => ("Start at login (not available in this build)", false, false),
    };
    items.push(Item::Check {
        click: Click::Notifications,
        text: "Notifications".into(),
        checked: input.notifications,
        enabled: true,
    });
    items.push(Item::Check {
        click: Click::StartAtLogin,
        text: login_text.into(),
        checked: login_checked,
        enabled: login_enabled,
    });
    items.push(Item::Separator);
    items.push(Item::action(Click::Quit, "Quit llm-rotator"));
    MenuModel {
        icon: icon_for(input.snapshot, input.bind_error),
        tooltip: tooltip(input),
        items,
        counting_down,
    }
}

impl MenuModel {
    /// The menu as plain text, one row a line (`[x]`/`[ ]` for check marks, `(off)` for
    /// rows that cannot be clicked, `>` and indentation for submenus): what the
    /// `LLM_ROTATOR_TRAY_DUMP` debug file contains and what tests compare.
    pub fn dump(&self) -> String {
        fn rows(items: &[Item], indent: usize, out: &mut String) {
            let pad = "  ".repeat(indent);
            for item in items {
                let line = match item {
                    Item::Separator => "---".to_string(),
                    Item::Label { text, .. } => format!("(off) {text}"),
                    Item::Action { text, enabled, .. } => {
                        format!("{}{text}", if *enabled { "" } else { "(off) " })
                    }
                    Item::Check {
                        text,
                        checked,
                        enabled,
                        ..
                    } => format!(
                        "{}[{}] {text}",
                        if *enabled { "" } else { "(off) " },
                        if *checked { "x" } else { " " }
                    ),
                    Item::Submenu { text, enabled, .. } => {
                        format!("{}> {text}", if *enabled { "" } else { "(off) " })
                    }
                };
                out.push_str(&pad);
                out.push_str(&line);
                out.push('\n');
                if let Item::Submenu { items, .. } = item {
                    rows(items, indent + 1, out);
                }
            }
        }
        let mut out = format!("icon: {}\ntooltip: {}\n", self.icon.as_str(), self.tooltip);
        rows(&self.items, 0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
