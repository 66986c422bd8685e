//! The generated binary's command line: `serve` and `token new`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::{self, Authenticator};
use crate::config::{Config, Overrides};
use crate::engine::Engine;
use crate::http::{self, ServeOptions};
use crate::spec::SpecError;
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
    },
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LITHAIR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LITHAIR_LOG_FORMAT").is_ok_and(|v| v == "json");
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the binary: parses the command line, then serves or administers.
pub fn main(service: Result<Service, SpecError>) -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let service = match service {
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
        } => serve(
            service,
            config,
            Overrides {
                host,
                port,
                data_dir,
            },
        ),
        Command::Token {
            command: TokenCommand::New { name, roles },
        } => token_new(&service, &name, &roles),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn token_new(service: &Service, name: &str, roles: &[String]) -> anyhow::Result<()> {
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
    eprintln!("append the table below to lithair.toml and restart the service:");
    println!();
    println!("[[auth.tokens]]");
    println!("name = {}", toml_string(name));
    println!("sha256 = \"{hash}\"");
    println!(
        "roles = [{}]",
        roles
            .iter()
            .map(|r| toml_string(r))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn serve(service: Service, config_path: Option<PathBuf>, flags: Overrides) -> anyhow::Result<()> {
    let required = config_path.is_some();
    let path = config_path.unwrap_or_else(|| PathBuf::from("lithair.toml"));
    let config = Config::load(&path, required, &flags)?;
    let auth = Authenticator::new(&config.auth.tokens, &service.spec)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let store = Store::open(
        &config.storage.data_dir,
        &service.spec.spec,
        StoreOptions {
            sync: config.storage.sync,
            flush_interval: Duration::from_millis(config.storage.flush_interval_ms),
            snapshot_every: config.storage.snapshot_every,
            node_id: "1".into(),
        },
    )?;
    let engine = Arc::new(Engine::new(service.spec.clone(), service.hooks, store));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind((config.server.host, config.server.port)).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", config.server.host, config.server.port)
        })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %config.storage.data_dir.display(), sync = ?config.storage.sync, "serving");
        // A line on stdout that scripts and tests can wait for.
        println!("listening on http://{addr}");
        let opts = ServeOptions {
            max_body_bytes: config.server.max_body_bytes,
            header_timeout: Duration::from_secs(config.server.header_timeout_secs),
            drain_timeout: Duration::from_secs(30),
        };
        http::serve(listener, engine, auth, service.openapi, opts, shutdown_signal()).await?;
        Ok(())
    })
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
