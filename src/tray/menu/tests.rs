//! Unit tests of the menu model: every provider state, ordering, countdowns, icons, labels.

use super::*;
use crate::pool::{ConfigSnapshot, ProviderSnapshot, ProviderStateKind, Snapshot};

fn provider(name: &str, priority: u32, state: ProviderStateKind) -> ProviderSnapshot {
    ProviderSnapshot {
        name: name.into(),
        enabled: state != ProviderStateKind::Disabled,
        enabled_in_config: true,
        has_key: state != ProviderStateKind::NoKey,
        priority,
        model: "m".into(),
        models: Vec::new(),
        state,
        request_count: 0,
        total_requests: 0,
        total_tokens_used: 0,
        is_rate_limited: state == ProviderStateKind::CoolingDown,
        rate_limited_until: None,
        cooldown_remaining_secs: 0,
        cooldown_reason: None,
        cooldown_cause: None,
        last_error: None,
        last_error_kind: None,
        keys: Vec::new(),
        model_in_use: Some("m".into()),
        preferred: vec!["m".into()],
        retired_models: Default::default(),
        gone: None,
        catalog_fetched_at: None,
        catalog_models: 0,
        offers: Vec::new(),
        oversized_events: 0,
        headroom: Default::default(),
        runs_out_at: None,
        request_count_all_machines: None,
    }
}

fn snapshot(providers: Vec<ProviderSnapshot>) -> Snapshot {
    Snapshot {
        providers,
        key_store: None,
        config: ConfigSnapshot {
            path: None,
            last_error: None,
        },
        generated_at: "2026-01-01T00:00:00Z".into(),
        waiting: 0,
        state_error: None,
        headroom: Default::default(),
        shared: None,
    }
}

fn input(snap: Option<&Snapshot>) -> MenuInput<'_> {
    MenuInput {
        snapshot: snap,
        address: "localhost:8000",
        bind_error: None,
        key_providers: &[],
        login: LoginState::Off,
        notice: None,
        notifications: true,
        now: Utc::now(),
    }
}

fn texts(model: &MenuModel) -> Vec<String> {
    model.items.iter().map(|i| i.text().to_string()).collect()
}

fn provider_rows(model: &MenuModel) -> Vec<(String, bool)> {
    model
        .items
        .iter()
        .filter_map(|i| match i {
            Item::Check {
                click: Click::Toggle(_),
                text,
                checked,
                ..
            } => Some((text.clone(), *checked)),
            _ => None,
        })
        .collect()
}

#[test]
fn every_provider_state_has_its_words() {
    let mut cooling = provider("gemini", 1, ProviderStateKind::CoolingDown);
    cooling.cooldown_remaining_secs = 161;
    cooling.request_count = 12;
    let mut failing = provider("mistral", 2, ProviderStateKind::Ready);
    failing.last_error = Some("HTTP 502 from upstream".into());
    let cases = [
        (
            provider("groq", 1, ProviderStateKind::Ready),
            "groq — 0 today — ready",
        ),
        (cooling, "gemini — 12 today — cooling down 2:41"),
        (
            provider("openai", 1, ProviderStateKind::NoKey),
            "openai — 0 today — no key",
        ),
        (
            provider("xai", 1, ProviderStateKind::AuthFailed),
            "xai — 0 today — key rejected",
        ),
        (
            provider("ollama", 1, ProviderStateKind::Disabled),
            "ollama — 0 today — disabled",
        ),
        (failing, "mistral — 0 today — failing"),
    ];
    for (p, want) in cases {
        assert_eq!(provider_label(&p), want);
    }
}

#[test]
fn a_finished_rate_limit_is_not_a_failure() {
    let mut p = provider("gemini", 1, ProviderStateKind::Ready);
    p.last_error = Some("HTTP 429: quota exceeded".into());
    p.last_error_kind = Some(crate::pool::CauseKind::RateLimit);
    assert_eq!(state_text(&p), "ready");
    assert_eq!(provider_detail(&p), None);
    p.last_error = Some("connection failed".into());
    p.last_error_kind = Some(crate::pool::CauseKind::Transient);
    assert_eq!(state_text(&p), "failing");
    assert_eq!(
        provider_detail(&p).as_deref(),
        Some("    connection failed")
    );
}

#[test]
fn check_marks_follow_the_toggle() {
    let snap = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::Disabled),
        provider("c", 3, ProviderStateKind::NoKey),
    ]);
    let model = build(&input(Some(&snap)));
    let rows = provider_rows(&model);
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        [true, false, true]
    );
}

#[test]
fn providers_are_listed_in_priority_order() {
    let snap = snapshot(vec![
        provider("late", 3, ProviderStateKind::Ready),
        provider("first", 1, ProviderStateKind::Ready),
        provider("second", 2, ProviderStateKind::Ready),
    ]);
    let model = build(&input(Some(&snap)));
    let names: Vec<String> = provider_rows(&model)
        .into_iter()
        .map(|(t, _)| t.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["first", "second", "late"]);
}

#[test]
fn header_counts_ready_providers() {
    let snap = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::CoolingDown),
        provider("c", 3, ProviderStateKind::Ready),
        provider("d", 4, ProviderStateKind::NoKey),
        provider("e", 5, ProviderStateKind::Ready),
    ]);
    let model = build(&input(Some(&snap)));
    assert_eq!(texts(&model)[0], "Serving on localhost:8000 — 3 of 5 ready");
    assert_eq!(
        model.tooltip,
        "llm-rotator: 3 of 5 providers ready on localhost:8000, 1 cooling down"
    );
}

#[test]
fn a_taken_port_is_the_header_with_the_fix() {
    let snap = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    let problem = BindProblem {
        port: 8000,
        in_use: true,
    };
    let mut i = input(Some(&snap));
    i.bind_error = Some(&problem);
    let model = build(&i);
    let t = texts(&model);
    assert_eq!(t[0], "Not serving — port 8000 is taken by another program");
    assert!(t[1].contains("set server.port in the config file"), "{t:?}");
    assert_eq!(model.icon, IconKind::Down);
    assert!(model.tooltip.contains("not serving"));
    // The providers are still there to look at and toggle.
    assert_eq!(provider_rows(&model).len(), 1);
}

#[test]
fn other_bind_errors_do_not_blame_another_program() {
    let problem = BindProblem {
        port: 80,
        in_use: false,
    };
    let mut i = input(None);
    i.bind_error = Some(&problem);
    assert_eq!(
        texts(&build(&i))[0],
        "Not serving — cannot listen on port 80"
    );
}

#[test]
fn starting_shows_no_providers_and_no_reload() {
    let model = build(&input(None));
    assert_eq!(texts(&model)[0], "Starting…");
    assert!(provider_rows(&model).is_empty());
    assert!(model.items.iter().any(|i| matches!(
        i,
        Item::Action {
            click: Click::Reload,
            enabled: false,
            ..
        }
    )));
    assert_eq!(model.icon, IconKind::Down);
}

#[test]
fn the_icon_says_all_serving_when_providers_that_are_off_or_keyless_are_all_that_is_missing() {
    let ok = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::Disabled),
        provider("c", 3, ProviderStateKind::NoKey),
    ]);
    assert_eq!(icon_for(Some(&ok), None), IconKind::Ok);
    let one = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    assert_eq!(icon_for(Some(&one), None), IconKind::Ok);
}

#[test]
fn the_icon_says_some_are_cooling_while_two_or_more_still_serve() {
    let cooling = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::Ready),
        provider("c", 3, ProviderStateKind::CoolingDown),
    ]);
    assert_eq!(icon_for(Some(&cooling), None), IconKind::Cooling);
    let rejected = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::Ready),
        provider("c", 3, ProviderStateKind::AuthFailed),
    ]);
    assert_eq!(icon_for(Some(&rejected), None), IconKind::Cooling);
}

#[test]
fn the_icon_says_last_provider_standing_when_one_serves_and_others_cannot() {
    for trouble in [
        ProviderStateKind::CoolingDown,
        ProviderStateKind::AuthFailed,
        ProviderStateKind::ModelRetired,
    ] {
        let last = snapshot(vec![
            provider("a", 1, ProviderStateKind::Ready),
            provider("b", 2, trouble),
            provider("c", 3, ProviderStateKind::Disabled),
        ]);
        assert_eq!(icon_for(Some(&last), None), IconKind::Last, "{trouble:?}");
        assert_eq!(build(&input(Some(&last))).icon, IconKind::Last);
    }
}

#[test]
fn the_icon_says_down_when_nothing_can_serve_or_the_port_is_taken() {
    let down = snapshot(vec![
        provider("a", 1, ProviderStateKind::CoolingDown),
        provider("b", 2, ProviderStateKind::Disabled),
    ]);
    assert_eq!(icon_for(Some(&down), None), IconKind::Down);
    assert_eq!(icon_for(Some(&snapshot(Vec::new())), None), IconKind::Down);
    assert_eq!(icon_for(None, None), IconKind::Down);
    let ok = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    let taken = BindProblem {
        port: 8000,
        in_use: true,
    };
    assert_eq!(icon_for(Some(&ok), Some(&taken)), IconKind::Down);
}

fn left_today(left: u64, resets_at: DateTime<Utc>) -> crate::headroom::Headroom {
    crate::headroom::Headroom {
        requests_today: Some(crate::headroom::Left {
            left,
            resets_at,
            source: crate::headroom::Source::Provider,
        }),
        ..Default::default()
    }
}

#[test]
fn provider_rows_say_what_is_left_today_and_the_header_the_pools_total() {
    let now = Utc::now();
    let reset = now + chrono::Duration::hours(3);
    let mut groq = provider("groq", 1, ProviderStateKind::Ready);
    groq.headroom = left_today(412, reset);
    let mut gemini = provider("gemini", 2, ProviderStateKind::Ready);
    gemini.headroom = left_today(1488, reset);
    gemini.runs_out_at = Some(now + chrono::Duration::hours(1));
    let mut off = provider("off", 3, ProviderStateKind::Disabled);
    off.headroom = left_today(5, reset);
    let plain = provider("mistral", 4, ProviderStateKind::Ready);
    let mut snap = snapshot(vec![groq, gemini, off, plain]);
    snap.headroom = crate::headroom::PoolHeadroom {
        requests_left_today: Some(1900),
        providers: 2,
    };
    let mut i = input(Some(&snap));
    i.now = now;
    let dump = build(&i).dump();
    let lines: Vec<&str> = dump.lines().collect();
    let at = |t| crate::headroom::clock(t, now);
    let header = lines
        .iter()
        .position(|l| l.starts_with("(off) Serving on"))
        .expect("header");
    assert_eq!(
        lines[header + 1],
        "(off)     ~1,900 requests left today across 2 providers"
    );
    let groq_row = lines
        .iter()
        .position(|l| *l == "[x] groq — 0 today — ready")
        .expect("groq row");
    assert_eq!(
        lines[groq_row + 1],
        format!("(off)     412 left today · resets {}", at(reset))
    );
    assert!(dump.contains(&format!(
        "(off)     1,488 left today · resets {} · runs out ~{} at this pace",
        at(reset),
        at(now + chrono::Duration::hours(1))
    )));
    // A provider that is off, or knows nothing, gets no line.
    assert!(!dump.contains("5 left today"), "{dump}");
    let mistral = lines
        .iter()
        .position(|l| *l == "[x] mistral — 0 today — ready")
        .expect("mistral row");
    assert!(!lines[mistral + 1].contains("left today"));
}

#[test]
fn the_notifications_toggle_shows_its_state() {
    let snap = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    let mut i = input(Some(&snap));
    assert!(build(&i).dump().contains("\n[x] Notifications\n"));
    i.notifications = false;
    assert!(build(&i).dump().contains("\n[ ] Notifications\n"));
}

#[test]
fn only_a_running_countdown_asks_for_ticks() {
    let idle = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::AuthFailed),
    ]);
    assert!(!build(&input(Some(&idle))).counting_down);
    let mut p = provider("b", 2, ProviderStateKind::CoolingDown);
    p.cooldown_remaining_secs = 5;
    let cooling = snapshot(vec![provider("a", 1, ProviderStateKind::Ready), p]);
    assert!(build(&input(Some(&cooling))).counting_down);
}

#[test]
fn failures_are_explained_on_a_second_line() {
    let mut failing = provider("mistral", 1, ProviderStateKind::Ready);
    failing.last_error = Some("HTTP 502 from upstream".into());
    let mut cooling = provider("gemini", 2, ProviderStateKind::CoolingDown);
    cooling.cooldown_reason = Some("rate limited (HTTP 429)".into());
    cooling.cooldown_remaining_secs = 30;
    let mut rejected = provider("xai", 3, ProviderStateKind::AuthFailed);
    rejected.last_error = Some("x".repeat(200));
    let nokey = provider("openai", 4, ProviderStateKind::NoKey);
    let disabled = provider("ollama", 5, ProviderStateKind::Disabled);
    let ready = provider("groq", 6, ProviderStateKind::Ready);
    assert_eq!(
        provider_detail(&failing).as_deref(),
        Some("    HTTP 502 from upstream")
    );
    assert_eq!(
        provider_detail(&cooling).as_deref(),
        Some("    rate limited (HTTP 429)")
    );
    let long = provider_detail(&rejected).unwrap_or_default();
    assert_eq!(long.trim().chars().count(), MAX_DETAIL_CHARS);
    assert!(long.ends_with('…'));
    assert!(provider_detail(&nokey)
        .unwrap_or_default()
        .contains("Set API key"));
    assert_eq!(provider_detail(&disabled), None);
    assert_eq!(provider_detail(&ready), None);
    let model = build(&input(Some(&snapshot(vec![failing, ready]))));
    let t = texts(&model);
    let row = t.iter().position(|x| x.starts_with("mistral")).unwrap_or(0);
    assert_eq!(t[row + 1], "    HTTP 502 from upstream");
    assert!(t[row + 2].starts_with("groq"));
}

#[test]
fn countdowns_read_as_minutes_and_seconds() {
    let mut p = provider("gemini", 1, ProviderStateKind::CoolingDown);
    for (secs, want) in [
        (0, "0:00"),
        (9, "0:09"),
        (61, "1:01"),
        (600, "10:00"),
        (3725, "1:02:05"),
    ] {
        p.cooldown_remaining_secs = secs;
        assert_eq!(state_text(&p), format!("cooling down {want}"));
    }
}

#[test]
fn actions_are_all_there_in_order() {
    let snap = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    let keys = vec!["groq".to_string(), "gemini".to_string()];
    let mut i = input(Some(&snap));
    i.key_providers = &keys;
    let model = build(&i);
    let t = texts(&model);
    let tail: Vec<&str> = t.iter().map(String::as_str).skip(3).collect();
    assert_eq!(
        tail,
        [
            "",
            "Open dashboard",
            "Copy endpoint URL",
            "Open config file",
            "Reload config",
            "Open logs folder",
            "Set API key…",
            "Reset cooldowns",
            "Notifications",
            "Start at login",
            "",
            "Quit llm-rotator"
        ]
    );
    let sub = model.items.iter().find_map(|i| match i {
        Item::Submenu { items, .. } => Some(items.clone()),
        _ => None,
    });
    let sub = sub.unwrap_or_default();
    assert_eq!(
        sub.iter().map(Item::text).collect::<Vec<_>>(),
        ["groq…", "gemini…"]
    );
    assert_eq!(sub[0].id(), "set-key:groq");
}

#[test]
fn start_at_login_reflects_the_service_state() {
    let check = |login| {
        let mut i = input(None);
        i.login = login;
        build(&i)
            .items
            .into_iter()
            .find_map(|i| match i {
                Item::Check {
                    click: Click::StartAtLogin,
                    text,
                    checked,
                    enabled,
                } => Some((text, checked, enabled)),
                _ => None,
            })
            .unwrap_or_default()
    };
    assert_eq!(check(LoginState::On), ("Start at login".into(), true, true));
    assert_eq!(
        check(LoginState::Off),
        ("Start at login".into(), false, true)
    );
    assert!(!check(LoginState::Checking).2);
    let unavailable = check(LoginState::Unavailable);
    assert!(!unavailable.2 && unavailable.0.contains("not available"));
}

#[test]
fn notices_and_config_errors_show_under_the_header() {
    let mut snap = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    snap.config.last_error = Some("line 3, column 1: unknown field `prot`".into());
    let mut i = input(Some(&snap));
    i.notice = Some("Run in a terminal: llm-rotator keys set groq");
    let t = texts(&build(&i));
    assert_eq!(t[1], "    Run in a terminal: llm-rotator keys set groq");
    assert_eq!(
        t[2],
        "    Config not reloaded: line 3, column 1: unknown field `prot`"
    );
}

#[test]
fn a_state_file_that_cannot_be_saved_shows_under_the_header() {
    let mut snap = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    assert!(!build(&input(Some(&snap)))
        .dump()
        .contains("State not saved"));
    snap.state_error = Some(
        "cannot write /data/state.json: Read-only file system (os error 30); counters and cooldowns are not being saved (retrying)".into(),
    );
    let t = texts(&build(&input(Some(&snap))));
    assert!(
        t[1].starts_with("    State not saved: cannot write /data/state.json: Read-only"),
        "{t:?}"
    );
}

#[test]
fn click_ids_round_trip() {
    for c in [
        Click::Toggle("groq".into()),
        Click::CopyUrl,
        Click::OpenDashboard,
        Click::OpenConfig,
        Click::Reload,
        Click::OpenLogs,
        Click::SetKey("gemini".into()),
        Click::ResetCooldowns("groq".into()),
        Click::StartAtLogin,
        Click::Notifications,
        Click::Quit,
    ] {
        assert_eq!(Click::from_id(&c.id()), Some(c));
    }
    assert_eq!(Click::from_id("header"), None);
    assert_eq!(Click::from_id("detail:groq"), None);
}

#[test]
fn dump_marks_checks_disabled_rows_and_submenus() {
    let snap = snapshot(vec![
        provider("a", 1, ProviderStateKind::Ready),
        provider("b", 2, ProviderStateKind::Disabled),
    ]);
    let keys = vec!["a".to_string()];
    let mut i = input(Some(&snap));
    i.key_providers = &keys;
    let dump = build(&i).dump();
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines[0], "icon: ok");
    assert!(lines.contains(&"(off) Serving on localhost:8000 — 1 of 2 ready"));
    assert!(lines.contains(&"[x] a — 0 today — ready"));
    assert!(lines.contains(&"[ ] b — 0 today — disabled"));
    assert!(lines.contains(&"> Set API key…"));
    assert!(lines.contains(&"  a…"));
    assert!(lines.contains(&"---"));
}

#[test]
fn shorten_cuts_on_characters() {
    assert_eq!(shorten("  short  ", 10), "short");
    assert_eq!(shorten("ééééé", 3), "éé…");
}

#[test]
fn waiting_requests_are_counted_under_the_header() {
    let mut snap = snapshot(vec![]);
    assert!(!build(&input(Some(&snap))).dump().contains("waiting"));
    snap.waiting = 3;
    let dump = build(&input(Some(&snap))).dump();
    assert!(
        dump.contains("3 requests waiting for a provider to come back"),
        "{dump}"
    );
}

#[test]
fn a_provider_whose_models_are_retired_says_so_and_what_it_offers() {
    let mut p = provider("groq", 1, ProviderStateKind::ModelRetired);
    p.model = "llama-3.3-70b-versatile".into();
    p.preferred = vec!["llama-3.3-70b-versatile".into()];
    p.model_in_use = None;
    p.retired_models.insert(
        "llama-3.3-70b-versatile".into(),
        "model unavailable (HTTP 400: decommissioned)".into(),
    );
    p.offers = vec!["openai/gpt-oss-120b".into(), "qwen/qwen3.6-27b".into()];
    let snap = snapshot(vec![p]);
    let dump = build(&input(Some(&snap))).dump();
    assert!(dump.contains("groq — 0 today — model retired"), "{dump}");
    assert!(
        dump.contains(
            "model retired: llama-3.3-70b-versatile; provider offers openai/gpt-oss-120b"
        ),
        "{dump}"
    );
}

#[test]
fn a_preference_list_that_stepped_past_a_retired_model_says_where_it_landed() {
    let mut p = provider("groq", 1, ProviderStateKind::Ready);
    p.model = "old".into();
    p.preferred = vec!["old".into(), "new".into()];
    p.model_in_use = Some("new".into());
    let snap = snapshot(vec![p]);
    let dump = build(&input(Some(&snap))).dump();
    assert!(
        dump.contains("groq — 0 today — ready — on new (old retired)"),
        "{dump}"
    );
}

#[test]
fn reset_cooldowns_lists_every_provider_and_only_cooling_ones_can_be_clicked() {
    let snap = snapshot(vec![
        provider("b", 2, ProviderStateKind::CoolingDown),
        provider("a", 1, ProviderStateKind::Ready),
    ]);
    let dump = build(&input(Some(&snap))).dump();
    let lines: Vec<&str> = dump.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "> Reset cooldowns")
        .unwrap_or_else(|| panic!("no reset submenu in {dump}"));
    assert_eq!(lines[at + 1..at + 3], ["  (off) a", "  b"]);
    let model = build(&input(Some(&snap)));
    let reset = model.items.iter().find_map(|i| match i {
        Item::Submenu { id, items, .. } if id == "reset" => Some(items.clone()),
        _ => None,
    });
    assert_eq!(
        reset.unwrap_or_default()[1].id(),
        "reset:b",
        "the click goes to the provider's reset"
    );
    // Nothing cooling: the submenu itself cannot be opened.
    let calm = snapshot(vec![provider("a", 1, ProviderStateKind::Ready)]);
    assert!(build(&input(Some(&calm)))
        .dump()
        .contains("(off) > Reset cooldowns"));
}

#[test]
fn the_shared_pool_shows_its_machines_or_that_it_is_offline() {
    use crate::pool::{SharedMachine, SharedSnapshot};
    let mut snap = snapshot(vec![provider("groq", 1, ProviderStateKind::Ready)]);
    let machine = |name: &str, this: bool| SharedMachine {
        name: name.into(),
        this,
        last_seen: "2026-01-01T00:00:00Z".into(),
        last_seen_secs: 4,
    };
    snap.shared = Some(SharedSnapshot {
        pool: "home".into(),
        server: "redis://10.0.0.5:6379".into(),
        state: "online".into(),
        since: "2026-01-01T00:00:00Z".into(),
        error: None,
        machines: vec![machine("laptop", true), machine("studio", false)],
    });
    let shown = texts(&build(&input(Some(&snap))));
    assert!(
        shown
            .iter()
            .any(|t| t.trim() == "Shared pool home: 2 machines"),
        "{shown:?}"
    );
    let shared = snap.shared.as_mut().expect("shared");
    shared.state = "offline".into();
    shared.error = Some("connection refused".into());
    let shown = texts(&build(&input(Some(&snap))));
    assert!(
        shown
            .iter()
            .any(|t| t.trim() == "Shared pool offline: connection refused"),
        "{shown:?}"
    );
    assert_eq!(
        snap.shared.as_ref().expect("shared").machines[1].words(),
        "studio (seen 4 s ago)"
    );
}
