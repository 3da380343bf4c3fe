//! The `herald` command: run the server (embedded default config, `--config FILE`, `--listen ADDR`)
//! or check a config file (`herald check-config FILE`).

use clap::{Parser, Subcommand};
use herald::{Config, Server};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Herald: real-time HTTP push-stream server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML). Default: the embedded config/herald.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on this address instead of the config's `server.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::from_file(file) {
            Ok(config) => {
                println!(
                    "{}: configuration is valid ({} locations)",
                    file.display(),
                    config.locations.len()
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match &cli.config {
        Some(file) => Config::from_file(file),
        None => Config::embedded_default(),
    };
    let config = match config {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, cli.listen))
}

async fn serve(config: Config, listen: Option<SocketAddr>) -> ExitCode {
    let server = match Server::bind(&config, listen).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("herald: {err}");
            return ExitCode::FAILURE;
        }
    };
    match server.local_addr() {
        Ok(addr) => tracing::info!(
            "herald {} listening on http://{addr}",
            env!("CARGO_PKG_VERSION")
        ),
        Err(err) => tracing::warn!(error = %err, "listening, but the local address is unknown"),
    }
    for location in server.state().router.locations() {
        tracing::info!("location {}", location.description);
    }
    server.run(shutdown_signal()).await;
    tracing::info!("herald stopped");
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
