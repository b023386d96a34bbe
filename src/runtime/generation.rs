//! A shard's request-path state built from one config: the router, each route with its stage
//! pipeline, the upstream pools. A reload builds a new `Generation` and swaps it in whole; a
//! request keeps the `Rc` of the one it started on and finishes there. What must outlive a reload
//! is carried over by name, never by position: idle upstream connections by address, a JWT
//! provider's token cache when its keys and settings are unchanged, a rate limit's buckets
//! (shared by all shards, in `Published`) when its settings are unchanged, metrics series by
//! route, service, limit and provider name.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::synced::SyncedLimit;
use crate::cluster::{Client, ExactLimit, SyncedRt};
use crate::config::cluster::{Scope, SyncMode};
use crate::config::policy::{AuthRef, RateLimitDef};
use crate::tls::{server_config, Resumption};
use crate::config::Config;
use crate::http::parse::HeadLimits;
use crate::observe::metrics::{RouteMetrics, ShardMetrics, NO_ROUTE};
use crate::policy::apikey::ApiKeySet;
use crate::policy::ratelimit::Limiter;
use crate::policy::stage::{ApiKeyAuth, JwtAuth, MtlsAuth, Pipeline, Provider, RateLimits, RouteLimit, Shared, Stage};
use crate::router::Router;
use crate::upstream::{service_shared, ServiceShared, Upstreams};

/// One config as every shard receives it: the config, and the state shards share.
pub struct Published {
    pub id: u64,
    pub cfg: Arc<Config>,
    /// One per `[[rate_limits]]`, in config order: its definition and the buckets all shards share.
    pub limits: Vec<(Arc<RateLimitDef>, Arc<Limiter>)>,
    pub api_keys: Vec<Arc<ApiKeySet>>,
    /// One per `[[services]]`, in config order: the state all shards share.
    pub services: Vec<Arc<ServiceShared>>,
    /// One per `[[rate_limits]]`: a synced cluster limit's host-wide table (carried over a
    /// reload when its settings are unchanged); None for the others.
    pub synced: Vec<Option<Arc<SyncedLimit>>>,
    /// The rustls config of the TLS listeners, shared by every shard (so resumption works
    /// across shards), with its resumption state carried over reloads.
    pub tls: Option<(Arc<rustls::ServerConfig>, Resumption)>,
}

impl Published {
    /// Shared state for `cfg`; a limit whose name and settings are unchanged from `prev` keeps
    /// its buckets (and so its exact counts).
    pub fn new(id: u64, cfg: Arc<Config>, prev: Option<&Published>) -> Published {
        let limits = cfg
            .rate_limits
            .iter()
            .map(|def| {
                let kept = prev.and_then(|p| {
                    p.limits.iter().find(|(d, _)| d.limit == def.limit && d.key == def.key).map(|(_, l)| l.clone())
                });
                (Arc::new(def.clone()), kept.unwrap_or_else(|| Arc::new(Limiter::new(&def.limit))))
            })
            .collect();
        let api_keys = cfg.api_keys.iter().map(|s| Arc::new(s.clone())).collect();
        let services = cfg
            .services
            .iter()
            .map(|s| {
                let kept = prev.and_then(|p| p.services.iter().find(|x| x.matches(s)).cloned());
                kept.unwrap_or_else(|| service_shared(s))
            })
            .collect();
        let prefix = cfg.cluster.as_ref().map_or("", |c| c.key_prefix.as_str());
        let synced = cfg
            .rate_limits
            .iter()
            .map(|def| {
                let Scope::Cluster { sync: SyncMode::Every(every), .. } = def.scope else { return None };
                let kept = prev.and_then(|p| {
                    p.synced.iter().flatten().find(|t| t.same_settings(&def.limit, every, prefix)).cloned()
                });
                Some(kept.unwrap_or_else(|| Arc::new(SyncedLimit::new(&def.limit, every, prefix))))
            })
            .collect();
        let tls = cfg.tls.as_ref().and_then(|t| {
            let kept = prev.and_then(|p| p.tls.as_ref()).map(|(_, r)| r.clone()).filter(|r| r.cache_size == t.session_cache);
            let resumption = match kept {
                Some(r) => r,
                None => match Resumption::new(t.session_cache) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "TLS listeners cannot start");
                        return None;
                    }
                },
            };
            match server_config(t, &resumption) {
                Ok(c) => Some((c, resumption)),
                Err(e) => {
                    tracing::error!(error = %e, "TLS listeners cannot start");
                    None
                }
            }
        });
        Published { id, cfg, limits, api_keys, services, synced, tls }
    }
}

/// What the request path needs of one route.
pub struct RouteRt {
    pub name: String,
    pub service: usize,
    pub strip_prefix: bool,
    pub max_body: u64,
    /// `Allow: ...\r\n` for 405 answers.
    pub allow_header: String,
    /// Identity headers the route's providers set; client copies are removed.
    pub strip_headers: Vec<String>,
    pub has_cors: bool,
    /// Total upstream time, retries included, when the route sets one.
    pub timeout: Option<std::time::Duration>,
    pub transform: crate::config::transform::Transform,
    pub pipeline: Pipeline,
    pub metrics: Rc<RouteMetrics>,
}

pub struct Generation {
    pub id: u64,
    pub cfg: Arc<Config>,
    pub router: Router,
    pub routes: Vec<RouteRt>,
    pub upstreams: Upstreams,
    pub head_limits: HeadLimits,
    /// Requests that matched no route (or failed before routing).
    pub unmatched: Rc<RouteMetrics>,
    /// JWT providers with their token caches, for carrying the caches over by name.
    jwt: Vec<Rc<JwtAuth>>,
    /// The shard's Redis client, when the config has `[cluster]` (carried over a reload with
    /// the same settings, connections and all).
    redis: Option<Rc<Client>>,
    /// New TLS handshakes use this config (an open connection keeps the one it started with).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// This shard's response stores, as `cfg.caches` (carried over a reload by name).
    pub caches: Vec<Rc<RefCell<crate::cache::Store>>>,
}

impl Generation {
    pub fn build(p: &Published, prev: Option<&Generation>, metrics: &ShardMetrics) -> Generation {
        let cfg = p.cfg.clone();
        let upstreams = Upstreams::new(&cfg, &p.services, metrics);
        if let Some(prev) = prev {
            upstreams.adopt_idle(&prev.upstreams);
        }
        let jwt: Vec<Rc<JwtAuth>> = cfg
            .jwt
            .iter()
            .map(|pr| {
                let carried = prev.and_then(|g| g.jwt.iter().find(|a| a.provider.name == pr.name)).filter(|a| {
                    a.provider.verifier.0.fingerprint() == pr.verifier.0.fingerprint() && a.provider.cache_size == pr.cache_size
                });
                let cache = match carried {
                    Some(a) => a.cache.replace(pr.verifier.0.token_cache(pr.cache_size)),
                    None => pr.verifier.0.token_cache(pr.cache_size),
                };
                Rc::new(JwtAuth { provider: pr.clone(), cache: RefCell::new(cache), metrics: metrics.auth(&pr.name) })
            })
            .collect();
        let api: Vec<Rc<ApiKeyAuth>> =
            p.api_keys.iter().map(|set| Rc::new(ApiKeyAuth::new(set.clone(), metrics.auth(&set.name)))).collect();
        let redis = cfg.cluster.as_ref().map(|settings| {
            prev.and_then(|g| g.redis.clone())
                .filter(|c| **c.settings() == *settings)
                .unwrap_or_else(|| Client::new(Arc::new(settings.clone()), metrics.redis.clone()))
        });
        // Per limit, how this shard shares it: built once, used by every route naming it.
        let shared: Vec<Option<Rc<ExactLimit>>> = cfg
            .rate_limits
            .iter()
            .map(|def| match (def.scope, &redis) {
                (Scope::Cluster { sync: SyncMode::Exact, on_error }, Some(client)) => {
                    Some(Rc::new(ExactLimit::new(client.clone(), &def.limit, on_error)))
                }
                _ => None,
            })
            .collect();
        let synced: Vec<Option<Rc<SyncedRt>>> = p
            .synced
            .iter()
            .zip(&cfg.rate_limits)
            .map(|(table, def)| match (table, def.scope, &redis) {
                (Some(table), Scope::Cluster { on_error, .. }, Some(client)) => {
                    Some(Rc::new(SyncedRt { table: table.clone(), client: client.clone(), on_error }))
                }
                _ => None,
            })
            .collect();
        let caches = cfg
            .caches
            .iter()
            .map(|def| match prev.and_then(|g| g.caches.iter().find(|s| s.borrow().def.name == def.name)) {
                Some(kept) => {
                    if kept.borrow().def != *def {
                        kept.borrow_mut().resize(def.clone());
                    }
                    kept.clone()
                }
                None => Rc::new(RefCell::new(crate::cache::Store::new(def.clone(), metrics.cache(&def.name)))),
            })
            .collect();
        let mtls: Vec<Rc<MtlsAuth>> = cfg.mtls.iter().map(|m| Rc::new(MtlsAuth::new(m.clone(), metrics.auth(&m.name)))).collect();
        let security = Arc::new(cfg.security.clone());
        let routes = cfg
            .routes
            .iter()
            .map(|r| {
                let rp = &r.policy;
                let mut stages = vec![Stage::Ip { server: security.clone(), route: rp.ip.clone() }];
                if let Some(cors) = &rp.cors {
                    stages.push(Stage::Cors(cors.clone()));
                }
                if !rp.auth.is_empty() {
                    let providers = rp
                        .auth
                        .iter()
                        .map(|a| match *a {
                            AuthRef::Jwt(i) => Provider::Jwt(jwt[i].clone()),
                            AuthRef::ApiKey(i) => Provider::ApiKey(api[i].clone()),
                            AuthRef::Mtls(i) => Provider::Mtls(mtls[i].clone()),
                        })
                        .collect();
                    stages.push(Stage::Auth(providers));
                }
                if !rp.rate_limits.is_empty() {
                    let limits = rp
                        .rate_limits
                        .iter()
                        .map(|&k| {
                            let (def, limiter) = &p.limits[k];
                            let shared = match (&shared[k], &synced[k]) {
                                (Some(x), _) => Shared::Exact(x.clone()),
                                (_, Some(s)) => Shared::Synced(s.clone()),
                                _ => Shared::Local,
                            };
                            RouteLimit { def: def.clone(), limiter: limiter.clone(), metrics: metrics.limit(&def.limit.name), shared }
                        })
                        .collect();
                    stages.push(Stage::RateLimit(RateLimits { route: r.name.clone(), limits }));
                }
                if !rp.validate.content_types.is_empty() {
                    stages.push(Stage::ContentType(rp.validate.content_types.clone()));
                }
                if rp.validate.json {
                    stages.push(Stage::Json(rp.validate.max_json));
                }
                RouteRt {
                    name: r.name.clone(),
                    service: r.service,
                    strip_prefix: r.strip_prefix,
                    max_body: r.max_body,
                    allow_header: r.allow_header.clone(),
                    strip_headers: rp.strip_headers.clone(),
                    has_cors: rp.cors.is_some(),
                    timeout: r.timeout,
                    transform: r.transform.clone(),
                    pipeline: Pipeline::new(stages),
                    metrics: metrics.route(&r.name),
                }
            })
            .collect();
        Generation {
            id: p.id,
            router: Router::new(&cfg.routes),
            routes,
            upstreams,
            head_limits: HeadLimits {
                max_head: cfg.limits.max_head,
                max_target: cfg.limits.max_target,
                max_headers: cfg.limits.max_headers,
            },
            unmatched: metrics.route(NO_ROUTE),
            jwt,
            redis,
            tls: p.tls.as_ref().map(|(c, _)| c.clone()),
            caches,
            cfg,
        }
    }
}
