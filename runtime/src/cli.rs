//! The generated binary's command line: `serve`, `token new` and `token list`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::auth::{self, Authenticator};
use crate::config::{Config, Overrides};
use crate::engine::Engine;
use crate::http::firewall::{Firewall, Rules};
use crate::http::router::Plane;
use crate::http::{self, Live, ServeOptions};
use crate::store::{Store, StoreOptions};
use crate::Service;

#[derive(Parser)]
#[command(version, about = "A lithair service.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    #[command(
        after_help = "Examples:\n  serve\n  serve --port 9000 --data-dir /var/lib/shop\n  LITHAIR_SYNC=periodic serve"
    )]
    Serve {
        /// The configuration file (default: lithair.toml, if it exists).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Address to bind (overrides LITHAIR_HOST and the file).
        #[arg(long)]
        host: Option<std::net::IpAddr>,
        /// Port to bind; 0 picks a free one (overrides LITHAIR_PORT and the file).
        #[arg(long)]
        port: Option<u16>,
        /// Folder of the store (overrides LITHAIR_DATA_DIR and the file).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// This node's id in the cluster (with --peers; without them the node is a cluster
        /// of one, node 1).
        #[arg(long, value_name = "N", requires = "peers")]
        node_id: Option<u64>,
        /// The initial members: each node's id and HTTP address, e.g. 1=10.0.0.1:8080,2=10.0.0.2:8080.
        #[arg(long, value_name = "ID=HOST:PORT,...", requires = "node_id")]
        peers: Option<String>,
        /// Run a multi-node cluster without a cluster secret (anyone who can reach the port
        /// can take part in consensus). For experiments only.
        #[arg(long)]
        insecure_cluster: bool,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint a token and print the `[[auth.tokens]]` table to append to lithair.toml.
    #[command(after_help = "Example:\n  token new --name ci --role editor >> lithair.toml")]
    New {
        /// A name for the token (shown in logs and events).
        #[arg(long)]
        name: String,
        /// A role from lithair.yaml; repeat for several.
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// How long the token is taken: 90s, 30m, 12h, 30d, 2w (never expires without).
        #[arg(long, value_name = "SPAN")]
        expires: Option<String>,
    },
    /// List the tokens of lithair.toml: names, roles and expiry (never their hashes).
    List {
        /// The configuration file.
        #[arg(long, value_name = "FILE", default_value = "lithair.toml")]
        config: PathBuf,
    },
}

/// Turns transparent huge pages off for this process. The allocator asks for them, and the
/// kernel then zeroes 2 MiB at a time for memory that is freed and taken again in small
/// pieces: loading a million records spent a third of its time zeroing pages
/// (`bench/README.md`). A kernel that refuses the request changes nothing.
fn no_huge_pages() {
    // SAFETY: a plain system call that only sets a flag of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "transparent huge pages stay on");
    }
}

/// Runs the binary: parses the command line, then serves or administers.
pub fn main(service: impl crate::IntoService) -> ExitCode {
    let cli = Cli::parse();
    // `serve` logs as its configuration says, once it has read it.
    let _logs = (!matches!(cli.command, Command::Serve { .. }))
        .then(|| crate::logs::init(Default::default()));
    let service = match service.into_service() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve {
            config,
            host,
            port,
            data_dir,
            node_id,
            peers,
            insecure_cluster,
        } => serve(
            service,
            config,
            Overrides {
                host,
                port,
                data_dir,
            },
            ClusterFlags {
                node_id,
                peers,
                insecure: insecure_cluster,
            },
        ),
        Command::Token {
            command:
                TokenCommand::New {
                    name,
                    roles,
                    expires,
                },
        } => token_new(&service, &name, &roles, expires.as_deref()),
        Command::Token {
            command: TokenCommand::List { config },
        } => token_list(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn token_new(
    service: &Service,
    name: &str,
    roles: &[String],
    expires: Option<&str>,
) -> anyhow::Result<()> {
    let expires_at = expires
        .map(auth::expiry)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    for r in roles {
        if !service.spec.effective_roles.contains_key(r) {
            let known: Vec<&str> = service
                .spec
                .spec
                .roles
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            anyhow::bail!(
                "unknown role \"{r}\"; lithair.yaml declares: {}",
                known.join(", ")
            );
        }
    }
    let (token, hash) = auth::mint();
    eprintln!("token (shown once; give it to the client): {token}");
    eprintln!(
        "append the table below to lithair.toml, then send the service SIGHUP (or restart it):"
    );
    println!();
    print!(
        "{}",
        auth::token_table(name, &hash, roles, expires_at.as_deref())
    );
    Ok(())
}

/// Prints the tokens of `path`: name, roles, expiry (the hashes stay in the file).
fn token_list(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path, true, &Overrides::default())?;
    let now = chrono::Utc::now();
    println!("{:<24} {:<32} expires", "name", "roles");
    for t in &config.auth.tokens {
        let expires = match t.expires_at.as_deref() {
            None => "never".to_string(),
            Some(at) => match chrono::DateTime::parse_from_rfc3339(at) {
                Ok(when) if when <= now => format!("{at} (expired)"),
                Ok(_) => at.to_string(),
                Err(_) => format!("{at} (not a timestamp: the service refuses this file)"),
            },
        };
        println!("{:<24} {:<32} {expires}", t.name, t.roles.join(","));
    }
    Ok(())
}

/// The cluster flags of `serve`.
struct ClusterFlags {
    node_id: Option<u64>,
    peers: Option<String>,
    insecure: bool,
}

/// Reads `1=host:port,2=host:port`.
fn parse_peers(text: &str) -> anyhow::Result<std::collections::BTreeMap<u64, String>> {
    let mut peers = std::collections::BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--peers: \"{part}\" is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--peers: \"{id}\" is not a node id (a number)"))?;
        if !addr.contains(':') {
            anyhow::bail!("--peers: \"{addr}\" is not HOST:PORT");
        }
        if peers.insert(id, addr.trim().to_string()).is_some() {
            anyhow::bail!("--peers: node {id} is listed twice");
        }
    }
    Ok(peers)
}

/// The node's place in its cluster: `--node-id`/`--peers`, or a cluster of one at
/// `own_addr` (the address this node listens on).
fn cluster_options(
    flags: ClusterFlags,
    config: &Config,
    own_addr: std::net::SocketAddr,
    tls: Option<crate::tls::ClientTls>,
) -> anyhow::Result<crate::raft::node::ClusterOptions> {
    let secret = config.cluster.secret.clone();
    let (Some(node_id), Some(peers)) = (flags.node_id, flags.peers) else {
        return Ok(crate::raft::node::ClusterOptions {
            secret,
            insecure: flags.insecure,
            tuning: config.cluster.clone(),
            bind_ip: outgoing_ip(config),
            tls,
            ..crate::raft::node::ClusterOptions::single(own_addr.to_string())
        });
    };
    let peers = parse_peers(&peers)?;
    if !peers.contains_key(&node_id) {
        anyhow::bail!(
            "--node-id {node_id} is not in --peers ({})",
            peers
                .keys()
                .map(|k| k.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // With a cluster listener, the peers are named at theirs: this node's own entry must
    // be the address it listens on, or the others could not reach it.
    if let (Some(listen), Some(own)) = (config.cluster.listen, peers.get(&node_id)) {
        if own
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a != own_addr)
            && listen.port() != 0
        {
            anyhow::bail!(
                "--peers names node {node_id} at {own}, but it listens for its peers at {own_addr} ([cluster] listen = \"{listen}\"): \
                 with a cluster listener, --peers names each node's cluster address"
            );
        }
    }
    if peers.len() > 1 && secret.is_none() {
        if !flags.insecure {
            anyhow::bail!(
                "a cluster of {} nodes needs a secret: set [cluster] secret in lithair.toml or LITHAIR_CLUSTER_SECRET \
                 (the same on every node), or pass --insecure-cluster for an experiment",
                peers.len()
            );
        }
        tracing::warn!("INSECURE CLUSTER: Raft messages are accepted without a secret from anyone who can reach this port");
    }
    Ok(crate::raft::node::ClusterOptions {
        node_id,
        peers,
        secret,
        insecure: flags.insecure,
        tuning: config.cluster.clone(),
        bind_ip: outgoing_ip(config),
        tls,
    })
}

/// Calls to peers leave from the address the node listens for them on (its cluster
/// listener, or else its public port), unless that is every address.
fn outgoing_ip(config: &Config) -> Option<std::net::IpAddr> {
    let host = config.cluster.listen.map_or(config.server.host, |l| l.ip());
    (!host.is_unspecified()).then_some(host)
}

/// Binds `addr` (`what` names it in the error).
async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({what}): {e}"))
}

fn serve(
    service: Service,
    config_path: Option<PathBuf>,
    flags: Overrides,
    cluster: ClusterFlags,
) -> anyhow::Result<()> {
    let required = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from("lithair.toml"));
    let config = Config::load(&path, required, &flags)?;
    let _logs = crate::logs::init(config.telemetry.log_format.unwrap_or_default());
    let auth = Authenticator::from_config(&config.auth, &service.spec, config_dir(&path))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let planes = http::Planes::of(&config, &service.spec)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    no_huge_pages();
    crate::clock::calibrate();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let base = config_dir(&path);
    let server_tls = config
        .server
        .tls
        .as_ref()
        .map(|t| crate::tls::server(t, base))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: [server.tls] {e}", path.display()))?;
    let cluster_tls = config
        .cluster
        .tls
        .as_ref()
        .map(|t| crate::tls::cluster(t, base))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{}: [cluster.tls] {e}", path.display()))?;
    let (cluster_server_tls, cluster_client_tls) = cluster_tls.unzip();
    runtime.block_on(async move {
        // Bound first: a node of one advertises the address it really listens on.
        let public = std::net::SocketAddr::new(config.server.host, config.server.port);
        let listener = bind(public, "[server] host and port").await?;
        let addr = listener.local_addr()?;
        let cluster_listener = match config.cluster.listen {
            Some(at) => Some(bind(at, "[cluster] listen").await?),
            None => None,
        };
        let cluster_addr = match &cluster_listener {
            Some(l) => l.local_addr()?,
            None => addr,
        };
        let node = cluster_options(cluster, &config, cluster_addr, cluster_client_tls)?;
        let node_id = node.node_id;
        let peers = peer_ips(&node);
        let store_opts = StoreOptions::of(&config, node);
        let store = Store::open(&config.storage.data_dir, &service.spec.spec, store_opts).await?;
        let engine = Arc::new(Engine::new(service.spec.clone(), service.hooks, store));
        tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), sync = ?config.storage.sync, "serving");
        // Lines on stdout that scripts and tests can wait for.
        let scheme = |tls: bool| if tls { "https" } else { "http" };
        println!("listening on {}://{addr}", scheme(server_tls.is_some()));
        if cluster_listener.is_some() {
            println!("cluster listening on {}://{cluster_addr}", scheme(cluster_server_tls.is_some()));
        }
        let tracing = crate::telemetry::Tracing::of(&config.telemetry, &service.spec.spec, node_id)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if tracing.is_none() {
            let set: Vec<&str> = service.spec.spec.models.iter()
                .filter(|m| m.tracing.is_some())
                .map(|m| m.name.as_str())
                .collect();
            if !set.is_empty() {
                tracing::info!(models = %set.join(", "), "these models' `tracing:` settings apply once [telemetry] otlp_endpoint is set");
            }
        }
        engine.store.cluster().trace_with(tracing.clone());
        let opts = ServeOptions::of(&config.server)
            .with_planes(planes)
            .with_request_log(config.telemetry.request_log)
            .with_tracing(tracing.clone());
        let rules = Rules::new(&config.firewall, peers.clone());
        warn_unadmitted_peers(&rules, &peers);
        let firewall = Firewall::new(rules);
        let live = Live::new(firewall, auth);
        spawn_reload(live.clone(), path, required, flags, peers, service.spec.clone());
        let mut listeners = vec![http::Listener {
            tcp: listener,
            plane: if cluster_listener.is_some() { Plane::Public } else { Plane::All },
            tls: server_tls,
        }];
        if let Some(tcp) = cluster_listener {
            listeners.push(http::Listener {
                tcp,
                plane: Plane::Cluster,
                tls: cluster_server_tls,
            });
        }
        http::serve(listeners, engine, live, service.openapi, opts, shutdown_signal()).await?;
        if let Some(t) = tracing {
            // Sends the spans still queued (blocking, up to the export's timeout).
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
        Ok(())
    })
}

/// The addresses of the cluster's other members (never rate limited). A node's own
/// address is not one: a node of one exempts nobody.
fn peer_ips(node: &crate::raft::node::ClusterOptions) -> Vec<std::net::IpAddr> {
    node.peers
        .iter()
        .filter(|(id, _)| **id != node.node_id)
        .filter_map(|(_, addr)| addr.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .collect()
}

/// A firewall that keeps a cluster member out breaks the cluster: say so at start.
fn warn_unadmitted_peers(rules: &Rules, peers: &[std::net::IpAddr]) {
    for ip in peers.iter().filter(|ip| !rules.admits(**ip)) {
        tracing::warn!(peer = %ip, "the firewall refuses this cluster member: Raft messages from it will get 403");
    }
}

/// On `SIGHUP`, reads the configuration again and puts its `[firewall]` and its tokens in
/// force; a file that does not load keeps the settings in force, and the log says why.
/// Other sections take effect at the next start.
fn spawn_reload(
    live: Live,
    path: PathBuf,
    required: bool,
    flags: Overrides,
    peers: Vec<std::net::IpAddr>,
    spec: Arc<crate::spec::CompiledSpec>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP: no reload");
            return;
        }
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (p, f) = (path.clone(), flags.clone());
            let loaded = tokio::task::spawn_blocking(move || Config::load(&p, required, &f))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let loaded = loaded.and_then(|config| {
                Authenticator::from_config(&config.auth, &spec, config_dir(&path))
                    .map(|auth| (config, auth))
                    .map_err(|e| format!("{}: {e}", path.display()))
            });
            match loaded {
                Ok((config, auth)) => {
                    let rules = Rules::new(&config.firewall, peers.clone());
                    warn_unadmitted_peers(&rules, &peers);
                    live.firewall.replace(rules);
                    live.replace_tokens(auth);
                    tracing::info!(path = %path.display(), "reloaded the firewall and the tokens");
                }
                Err(e) => {
                    tracing::error!(error = %e, "the configuration does not load; the settings in force stay")
                }
            }
        }
    });
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received");
}

/// The directory the files a configuration names are taken from: the file's own.
fn config_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}
