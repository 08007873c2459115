//! The event loop on the main thread: owns the tray icon and its menu (neither is `Send`),
//! turns [`super::menu::MenuModel`]s into menu items and clicks into engine commands.
//! Everything that can block (processes, dialogs, reloads) runs elsewhere and comes back
//! as a user event; the loop sleeps until an event arrives, woken once a second by the
//! ticker thread only while a cooldown counts down. (`ControlFlow::WaitUntil` would be the
//! natural tool, but tao's GTK backend blocks in `gtk::main_iteration_do` without a
//! timeout, so a deadline alone never wakes the loop on Linux.)

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use tao::event::{Event, StartCause};
use tao::event_loop::{ControlFlow, EventLoopBuilder, EventLoopProxy};
use tao::platform::run_return::EventLoopExtRunReturn;
use tray_icon::menu::{
    CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuId, MenuItem, PredefinedMenuItem, Submenu,
};
use tray_icon::{Icon, TrayIcon, TrayIconBuilder};

use super::actions::{self, KeyOutcome, SelfCommand};
use super::icons;
use super::menu::{self, BindProblem, Click, IconKind, Item, LoginState, MenuInput, MenuModel};
use crate::agent::{self, Background, Prepared, ServeOptions, Started};
use crate::engine::Engine;
use crate::http::ServeError;

/// At most this many refreshes a second come from state changes (the watch coalesces the
/// rest), so heavy traffic cannot keep the UI thread busy.
const CHANGE_COALESCE: Duration = Duration::from_millis(100);

/// How long the outcome of an action stays in the menu.
const NOTICE_FOR: Duration = Duration::from_secs(60);

/// Messages from other threads to the event loop.
enum UserEvent {
    /// The proxy thread is up (or could not bind its port).
    Started(Box<Started>),
    /// The provider state changed.
    Changed,
    /// A menu item was clicked.
    Menu(MenuId),
    /// An action finished; show this line.
    Notice(String),
    /// The login item's state is known.
    Login(LoginState),
    /// A second has passed while something counts down.
    Tick,
    /// The proxy thread has stopped.
    Stopped,
}

/// A menu item as built, mirroring [`Item`].
enum Built {
    Plain(MenuItem),
    Check(CheckMenuItem),
    Submenu(Submenu, Vec<Built>),
    Separator(PredefinedMenuItem),
}

impl Built {
    fn new(item: &Item) -> Built {
        match item {
            Item::Label { id, text } => Built::Plain(MenuItem::with_id(id, text, false, None)),
            Item::Action {
                click,
                text,
                enabled,
            } => Built::Plain(MenuItem::with_id(click.id(), text, *enabled, None)),
            Item::Check {
                click,
                text,
                checked,
                enabled,
            } => Built::Check(CheckMenuItem::with_id(
                click.id(),
                text,
                *enabled,
                *checked,
                None,
            )),
            Item::Submenu {
                id,
                text,
                enabled,
                items,
            } => {
                let sub = Submenu::with_id(id, text, *enabled);
                let children: Vec<Built> = items.iter().map(Built::new).collect();
                for c in &children {
                    if let Err(e) = sub.append(c.as_item()) {
                        tracing::warn!("cannot add a menu item: {e}");
                    }
                }
                Built::Submenu(sub, children)
            }
            Item::Separator => Built::Separator(PredefinedMenuItem::separator()),
        }
    }

    fn as_item(&self) -> &dyn IsMenuItem {
        match self {
            Built::Plain(i) => i,
            Built::Check(i) => i,
            Built::Submenu(i, _) => i,
            Built::Separator(i) => i,
        }
    }

    /// Brings the built item in line with `item` (same shape), touching only what differs.
    fn update(&self, item: &Item) {
        match (self, item) {
            (Built::Plain(b), Item::Label { text, .. }) if b.text() != *text => b.set_text(text),
            (Built::Plain(b), Item::Action { text, enabled, .. }) => {
                if b.text() != *text {
                    b.set_text(text);
                }
                if b.is_enabled() != *enabled {
                    b.set_enabled(*enabled);
                }
            }
            (
                Built::Check(b),
                Item::Check {
                    text,
                    checked,
                    enabled,
                    ..
                },
            ) => {
                if b.text() != *text {
                    b.set_text(text);
                }
                if b.is_enabled() != *enabled {
                    b.set_enabled(*enabled);
                }
                // Also after a click, which flips the mark before the engine has spoken.
                if b.is_checked() != *checked {
                    b.set_checked(*checked);
                }
            }
            (
                Built::Submenu(b, children),
                Item::Submenu {
                    text,
                    enabled,
                    items,
                    ..
                },
            ) => {
                if b.text() != *text {
                    b.set_text(text);
                }
                if b.is_enabled() != *enabled {
                    b.set_enabled(*enabled);
                }
                for (c, i) in children.iter().zip(items) {
                    c.update(i);
                }
            }
            _ => {}
        }
    }
}

/// The menu's structure (kinds and ids): when it changes the menu is rebuilt, otherwise
/// updated in place so an open menu stays open while its labels count down.
fn shape(items: &[Item]) -> Vec<String> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Label { id, .. } => out.push(format!("L{id}")),
            Item::Action { click, .. } => out.push(format!("A{}", click.id())),
            Item::Check { click, .. } => out.push(format!("C{}", click.id())),
            Item::Submenu { id, items, .. } => {
                out.push(format!("S{id}"));
                out.extend(shape(items).into_iter().map(|s| format!(">{s}")));
            }
            Item::Separator => out.push("-".into()),
        }
    }
    out
}

fn tray_icon(kind: IconKind) -> Option<Icon> {
    let decoded = icons::decode(icons::png_bytes(kind))
        .map_err(|e| tracing::error!("{e}"))
        .ok()?;
    Icon::from_rgba(decoded.pixels, decoded.width, decoded.height)
        .map_err(|e| tracing::error!("cannot use the {} icon: {e}", kind.as_str()))
        .ok()
}

/// Writes menu dumps to the debug file on a thread of its own (disk I/O stays off the UI
/// thread); a temporary file plus rename, so readers never see half a dump.
fn dump_writer(path: PathBuf) -> mpsc::Sender<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let spawned = std::thread::Builder::new()
        .name("llm-rotator-dump".into())
        .spawn(move || {
            let tmp = path.with_extension("tmp");
            while let Ok(mut text) = rx.recv() {
                // Only the newest dump matters.
                while let Ok(newer) = rx.try_recv() {
                    text = newer;
                }
                if let Err(e) =
                    std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    tracing::warn!("cannot write the menu dump {}: {e}", path.display());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the menu dump writer: {e}");
    }
    tx
}

/// Sends [`UserEvent::Tick`] at the deadline it was last given (`None`: sleep until
/// told otherwise). Ends when the sender is dropped.
fn ticker(proxy: EventLoopProxy<UserEvent>) -> mpsc::Sender<Option<Instant>> {
    let (tx, rx) = mpsc::channel::<Option<Instant>>();
    let spawned = std::thread::Builder::new()
        .name("llm-rotator-ticker".into())
        .spawn(move || {
            let mut deadline: Option<Instant> = None;
            loop {
                let next = match deadline {
                    None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                    Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
                };
                match next {
                    Ok(d) => deadline = d,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        deadline = None;
                        if proxy.send_event(UserEvent::Tick).is_err() {
                            break;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start the countdown ticker: {e}");
    }
    tx
}

struct App {
    proxy: EventLoopProxy<UserEvent>,
    tray: Option<TrayIcon>,
    built: Vec<Built>,
    shape: Vec<String>,
    last: Option<MenuModel>,
    icon: Option<IconKind>,
    engine: Option<Engine>,
    runtime: Option<tokio::runtime::Handle>,
    /// Captured at start-up: a reloaded config's new port only applies after a restart.
    address: String,
    endpoint_url: String,
    /// The dashboard's address (`/ui`), captured with the endpoint.
    dashboard_url: String,
    bind_error: Option<BindProblem>,
    login: LoginState,
    /// The last action's outcome and when it goes away.
    notice: Option<(String, Instant)>,
    me: Option<SelfCommand>,
    config_path: PathBuf,
    log_dir: PathBuf,
    background: Option<Background>,
    /// The next countdown refresh, while something counts down.
    countdown_tick: Option<Instant>,
    /// The wake-up the ticker was last given.
    wake: Option<Instant>,
    ticker: mpsc::Sender<Option<Instant>>,
    exiting: bool,
    dump: Option<mpsc::Sender<String>>,
}

impl App {
    fn create_tray(&mut self) {
        let kind = IconKind::Down;
        let mut builder = TrayIconBuilder::new()
            .with_tooltip("llm-rotator: starting")
            .with_icon_as_template(icons::TEMPLATE)
            .with_menu_on_left_click(true);
        if let Some(icon) = tray_icon(kind) {
            builder = builder.with_icon(icon);
        }
        match builder.build() {
            Ok(tray) => {
                self.tray = Some(tray);
                self.icon = Some(kind);
            }
            Err(e) => tracing::error!("cannot show the menu-bar icon: {e}"),
        }
    }

    fn model(&self) -> MenuModel {
        let snapshot = self.engine.as_ref().map(|e| e.pool.snapshot(Utc::now()));
        let mut key_providers: Vec<(u32, String)> = self
            .engine
            .as_ref()
            .map(|e| e.pool.configs())
            .unwrap_or_default()
            .iter()
            .filter(|p| p.requires_key)
            .map(|p| (p.priority, p.name.clone()))
            .collect();
        key_providers.sort_by_key(|(priority, _)| *priority);
        let key_providers: Vec<String> = key_providers.into_iter().map(|(_, n)| n).collect();
        menu::build(&MenuInput {
            snapshot: snapshot.as_ref(),
            address: &self.address,
            bind_error: self.bind_error.as_ref(),
            key_providers: &key_providers,
            login: self.login,
            notice: self
                .notice
                .as_ref()
                .filter(|(_, until)| *until > Instant::now())
                .map(|(text, _)| text.as_str()),
            notifications: self
                .engine
                .as_ref()
                .is_none_or(|e| e.settings.notifications()),
            now: Utc::now(),
        })
    }

    /// Recomputes the menu, applies what changed, and decides when to wake up next.
    fn refresh(&mut self, control_flow: &mut ControlFlow) {
        if self.exiting {
            *control_flow = ControlFlow::Exit;
            return;
        }
        *control_flow = ControlFlow::Wait;
        let now = Instant::now();
        if self.notice.as_ref().is_some_and(|(_, until)| *until <= now) {
            self.notice = None;
        }
        let model = self.model();
        self.countdown_tick = model.counting_down.then(|| match self.countdown_tick {
            Some(t) if t > now => t,
            // Step from the previous tick so the countdown does not drift.
            Some(t) if t + Duration::from_secs(1) > now => t + Duration::from_secs(1),
            _ => now + Duration::from_secs(1),
        });
        let notice_ends = self.notice.as_ref().map(|(_, until)| *until);
        let next = match (self.countdown_tick, notice_ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if next != self.wake {
            self.wake = next;
            let _ = self.ticker.send(next);
        }
        self.apply(model);
    }

    fn apply(&mut self, model: MenuModel) {
        let Some(tray) = &self.tray else {
            return;
        };
        if self.last.as_ref() == Some(&model) {
            return;
        }
        if self.icon != Some(model.icon) {
            if let Some(icon) = tray_icon(model.icon) {
                // Only macOS knows templates (elsewhere the call does nothing).
                let set = if icons::TEMPLATE {
                    tray.set_icon_with_as_template(Some(icon), true)
                } else {
                    tray.set_icon(Some(icon))
                };
                if let Err(e) = set {
                    tracing::warn!("cannot change the menu-bar icon: {e}");
                }
            }
            self.icon = Some(model.icon);
        }
        if self.last.as_ref().map(|m| &m.tooltip) != Some(&model.tooltip) {
            if let Err(e) = tray.set_tooltip(Some(&model.tooltip)) {
                tracing::debug!("cannot set the tooltip: {e}");
            }
        }
        let shape = shape(&model.items);
        if shape == self.shape {
            for (b, item) in self.built.iter().zip(&model.items) {
                b.update(item);
            }
        } else {
            let built: Vec<Built> = model.items.iter().map(Built::new).collect();
            let menu = Menu::new();
            for b in &built {
                if let Err(e) = menu.append(b.as_item()) {
                    tracing::warn!("cannot add a menu item: {e}");
                }
            }
            tray.set_menu(Some(Box::new(menu)));
            self.built = built;
            self.shape = shape;
        }
        if let Some(dump) = &self.dump {
            let _ = dump.send(model.dump());
        }
        self.last = Some(model);
    }

    /// Runs `work` on a thread of its own and shows the notice it returns.
    fn job(&self, work: impl FnOnce() -> Option<String> + Send + 'static) {
        let proxy = self.proxy.clone();
        let spawned = std::thread::Builder::new()
            .name("llm-rotator-action".into())
            .spawn(move || {
                if let Some(notice) = work() {
                    let _ = proxy.send_event(UserEvent::Notice(notice));
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start an action: {e}");
        }
    }

    fn check_login_item(&self) {
        let Some(me) = self.me.clone() else {
            return;
        };
        let proxy = self.proxy.clone();
        self.job(move || {
            let state = match actions::login_item_installed(&me) {
                None => LoginState::Unavailable,
                Some(true) => LoginState::On,
                Some(false) => LoginState::Off,
            };
            let _ = proxy.send_event(UserEvent::Login(state));
            None
        });
    }

    fn on_started(&mut self, started: Started) {
        let config = started.engine.config();
        self.endpoint_url = config.endpoint_url();
        self.dashboard_url = crate::browser::dashboard_url(&config);
        self.address = self
            .endpoint_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
            .to_string();
        self.bind_error = started.bind_error.as_ref().map(|e| match e {
            ServeError::Bind { addr, source } => BindProblem {
                port: addr.port(),
                in_use: source.kind() == std::io::ErrorKind::AddrInUse,
            },
            ServeError::Io(_) => BindProblem {
                port: config.server.port,
                in_use: false,
            },
        });
        // Forward every state change to the loop; the watch coalesces bursts.
        let mut changes = started.engine.pool.subscribe();
        let proxy = self.proxy.clone();
        started.runtime.spawn(async move {
            while changes.changed().await.is_ok() {
                if proxy.send_event(UserEvent::Changed).is_err() {
                    break;
                }
                tokio::time::sleep(CHANGE_COALESCE).await;
            }
        });
        self.engine = Some(started.engine);
        self.runtime = Some(started.runtime);
    }

    fn on_click(&mut self, click: Click) {
        match click {
            Click::Toggle(name) => {
                let Some(engine) = &self.engine else {
                    return;
                };
                let on = engine
                    .pool
                    .snapshot(Utc::now())
                    .providers
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| p.enabled);
                if let Some(on) = on {
                    engine.set_enabled(&name, !on);
                }
                // The click flipped the check mark itself: re-apply the engine's word.
                self.last = None;
            }
            Click::ResetCooldowns(name) => {
                // The same command as `POST /providers/{name}/reset`.
                if let Some(engine) = &self.engine {
                    engine.reset_provider(&name);
                }
                self.last = None;
            }
            Click::CopyUrl => {
                let url = self.endpoint_url.clone();
                self.job(move || Some(actions::copy_to_clipboard(&url)));
            }
            Click::OpenDashboard => {
                let url = self.dashboard_url.clone();
                self.job(move || {
                    crate::browser::open(&url).err().map(|why| {
                        format!("Could not open a browser ({why}); the dashboard is at {url}")
                    })
                });
            }
            Click::OpenConfig => {
                let path = self.config_path.clone();
                self.job(move || actions::open_path(&path, false));
            }
            Click::OpenLogs => {
                let path = self.log_dir.clone();
                self.job(move || actions::open_path(&path, true));
            }
            Click::Reload => {
                let (Some(engine), Some(runtime)) = (self.engine.clone(), &self.runtime) else {
                    return;
                };
                let proxy = self.proxy.clone();
                runtime.spawn(async move {
                    let notice = match engine.reload().await {
                        Ok(config) => {
                            format!("Config reloaded ({} providers)", config.providers.len())
                        }
                        // The error itself shows on its own line, from the snapshot.
                        Err(_) => "Config not reloaded; the running one stays".to_string(),
                    };
                    let _ = proxy.send_event(UserEvent::Notice(notice));
                });
            }
            Click::SetKey(provider) => {
                let Some(me) = self.me.clone() else {
                    self.notice =
                        Some((actions::keys_hint(&provider), Instant::now() + NOTICE_FOR));
                    return;
                };
                let reload = self.engine.clone().zip(self.runtime.clone());
                self.job(move || match actions::set_key(&me, &provider) {
                    KeyOutcome::Saved(notice) => {
                        if let Some((engine, runtime)) = reload {
                            runtime.spawn(async move {
                                // Errors are logged by reload_keys' callers' logs.
                                if let Err(e) = engine.reload_keys().await {
                                    tracing::error!("cannot re-read the keys: {e}");
                                }
                            });
                        }
                        Some(notice)
                    }
                    KeyOutcome::Unchanged(notice) => notice,
                });
            }
            Click::StartAtLogin => {
                let Some(me) = self.me.clone() else {
                    return;
                };
                let want = self.login != LoginState::On;
                self.login = LoginState::Checking;
                let proxy = self.proxy.clone();
                self.job(move || {
                    let result = actions::set_login_item(&me, want);
                    let state = match actions::login_item_installed(&me) {
                        None => LoginState::Unavailable,
                        Some(true) => LoginState::On,
                        Some(false) => LoginState::Off,
                    };
                    let _ = proxy.send_event(UserEvent::Login(state));
                    result.err()
                });
            }
            Click::Notifications => {
                // The same command as `POST /notifications/enable|disable`; saving the
                // choice happens off this thread.
                if let Some(engine) = &self.engine {
                    let on = !engine.settings.notifications();
                    engine.settings.set_notifications(on);
                    tracing::info!(on, "notifications toggled from the menu");
                }
                self.last = None;
            }
            Click::Quit => self.quit(),
        }
    }

    fn quit(&mut self) {
        tracing::info!("quitting from the menu");
        // The icon goes at once; the loop ends when the proxy has finished its requests.
        self.tray = None;
        match &mut self.background {
            Some(bg) => bg.stop(),
            None => self.exiting = true,
        }
    }

    fn on_user_event(&mut self, event: UserEvent, control_flow: &mut ControlFlow) {
        match event {
            UserEvent::Started(started) => {
                self.on_started(*started);
                self.check_login_item();
            }
            UserEvent::Changed | UserEvent::Tick => {}
            UserEvent::Menu(id) => match Click::from_id(id.as_ref()) {
                Some(click) => self.on_click(click),
                None => return,
            },
            UserEvent::Notice(text) => self.notice = Some((text, Instant::now() + NOTICE_FOR)),
            UserEvent::Login(state) => self.login = state,
            UserEvent::Stopped => {
                self.tray = None;
                self.exiting = true;
            }
        }
        self.refresh(control_flow);
    }
}

/// Runs the menu-bar app until Quit; returns how the proxy ended.
pub fn run(prepared: Prepared, opts: &ServeOptions) -> Result<()> {
    let Prepared {
        config,
        paths,
        log_guard: _log_guard,
        config_error,
    } = prepared;
    let mut event_loop = EventLoopBuilder::<UserEvent>::with_user_event().build();
    #[cfg(target_os = "macos")]
    {
        // A menu-bar agent: no Dock icon, no app menu (Info.plist says LSUIElement too).
        use tao::platform::macos::{ActivationPolicy, EventLoopExtMacOS};
        event_loop.set_activation_policy(ActivationPolicy::Accessory);
    }
    let proxy = event_loop.create_proxy();
    let menu_proxy = proxy.clone();
    MenuEvent::set_event_handler(Some(move |event: MenuEvent| {
        let _ = menu_proxy.send_event(UserEvent::Menu(event.id));
    }));

    let me = SelfCommand::new(opts.config.as_deref(), opts.data_dir.as_deref())
        .map_err(|e| tracing::warn!("cannot find the llm-rotator executable: {e}"))
        .ok();
    let dump = std::env::var_os(super::DUMP_ENV).map(|p| dump_writer(PathBuf::from(p)));
    let endpoint_url = config.endpoint_url();
    let dashboard_url = crate::browser::dashboard_url(&config);
    let mut app = App {
        proxy: proxy.clone(),
        tray: None,
        built: Vec::new(),
        shape: Vec::new(),
        last: None,
        icon: None,
        engine: None,
        runtime: None,
        address: endpoint_url
            .trim_start_matches("http://")
            .trim_end_matches("/v1")
            .to_string(),
        endpoint_url,
        dashboard_url,
        bind_error: None,
        login: LoginState::Checking,
        notice: None,
        me,
        config_path: paths.config.clone(),
        log_dir: paths.log_dir.clone(),
        background: None,
        countdown_tick: None,
        wake: None,
        ticker: ticker(proxy.clone()),
        exiting: false,
        dump,
    };
    let started_proxy = proxy.clone();
    let stopped_proxy = proxy;
    app.background = Some(agent::serve_in_background(
        config,
        paths,
        config_error,
        Box::new(move |started| {
            let _ = started_proxy.send_event(UserEvent::Started(Box::new(started)));
        }),
        Box::new(move || {
            let _ = stopped_proxy.send_event(UserEvent::Stopped);
        }),
    )?);

    let code = event_loop.run_return(|event, _, control_flow| match event {
        Event::NewEvents(StartCause::Init) => {
            app.create_tray();
            app.refresh(control_flow);
        }
        Event::UserEvent(e) => app.on_user_event(e, control_flow),
        _ => {}
    });
    MenuEvent::set_event_handler(None::<fn(MenuEvent)>);
    let served = app.background.take().map_or(Ok(()), Background::join);
    if code != 0 {
        served?;
        anyhow::bail!("the menu-bar event loop ended with code {code} (display gone?)");
    }
    served.context("the proxy stopped with an error")
}
