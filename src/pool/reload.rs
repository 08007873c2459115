//! A reload's merge: the new providers and keys replace the old ones, and each keeps its
//! health, cooldowns and counters by name (by key hash for keys).

use super::*;

impl Pool {
    /// Swaps in a new provider list and keys, carrying state over by provider name and key.
    /// Infallible: all fallible work (parsing, key lookup) happens before.
    pub fn apply(
        &self,
        providers: &[Arc<ProviderConfig>],
        keys: &HashMap<String, Vec<ProviderKey>>,
        routing: RoutingConfig,
        now: DateTime<Utc>,
    ) {
        {
            let mut inner = self.lock();
            inner.routing = routing;
            inner.apply(providers, keys, now);
        }
        self.changed();
    }

    /// A whole reload in one step: the providers, their keys, the routing policy, the key
    /// store's note and the config file's status change under one lock, `publish` (the
    /// live config's swap, see `Engine`) runs inside it, and viewers are told once. No
    /// one sees the new providers with the old config or the old status.
    pub fn apply_reload(&self, reload: Reload<'_>, publish: impl FnOnce()) {
        {
            let mut inner = self.lock();
            inner.routing = reload.routing;
            inner.apply(reload.providers, reload.keys, reload.now);
            inner.key_note = reload.key_note;
            inner.config_path = reload.config_path;
            inner.config_error = None;
            publish();
        }
        self.changed();
    }

    /// Replaces only the keys (after `keys set`/`delete`), keeping everything else.
    pub fn apply_keys(&self, keys: &HashMap<String, Vec<ProviderKey>>, now: DateTime<Utc>) {
        {
            let mut inner = self.lock();
            let configs: Vec<_> = inner
                .providers
                .iter()
                .map(|p| Arc::clone(&p.config))
                .collect();
            inner.apply(&configs, keys, now);
        }
        // A new key may see other models: its provider's catalog is read again.
        self.catalog_wanted.notify_one();
        self.changed();
    }
}

/// What a reload changes in the pool (see [`Pool::apply_reload`]).
pub struct Reload<'a> {
    /// The new providers, in file order.
    pub providers: &'a [Arc<ProviderConfig>],
    /// Their keys, by provider name.
    pub keys: &'a HashMap<String, Vec<ProviderKey>>,
    /// The new routing policy.
    pub routing: RoutingConfig,
    /// The key store's note for `/status`.
    pub key_note: Option<String>,
    /// The config file the reload read.
    pub config_path: Option<String>,
    /// When.
    pub now: DateTime<Utc>,
}

impl Inner {
    pub(super) fn apply(
        &mut self,
        providers: &[Arc<ProviderConfig>],
        keys: &HashMap<String, Vec<ProviderKey>>,
        now: DateTime<Utc>,
    ) {
        let today = local_day(now);
        let mut old: HashMap<String, ProviderState> = self
            .providers
            .drain(..)
            .map(|p| (p.config.name.clone(), p))
            .collect();
        let empty = Vec::new();
        for cfg in providers {
            let provider_keys = keys.get(&cfg.name).unwrap_or(&empty);
            let wanted: Vec<(Option<ApiKey>, String)> = if cfg.requires_key {
                provider_keys
                    .iter()
                    .map(|k| (Some(k.key.clone()), k.label()))
                    .collect()
            } else {
                vec![(None, "no key needed".to_string())]
            };
            let mut prev = old.remove(&cfg.name);
            let endpoint_changed = prev
                .as_ref()
                .is_some_and(|p| p.config.base_url != cfg.base_url);
            let mut new_keys = Vec::with_capacity(wanted.len());
            for (key, label) in wanted {
                let carried = prev.as_mut().and_then(|p| {
                    let pos = p.keys.iter().position(|k| k.key == key)?;
                    Some(p.keys.remove(pos))
                });
                let ks = match carried {
                    Some(mut k) => {
                        k.label = label;
                        if endpoint_changed {
                            k.auth_failed = false;
                            k.cooldown_until = None;
                            k.cause = None;
                        }
                        k
                    }
                    None => {
                        let id = self.next_key_id;
                        self.next_key_id += 1;
                        let shared_id = key.as_ref().map(|k| Arc::from(shared_key_id(k)));
                        KeyState {
                            id,
                            mask: Arc::new(KeyMask::new(key.as_ref())),
                            key,
                            label,
                            cooldown_until: None,
                            cause: None,
                            consecutive_429: 0,
                            auth_failed: false,
                            counts: Counts::default(),
                            out_of_tier: BTreeMap::new(),
                            token_budget: None,
                            reading: None,
                            shared_id,
                            others: None,
                        }
                    }
                };
                new_keys.push(ks);
            }
            let state = match prev {
                Some(mut p) => {
                    if p.config.enabled != cfg.enabled {
                        // The user edited `enabled` in the file: the file wins.
                        p.enabled_override = None;
                    }
                    let marks_for = p.marks_key();
                    p.config = Arc::clone(cfg);
                    p.keys = new_keys;
                    if p.marks_key() != marks_for {
                        // A new endpoint, model list or key: what was retired may serve.
                        p.retired.clear();
                        p.gone = None;
                    }
                    p
                }
                None => ProviderState {
                    config: Arc::clone(cfg),
                    enabled_override: None,
                    keys: new_keys,
                    day: today,
                    request_count: 0,
                    total_requests: 0,
                    total_tokens: 0,
                    last_error: None,
                    last_error_kind: None,
                    next_key: 0,
                    retired: BTreeMap::new(),
                    gone: None,
                    catalog: None,
                    catalog_error: None,
                    oversized_events: 0,
                },
            };
            self.providers.push(state);
        }
    }
}
