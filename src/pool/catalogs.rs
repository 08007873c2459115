//! What the pool knows of each provider's model catalog: which models it offers now,
//! which configured ones are retired, and the rounds of the catalog reader.

use super::*;

impl Pool {
    /// Sets a provider's catalog. A model retired earlier that this catalog lists again
    /// (after one that did not) gets its mark cleared.
    pub fn set_catalog(&self, provider: &str, catalog: Option<Catalog>) {
        {
            let mut inner = self.lock();
            let Some(p) = inner
                .providers
                .iter_mut()
                .find(|p| p.config.name == provider)
            else {
                return;
            };
            if let Some(new) = &catalog {
                let back: Vec<String> = p
                    .retired
                    .keys()
                    .filter(|m| new.offers(m) && new.added.contains(m))
                    .cloned()
                    .collect();
                for m in back {
                    tracing::info!(provider, model = %m, "a retired model is listed again; trying it again");
                    p.retired.remove(&m);
                }
            }
            p.catalog = catalog;
            p.catalog_error = None;
        }
        self.changed();
    }

    /// Notes why a provider's catalog could not be read (routing is not affected).
    pub fn note_catalog_error(&self, provider: &str, error: String) {
        let mut inner = self.lock();
        if let Some(p) = inner
            .providers
            .iter_mut()
            .find(|p| p.config.name == provider)
        {
            p.catalog_error = Some(error);
        }
    }

    /// Each enabled provider with the key to read its catalog with (its first key that
    /// was not rejected; none for keyless providers).
    pub fn catalog_targets(&self) -> Vec<(Arc<ProviderConfig>, Option<ApiKey>)> {
        let inner = self.lock();
        inner
            .providers
            .iter()
            .filter(|p| p.enabled())
            .filter_map(|p| {
                let key = p.keys.iter().find(|k| !k.auth_failed)?;
                Some((Arc::clone(&p.config), key.key.clone()))
            })
            .collect()
    }

    /// Rings when a catalog should be read again now (a model was just reported
    /// retired).
    pub fn catalog_wanted(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.catalog_wanted)
    }

    /// Counts finished catalog rounds (for `POST /catalog/refresh` to wait on).
    pub fn catalog_rounds(&self) -> watch::Receiver<u64> {
        self.catalog_rounds.subscribe()
    }

    /// Called by the catalog task after each round.
    pub fn catalog_round_done(&self) {
        self.catalog_rounds.send_modify(|n| *n += 1);
    }

    /// Each provider's catalog (and why it is unknown), for `GET /catalog`.
    pub fn catalogs(&self) -> Vec<(Arc<ProviderConfig>, Option<Catalog>, Option<String>)> {
        let inner = self.lock();
        inner
            .providers
            .iter()
            .map(|p| {
                (
                    Arc::clone(&p.config),
                    p.catalog.clone(),
                    p.catalog_error.clone(),
                )
            })
            .collect()
    }

    /// Per provider, what it can be asked for now, for `GET /v1/models`.
    pub fn offered_models(&self) -> HashMap<String, Offered> {
        let inner = self.lock();
        inner
            .providers
            .iter()
            .map(|p| {
                let offered = Offered {
                    gone: p.gone.is_some(),
                    retired: p.retired.keys().cloned().collect(),
                    listed: p.catalog.as_ref().map(|c| {
                        c.models
                            .iter()
                            .filter(|m| !c.shut_down(m))
                            .cloned()
                            .collect()
                    }),
                    catalog: p
                        .catalog
                        .as_ref()
                        .map_or_else(Vec::new, |c| c.models.clone()),
                };
                (p.config.name.clone(), offered)
            })
            .collect()
    }

    /// For a route that names a model: when every provider listing it said it is retired
    /// (or is gone), what each said, as "provider: text". `None` otherwise.
    pub fn retired_on_route(&self, route: &Route) -> Option<Vec<String>> {
        let model = match route {
            Route::Any | Route::AnyEmbedding => return None,
            Route::Model(m) | Route::Pinned { model: m, .. } => m,
        };
        let inner = self.lock();
        let mut said = Vec::new();
        for p in inner
            .providers
            .iter()
            .filter(|p| route_matches(route, &p.config))
        {
            match (p.gone.as_ref(), p.retired.get(model)) {
                (Some(why), _) => said.push(format!("{}: {why}", p.config.name)),
                (None, Some(why)) => {
                    // What it offers now, from its catalog when that is known.
                    let offers: Vec<&str> = p.catalog.as_ref().map_or_else(Vec::new, |c| {
                        c.models
                            .iter()
                            .filter(|m| !p.retired.contains_key(*m) && !c.shut_down(m))
                            .take(5)
                            .map(String::as_str)
                            .collect()
                    });
                    if offers.is_empty() {
                        said.push(format!("{}: {why}", p.config.name));
                    } else {
                        said.push(format!(
                            "{}: {why}; it offers {}",
                            p.config.name,
                            offers.join(", ")
                        ));
                    }
                }
                (None, None) => return None,
            }
        }
        (!said.is_empty()).then_some(said)
    }
}
