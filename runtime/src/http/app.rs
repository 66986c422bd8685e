//! What every request's stages and endpoints share: the engine, the settings, and what
//! may change while the service runs ([`Live`]).

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::firewall::Firewall;
use super::list::Workers;
use crate::auth::Authenticator;
use crate::engine::Engine;
use crate::spec::CompiledSpec;

/// Settings of the HTTP server.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Largest body.
    pub max_body_bytes: usize,
    /// Header read timeout (also how long an idle keep-alive connection stays open).
    pub header_timeout: Duration,
    /// How long in-flight requests may take at shutdown.
    pub drain_timeout: Duration,
    /// The deadline of every request (Raft messages excepted).
    pub request_timeout: Duration,
    /// How long the whole body may take to arrive (else 408).
    pub body_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Most open connections from one address.
    pub max_connections_per_ip: usize,
    /// Origins allowed cross-origin (`[server.cors]`; empty: none).
    pub cors_origins: Vec<String>,
    /// Who may read `/metrics` and `/openapi.json`, and change the cluster's members.
    pub planes: Arc<Planes>,
    /// Which requests get a log line (`[telemetry] request_log`).
    pub request_log: crate::config::RequestLog,
    /// Where traces go (`[telemetry] otlp_endpoint`), if anywhere.
    pub tracing: Option<Arc<crate::telemetry::Tracing>>,
}

/// The roles of the operational routes.
#[derive(Clone, Debug, Default)]
pub struct Planes {
    /// `/metrics` (empty: anyone).
    pub metrics: Vec<String>,
    /// `/openapi.json` (empty: anyone).
    pub openapi: Vec<String>,
    /// Membership changes made with a token (empty: none; the cluster secret still may).
    pub admin: Vec<String>,
}

impl Planes {
    /// The roles of `[server] metrics_roles, openapi_roles` and `[cluster] admin_roles`,
    /// each checked against the schema's roles (`public` is taken too). Without
    /// `admin_roles`, membership changes take `admin` when the schema declares it.
    pub fn of(config: &crate::config::Config, spec: &CompiledSpec) -> Result<Self, String> {
        let check = |key: &str, roles: &[String]| -> Result<Vec<String>, String> {
            for r in roles {
                if r != "public" && !spec.effective_roles.contains_key(r) {
                    let mut known: Vec<&str> =
                        spec.spec.roles.iter().map(|r| r.name.as_str()).collect();
                    known.push("public");
                    return Err(format!(
                        "{key}: unknown role \"{r}\" (roles in lithair.yaml: {})",
                        known.join(", ")
                    ));
                }
            }
            Ok(roles.to_vec())
        };
        let admin = match &config.cluster.admin_roles {
            Some(roles) if roles.iter().any(|r| r == "public") => {
                return Err(
                    "[cluster] admin_roles: `public` would let anyone change the \
                            cluster's members; name roles of the schema"
                        .into(),
                )
            }
            Some(roles) => check("[cluster] admin_roles", roles)?,
            None if spec.effective_roles.contains_key("admin") => vec!["admin".to_string()],
            None => Vec::new(),
        };
        Ok(Planes {
            metrics: check("[server] metrics_roles", &config.server.metrics_roles)?,
            openapi: check("[server] openapi_roles", &config.server.openapi_roles)?,
            admin,
        })
    }
}

impl ServeOptions {
    /// The settings of `[server]` in `config`.
    pub fn of(config: &crate::config::ServerConfig) -> Self {
        ServeOptions {
            max_body_bytes: config.max_body_bytes,
            header_timeout: Duration::from_secs(config.header_timeout_secs),
            drain_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            body_timeout: Duration::from_millis(config.body_timeout_ms),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            cors_origins: config.cors.allow_origins.clone(),
            // Set with `with_planes`: their roles are checked against the schema.
            planes: Arc::default(),
            request_log: Default::default(),
            tracing: None,
        }
    }

    /// These options with the request log of `[telemetry]`.
    pub fn with_request_log(mut self, mode: crate::config::RequestLog) -> Self {
        self.request_log = mode;
        self
    }

    /// Whether an answer with `status` carries its request's model, operation and caller:
    /// when the request log writes its line (every line with `request_log = "all"`, a
    /// 4xx's or 5xx's with `"errors"`), or requests are traced.
    pub(crate) fn names_answer(&self, status: u16) -> bool {
        use crate::config::RequestLog;
        self.tracing.is_some()
            || match self.request_log {
                RequestLog::All => true,
                RequestLog::Errors => status >= 400,
                RequestLog::Off => false,
            }
    }

    /// Whether some answers carry their request's model, operation and caller.
    pub(crate) fn names_answers(&self) -> bool {
        self.request_log != crate::config::RequestLog::Off || self.tracing.is_some()
    }

    /// Exports traces through `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Arc<crate::telemetry::Tracing>>) -> Self {
        self.tracing = tracing;
        self
    }

    /// These options with the operational roles `planes`.
    pub fn with_planes(mut self, planes: Planes) -> Self {
        self.planes = Arc::new(planes);
        self
    }
}

/// What may change while the service runs (`SIGHUP`): the firewall's rules and the
/// tokens. Requests read the current ones; open connections stay.
#[derive(Clone)]
pub struct Live {
    /// The firewall.
    pub firewall: Firewall,
    tokens: Arc<arc_swap::ArcSwap<Authenticator>>,
}

impl Live {
    /// The settings a service starts with.
    pub fn new(firewall: Firewall, tokens: Authenticator) -> Self {
        Live {
            firewall,
            tokens: Arc::new(arc_swap::ArcSwap::from_pointee(tokens)),
        }
    }

    /// The tokens in force (read without a lock).
    pub fn tokens(&self) -> arc_swap::Guard<Arc<Authenticator>> {
        self.tokens.load()
    }

    /// Puts `tokens` in force for the requests that come after.
    pub fn replace_tokens(&self, tokens: Authenticator) {
        self.tokens.store(Arc::new(tokens));
    }
}

/// The service as its stages and endpoints see it.
pub(crate) struct App {
    pub(crate) engine: Arc<Engine>,
    pub(crate) live: Live,
    /// The list workers (filtering and sorting off the request path).
    pub(crate) lists: Workers,
    pub(crate) openapi: Option<&'static str>,
    pub(crate) opts: ServeOptions,
    /// Open connections (counted at accept, in `server.rs`).
    pub(crate) open_connections: Arc<AtomicUsize>,
    /// The list pages of `cache` models (`cache.rs`).
    pub(crate) pages: super::cache::Pages,
    /// What `/metrics` serves (`metrics.rs`).
    pub(crate) metrics: super::metrics::Metrics,
}

impl App {
    /// The app of `engine`, with its list workers started.
    pub(crate) fn new(
        engine: Arc<Engine>,
        live: Live,
        openapi: Option<&'static str>,
        opts: ServeOptions,
    ) -> Self {
        let metrics = super::metrics::Metrics::new(&engine.spec.spec, &engine.store.stats);
        App {
            engine,
            live,
            lists: Workers::start(),
            openapi,
            opts,
            open_connections: Arc::new(AtomicUsize::new(0)),
            pages: Default::default(),
            metrics,
        }
    }

    /// The tokens in force.
    pub(crate) fn auth(&self) -> arc_swap::Guard<Arc<Authenticator>> {
        self.live.tokens()
    }
}
