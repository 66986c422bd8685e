//! Runtime configuration: `lithair.toml`, then `LITHAIR_*` environment variables, then
//! command-line flags, each overriding the one before. Unknown keys are errors.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::auth::TokenConfig;

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[storage]`.
    pub storage: StorageConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[cluster]`.
    pub cluster: ClusterConfig,
    /// `[firewall]`.
    pub firewall: FirewallConfig,
    /// `[telemetry]`.
    pub telemetry: TelemetryConfig,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, `trace_id`
    /// and `span_id` (for a request's lines), and the event's other fields in `context`.
    Json,
}

/// Which requests get a log line (`request_log`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RequestLog {
    /// Every request.
    All,
    /// The requests answered with a 4xx or 5xx status.
    #[default]
    Errors,
    /// None.
    Off,
}

/// `[telemetry]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `log_format`: `text` (the default) or `json`; `LITHAIR_LOG_FORMAT` overrides it.
    pub log_format: Option<LogFormat>,
    /// `request_log`: `all`, `errors` (the default) or `off`.
    pub request_log: RequestLog,
    /// `otlp_endpoint`: where traces go, as OTLP/HTTP protobuf (`http://host:port`;
    /// `/v1/traces` is added unless a path is given). Unset: nothing is traced.
    pub otlp_endpoint: Option<String>,
    /// `sample_rate`: the share of requests traced, 0 to 1 (default 0.1, as in the seed);
    /// a model's `tracing: { sample_rate }` wins for its requests.
    pub sample_rate: Option<f64>,
    /// `include_body`: whether a traced request's span keeps its body (the first 4 KiB;
    /// default false).
    pub include_body: Option<bool>,
}

/// `[server]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind (0: any free port, printed at start).
    pub port: u16,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Seconds allowed for the request headers.
    pub header_timeout_secs: u64,
    /// Deadline of a request, milliseconds: a write not answered by then gets 503 with
    /// `Retry-After` (its outcome is unknown).
    pub request_timeout_ms: u64,
    /// Most open connections in total; more are closed at accept.
    pub max_connections: usize,
    /// Most open connections from one address; more are closed at accept.
    pub max_connections_per_ip: usize,
    /// The whole request body must arrive within this, milliseconds (else 408).
    pub body_timeout_ms: u64,
    /// `[server.cors]`.
    pub cors: CorsConfig,
    /// Who may read `/metrics` (empty: anyone).
    pub metrics_roles: Vec<String>,
    /// Who may read `/openapi.json` (empty: anyone).
    pub openapi_roles: Vec<String>,
    /// `[server.tls]`: serve HTTPS (none: plain HTTP).
    pub tls: Option<TlsConfig>,
}

/// `[server.tls]`: the certificate chain and key the public port serves HTTPS with.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM: the certificate, then its intermediates (relative paths: from the
    /// configuration file's directory).
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `[cluster.tls]`: mutual TLS on the cluster listener. Each node shows `cert_file` as
/// server and as client, and takes only peers whose certificate `ca_file` signed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsConfig {
    /// PEM: this node's certificate chain (its subject names must cover the address
    /// the others call it at: an IP address or a DNS name).
    pub cert_file: PathBuf,
    /// PEM: this node's private key.
    pub key_file: PathBuf,
    /// PEM: the certificate authorities whose node certificates are taken.
    pub ca_file: PathBuf,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8080,
            max_body_bytes: 1024 * 1024,
            header_timeout_secs: 10,
            request_timeout_ms: 10_000,
            max_connections: 4096,
            max_connections_per_ip: 256,
            body_timeout_ms: 10_000,
            cors: CorsConfig::default(),
            metrics_roles: Vec::new(),
            openapi_roles: Vec::new(),
            tls: None,
        }
    }
}

/// `[server.cors]`: cross-origin requests from browsers (off unless origins are listed).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Origins allowed (`https://app.example.com`), or `["*"]` for any.
    pub allow_origins: Vec<String>,
}

/// A CIDR block (`203.0.113.0/24`); a bare address is a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub ipnet::IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if let Ok(net) = text.parse::<ipnet::IpNet>() {
            return Ok(Cidr(net.trunc()));
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Cidr(ipnet::IpNet::from(ip)));
        }
        Err(serde::de::Error::custom(format!(
            "\"{text}\" is not a CIDR block (like \"203.0.113.0/24\") or an address"
        )))
    }
}

/// `[firewall]`: who may connect, and how often.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirewallConfig {
    /// Blocks allowed to connect; empty: everyone.
    pub allow: Vec<Cidr>,
    /// Blocks refused (403); deny wins over allow.
    pub deny: Vec<Cidr>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` name the client; nobody else's are
    /// believed.
    pub trusted_proxies: Vec<Cidr>,
    /// `[firewall.rate_limit]`.
    pub rate_limit: RateLimitConfig,
}

/// `[firewall.rate_limit]`: per client address, GCRA.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// Sustained requests per second; 0: no limit.
    pub per_ip: u32,
    /// Requests allowed at once above the sustained rate (0: as many as `per_ip`).
    pub burst: u32,
}

/// When writes reach the disk.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Before the answer: flush and fdatasync per batch (group commit).
    Always,
    /// Every `flush_interval_ms`, in the background.
    Periodic,
    /// When the OS decides.
    Never,
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(SyncMode::Always),
            "periodic" => Ok(SyncMode::Periodic),
            "never" => Ok(SyncMode::Never),
            other => Err(format!(
                "sync must be always, periodic or never, not \"{other}\""
            )),
        }
    }
}

/// `[storage]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Folder of the store.
    pub data_dir: PathBuf,
    /// Durability.
    pub sync: SyncMode,
    /// For `periodic`: the flush period.
    pub flush_interval_ms: u64,
    /// Default snapshot period, in events of a model.
    pub snapshot_every: u64,
    /// Most writes waiting to enter the Raft log; more are refused at once with 503.
    pub max_pending_writes: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("data"),
            sync: SyncMode::Always,
            flush_interval_ms: 10,
            snapshot_every: 1000,
            max_pending_writes: 10_000,
        }
    }
}

/// `[cluster]`: Raft settings, used when the node runs with `--peers`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Shared by every node; Raft RPCs without it are refused (401).
    pub secret: Option<String>,
    /// A follower that hears no leader for this long (up to a third longer) starts an election.
    pub election_timeout_ms: u64,
    /// How often the leader sends heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Most entries sent to a follower in one append.
    pub max_payload_entries: u64,
    /// Build a Raft snapshot (and purge the log) every N log entries.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot, so a briefly lagging follower catches up from the
    /// log instead of receiving a whole snapshot.
    pub keep_after_snapshot: u64,
    /// Who may change the members with a token (`admin` when the schema has that role;
    /// set, every role must be one of the schema's).
    pub admin_roles: Option<Vec<String>>,
    /// A listener of its own for the traffic between nodes (`/_raft/*`, and the cluster
    /// status and membership changes they send each other); `--peers` then names each
    /// node at this address. None: the public port carries it.
    pub listen: Option<std::net::SocketAddr>,
    /// `[cluster.tls]`: mutual TLS between nodes, on the cluster listener.
    pub tls: Option<ClusterTlsConfig>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            secret: None,
            election_timeout_ms: 300,
            heartbeat_interval_ms: 50,
            max_payload_entries: 300,
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
            admin_roles: None,
            listen: None,
            tls: None,
        }
    }
}

/// `[auth]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `[[auth.tokens]]`.
    pub tokens: Vec<TokenConfig>,
    /// `[auth.jwt]`: tokens of an identity provider (none: API tokens only).
    pub jwt: Option<crate::auth::JwtConfig>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// An environment variable is not valid.
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// Overrides from flags (None: not given).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--host`.
    pub host: Option<IpAddr>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Reads `path` (a missing file is fine only when `required` is false), applies the
    /// environment, then the flags.
    pub fn load(path: &Path, required: bool, flags: &Overrides) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let mut config = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                path: shown.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Config::default(),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: shown,
                    source,
                })
            }
        };
        config.apply_env(|k| std::env::var(k).ok())?;
        if let Some(h) = flags.host {
            config.server.host = h;
        }
        if let Some(p) = flags.port {
            config.server.port = p;
        }
        if let Some(d) = &flags.data_dir {
            config.storage.data_dir = d.clone();
        }
        config.check()?;
        Ok(config)
    }

    /// Reads settings from TOML `text` alone (no environment, no flags), as a test or a
    /// tool builds a service; `source` names the text in errors.
    pub fn from_toml(text: &str, source: &str) -> Result<Config, ConfigError> {
        let config = toml::from_str::<Config>(text).map_err(|e| ConfigError::Parse {
            path: source.to_string(),
            message: e.to_string(),
        })?;
        config.check()?;
        Ok(config)
    }

    /// Applies `LITHAIR_*` variables read through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("LITHAIR_HOST") {
            self.server.host = v.parse().map_err(|e| ConfigError::Env {
                name: "LITHAIR_HOST",
                message: format!("{e}"),
            })?;
        }
        if let Some(v) = get("LITHAIR_PORT") {
            self.server.port = v.parse().map_err(|e| ConfigError::Env {
                name: "LITHAIR_PORT",
                message: format!("{e}"),
            })?;
        }
        if let Some(v) = get("LITHAIR_DATA_DIR") {
            self.storage.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("LITHAIR_CLUSTER_SECRET") {
            self.cluster.secret = Some(v);
        }
        if let Some(v) = get("LITHAIR_SYNC") {
            self.storage.sync = v.parse().map_err(|message| ConfigError::Env {
                name: "LITHAIR_SYNC",
                message,
            })?;
        }
        Ok(())
    }

    fn check(&self) -> Result<(), ConfigError> {
        let t = &self.telemetry;
        if t.otlp_endpoint.is_none() {
            for (key, set) in [
                ("sample_rate", t.sample_rate.is_some()),
                ("include_body", t.include_body.is_some()),
            ] {
                if set {
                    return Err(ConfigError::Invalid(format!(
                        "telemetry.{key} applies to exported traces, and otlp_endpoint is not set: set it (e.g. \"http://127.0.0.1:4318\") or remove {key}"
                    )));
                }
            }
        }
        if let Some(endpoint) = &t.otlp_endpoint {
            crate::telemetry::traces_url(endpoint)
                .map_err(|e| ConfigError::Invalid(format!("telemetry.otlp_endpoint: {e}")))?;
        }
        if let Some(rate) = t.sample_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(ConfigError::Invalid(format!(
                    "telemetry.sample_rate {rate} is not between 0 and 1 (the share of requests traced)"
                )));
            }
        }
        if self.storage.snapshot_every == 0 {
            return Err(ConfigError::Invalid(
                "storage.snapshot_every must be at least 1".into(),
            ));
        }
        if self.storage.flush_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.flush_interval_ms must be at least 1".into(),
            ));
        }
        if self.server.max_body_bytes == 0 {
            return Err(ConfigError::Invalid(
                "server.max_body_bytes must be at least 1".into(),
            ));
        }
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0 || c.election_timeout_ms <= c.heartbeat_interval_ms {
            return Err(ConfigError::Invalid(
                "cluster.election_timeout_ms must be greater than cluster.heartbeat_interval_ms (and both above 0)".into(),
            ));
        }
        if c.max_payload_entries == 0 || c.snapshot_every == 0 {
            return Err(ConfigError::Invalid(
                "cluster.max_payload_entries and cluster.snapshot_every must be at least 1".into(),
            ));
        }
        if c.tls.is_some() && c.listen.is_none() {
            return Err(ConfigError::Invalid(
                "[cluster.tls] needs [cluster] listen: mutual TLS is served on a listener of its own, so that clients of the public port need no certificate".into(),
            ));
        }
        if c.listen.is_some_and(|l| {
            l.ip() == self.server.host && l.port() == self.server.port && l.port() != 0
        }) {
            return Err(ConfigError::Invalid(
                "cluster.listen must be another address than the public port's (server.host:server.port)".into(),
            ));
        }
        if c.secret.as_deref().is_some_and(|s| s.len() < 16) {
            return Err(ConfigError::Invalid(
                "cluster.secret must be at least 16 characters".into(),
            ));
        }
        if self.server.request_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.request_timeout_ms must be at least 1".into(),
            ));
        }
        if self.storage.max_pending_writes == 0 {
            return Err(ConfigError::Invalid(
                "storage.max_pending_writes must be at least 1".into(),
            ));
        }
        if self.server.max_connections == 0 || self.server.max_connections_per_ip == 0 {
            return Err(ConfigError::Invalid(
                "server.max_connections and server.max_connections_per_ip must be at least 1"
                    .into(),
            ));
        }
        if self.server.body_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.body_timeout_ms must be at least 1".into(),
            ));
        }
        if self.firewall.rate_limit.per_ip == 0 && self.firewall.rate_limit.burst > 0 {
            return Err(ConfigError::Invalid(
                "firewall.rate_limit.burst needs firewall.rate_limit.per_ip (0 turns the limit off)"
                    .into(),
            ));
        }
        for origin in &self.server.cors.allow_origins {
            let ok = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.ends_with('/')
                    && hyper::header::HeaderValue::from_str(origin).is_ok());
            if !ok {
                return Err(ConfigError::Invalid(format!(
                    "server.cors.allow_origins: \"{origin}\" is not an origin (like \"https://app.example.com\", without a path) or \"*\""
                )));
            }
        }
        if self.server.header_timeout_secs == 0 {
            return Err(ConfigError::Invalid(
                "server.header_timeout_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_sets_the_logs_and_the_trace_export() {
        let c = Config::from_toml(
            "[telemetry]\nlog_format = \"json\"\nrequest_log = \"all\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(c.telemetry.log_format, Some(LogFormat::Json));
        assert_eq!(c.telemetry.request_log, RequestLog::All);
        assert_eq!(Config::default().telemetry.request_log, RequestLog::Errors);
        let c = Config::from_toml(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_rate = 0.5\ninclude_body = true\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(
            c.telemetry.otlp_endpoint.as_deref(),
            Some("http://127.0.0.1:4318")
        );
        assert_eq!(
            (c.telemetry.sample_rate, c.telemetry.include_body),
            (Some(0.5), Some(true))
        );
        for (toml, says) in [
            ("sample_rate = 0.1", "otlp_endpoint is not set"),
            ("include_body = false", "otlp_endpoint is not set"),
            (
                "otlp_endpoint = \"http://h:4318\"\nsample_rate = 1.5",
                "not between 0 and 1",
            ),
            ("otlp_endpoint = \"https://h:4318\"", "only http://"),
            ("otlp_endpoint = \"h:4318\"", "not an http:// URL"),
        ] {
            let err = Config::from_toml(&format!("[telemetry]\n{toml}\n"), "x.toml").unwrap_err();
            assert!(err.to_string().contains(says), "{toml}: {err}");
        }
        assert!(Config::from_toml("[telemetry]\nrequest_log = \"some\"\n", "x.toml").is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        let err = toml::from_str::<Config>("[server]\nprot = 1\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lithair.toml");
        std::fs::write(
            &path,
            "[server]\nport = 1000\n[storage]\nsync = \"never\"\n",
        )
        .unwrap();
        let mut c: Config = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        c.apply_env(|k| (k == "LITHAIR_PORT").then(|| "2000".to_string()))
            .unwrap();
        assert_eq!(c.server.port, 2000);
        assert_eq!(c.storage.sync, SyncMode::Never);
        let flags = Overrides {
            port: Some(3000),
            ..Default::default()
        };
        let c = Config::load(&path, true, &flags).unwrap();
        assert_eq!(c.server.port, 3000);
    }

    #[test]
    fn cluster_tls_needs_a_cluster_listener_of_its_own() {
        let tls =
            "[cluster.tls]\ncert_file = \"n.pem\"\nkey_file = \"n.key\"\nca_file = \"ca.pem\"\n";
        let err = Config::from_toml(tls, "x.toml").unwrap_err();
        assert!(err.to_string().contains("needs [cluster] listen"), "{err}");
        let with = format!("[cluster]\nlisten = \"127.0.0.1:7401\"\n{tls}");
        let c = Config::from_toml(&with, "x.toml").unwrap();
        assert_eq!(c.cluster.listen, Some(([127, 0, 0, 1], 7401).into()));
        assert_eq!(
            c.cluster.tls.map(|t| t.ca_file),
            Some(PathBuf::from("ca.pem"))
        );
        let same = "[server]\nport = 7401\n[cluster]\nlisten = \"127.0.0.1:7401\"\n";
        let err = Config::from_toml(same, "x.toml").unwrap_err();
        assert!(err.to_string().contains("another address"), "{err}");
        let err = Config::from_toml("[server.tls]\ncert_file = \"a\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("key_file"), "{err}");
    }

    #[test]
    fn cluster_settings_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lithair.toml");
        std::fs::write(
            &path,
            "[cluster]\nsecret = \"0123456789abcdef\"\nelection_timeout_ms = 900\nheartbeat_interval_ms = 90\nmax_payload_entries = 50\nsnapshot_every = 10\nkeep_after_snapshot = 0\n",
        )
        .unwrap();
        let c = Config::load(&path, true, &Overrides::default()).unwrap();
        assert_eq!(c.cluster.election_timeout_ms, 900);
        assert_eq!(c.cluster.heartbeat_interval_ms, 90);
        assert_eq!(c.cluster.max_payload_entries, 50);
        assert_eq!(c.cluster.snapshot_every, 10);
        assert_eq!(c.cluster.keep_after_snapshot, 0);
        for (bad, says) in [
            (
                "[cluster]\nelection_timeout_ms = 100\nheartbeat_interval_ms = 100\n",
                "election_timeout_ms",
            ),
            ("[cluster]\nsecret = \"short\"\n", "at least 16"),
            ("[cluster]\nsnapshot_every = 0\n", "snapshot_every"),
            ("[cluster]\nelection_timeout = 5\n", "unknown field"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Config::load(&path, true, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn request_deadline_and_write_queue_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lithair.toml");
        std::fs::write(
            &path,
            "[server]\nrequest_timeout_ms = 2500\n[storage]\nmax_pending_writes = 64\n",
        )
        .unwrap();
        let c = Config::load(&path, true, &Overrides::default()).unwrap();
        assert_eq!(c.server.request_timeout_ms, 2500);
        assert_eq!(c.storage.max_pending_writes, 64);
        let d = Config::default();
        assert_eq!(
            (d.server.request_timeout_ms, d.storage.max_pending_writes),
            (10_000, 10_000)
        );
        for (bad, says) in [
            ("[server]\nrequest_timeout_ms = 0\n", "request_timeout_ms"),
            ("[storage]\nmax_pending_writes = 0\n", "max_pending_writes"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Config::load(&path, true, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn firewall_and_connection_limits_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lithair.toml");
        std::fs::write(
            &path,
            "[server]\nmax_connections = 10\nmax_connections_per_ip = 2\nbody_timeout_ms = 500\n\
             [server.cors]\nallow_origins = [\"https://app.example.com\"]\n\
             [firewall]\nallow = [\"10.0.0.0/8\", \"192.0.2.7\"]\ndeny = [\"10.9.0.0/16\"]\n\
             trusted_proxies = [\"::1\"]\n[firewall.rate_limit]\nper_ip = 100\nburst = 200\n",
        )
        .unwrap();
        let c = Config::load(&path, true, &Overrides::default()).unwrap();
        assert_eq!(c.server.max_connections, 10);
        assert_eq!(c.server.max_connections_per_ip, 2);
        assert_eq!(c.server.body_timeout_ms, 500);
        assert_eq!(c.server.cors.allow_origins, vec!["https://app.example.com"]);
        assert_eq!(c.firewall.allow.len(), 2);
        assert_eq!(c.firewall.allow[1].0.to_string(), "192.0.2.7/32");
        assert_eq!(c.firewall.trusted_proxies[0].0.to_string(), "::1/128");
        assert_eq!(
            (c.firewall.rate_limit.per_ip, c.firewall.rate_limit.burst),
            (100, 200)
        );
        let d = Config::default();
        assert_eq!(
            (
                d.server.max_connections,
                d.server.max_connections_per_ip,
                d.server.body_timeout_ms,
                d.firewall.rate_limit.per_ip
            ),
            (4096, 256, 10_000, 0)
        );
        for (bad, says) in [
            ("[firewall]\ndeny = [\"10.0.0.0/33\"]\n", "not a CIDR block"),
            (
                "[firewall]\nallow = [\"example.com\"]\n",
                "not a CIDR block",
            ),
            (
                "[firewall.rate_limit]\nburst = 5\n",
                "needs firewall.rate_limit.per_ip",
            ),
            ("[firewall.rate_limit]\nper_second = 5\n", "unknown field"),
            ("[server]\nmax_connections = 0\n", "max_connections"),
            ("[server]\nbody_timeout_ms = 0\n", "body_timeout_ms"),
            (
                "[server.cors]\nallow_origins = [\"https://a.example/\"]\n",
                "is not an origin",
            ),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = Config::load(&path, true, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn tokens_append_as_tables() {
        let text = "[server]\nport = 1\n\n[[auth.tokens]]\nname = \"ci\"\nsha256 = \"00\"\nroles = [\"editor\"]\n";
        let c: Config = toml::from_str(text).unwrap();
        assert_eq!(c.auth.tokens.len(), 1);
        assert_eq!(c.auth.tokens[0].roles, vec!["editor".to_string()]);
    }
}
