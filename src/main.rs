//! The `herald` command: run the server (embedded default config, `--config FILE`, `--nginx-config
//! FILE`, `--listen ADDR`), check a config file (`herald check-config [--connect] FILE`: `--connect` also
//! reaches the Redis servers of `[engine]`), print the TOML equivalent of
//! an nginx push-stream configuration (`herald migrate FILE`), or ask a running server to reload its
//! config (`herald reload PID`, the same as `kill -HUP PID`).

use clap::{Parser, Subcommand};
use herald::config::nginx::{self, Warning};
use herald::config::LogFormat;
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
    /// Serve an nginx configuration written for the push-stream module (its push_stream locations;
    /// other nginx directives are ignored with a warning).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    nginx_config: Option<PathBuf>,
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
        /// Also connect to every Redis of `[engine]` and check its version (exit 1 if one fails).
        #[arg(long)]
        connect: bool,
    },
    /// Ask the running server with this process id to re-read its configuration (sends SIGHUP).
    Reload {
        /// Process id of the server (a positive number: never a process group).
        #[arg(value_parser = clap::value_parser!(i32).range(1..))]
        pid: i32,
    },
    /// Print the Herald TOML equivalent of an nginx push-stream configuration (warnings on stderr).
    Migrate {
        /// The nginx configuration file (includes are followed).
        file: PathBuf,
    },
}

/// Where the configuration comes from; SIGHUP re-reads the same source.
#[derive(Debug, Clone)]
enum ConfigSource {
    /// The embedded config/herald.toml.
    Embedded,
    /// A TOML file (`--config`).
    Toml(PathBuf),
    /// An nginx configuration (`--nginx-config`).
    Nginx(PathBuf),
}

impl ConfigSource {
    fn describe(&self) -> String {
        match self {
            ConfigSource::Embedded => "embedded default".to_string(),
            ConfigSource::Toml(file) | ConfigSource::Nginx(file) => file.display().to_string(),
        }
    }

    /// Loads and validates the configuration, with the importer's warnings for an nginx file.
    fn load(&self) -> Result<(Config, Vec<Warning>), herald::config::ConfigError> {
        match self {
            ConfigSource::Embedded => Ok((Config::embedded_default()?, Vec::new())),
            ConfigSource::Toml(file) => Ok((Config::from_file(file)?, Vec::new())),
            ConfigSource::Nginx(file) => {
                let import = nginx::import_file(file)?;
                Ok((import.config, import.warnings))
            }
        }
    }
}

/// Logs to stderr as text or JSON lines; levels from `RUST_LOG` (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Reload { pid }) = &cli.command {
        // SAFETY: kill(2) with a caller-given pid and a valid signal number has no memory effects.
        let sent = unsafe { libc::kill(*pid, libc::SIGHUP) };
        if sent != 0 {
            eprintln!(
                "cannot signal process {pid}: {}",
                std::io::Error::last_os_error()
            );
            return ExitCode::FAILURE;
        }
        println!("asked process {pid} to reload its configuration");
        return ExitCode::SUCCESS;
    }
    if let Some(Command::CheckConfig { file, connect }) = &cli.command {
        return match Config::from_file(file) {
            Ok(config) => {
                println!(
                    "{}: configuration is valid ({} locations)",
                    file.display(),
                    config.locations.len()
                );
                if *connect {
                    return check_redis(&config);
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Migrate { file }) = &cli.command {
        return match nginx::import_file(file) {
            Ok(import) => {
                for warning in &import.warnings {
                    eprintln!("warning: {warning}");
                }
                print!("{}", import.toml);
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::FAILURE
            }
        };
    }
    let source = match (cli.config, cli.nginx_config) {
        (Some(file), _) => ConfigSource::Toml(file),
        (None, Some(file)) => ConfigSource::Nginx(file),
        (None, None) => ConfigSource::Embedded,
    };
    let (config, warnings) = match source.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::FAILURE;
        }
    };
    init_logging(config.server.log_format);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    herald::memory::give_back_freed_memory();
    runtime.block_on(serve(config, source, cli.listen))
}

/// `check-config --connect`: reaches every Redis of `[engine]`; exit 1 when one cannot serve.
fn check_redis(config: &Config) -> ExitCode {
    if config.engine.redis_urls.is_empty() {
        println!("engine: memory (no Redis to connect to)");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for (index, (url, result)) in runtime
        .block_on(herald::engine::probe_redis(&config.engine))
        .into_iter()
        .enumerate()
    {
        let what = if config.engine.cluster {
            format!("cluster seed {url}")
        } else {
            format!("shard {index} {url}")
        };
        match result {
            Ok(server) => println!("{what}: {server}"),
            Err(problem) => {
                ok = false;
                eprintln!("{what}: {problem}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn serve(config: Config, source: ConfigSource, listen: Option<SocketAddr>) -> ExitCode {
    // Every signal listener is installed before anything else, so that a signal sent right after
    // start is handled rather than left to its default action (which ends the process).
    let signal = shutdown_signal();
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
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
    for location in server.state().routes().router.locations() {
        tracing::info!("location {}", location.description);
    }
    let reloads = tokio::spawn(reload_on_sighup(server.state().clone(), source, hangups));
    server.run(signal).await;
    reloads.abort();
    tracing::info!("herald stopped");
    ExitCode::SUCCESS
}

/// Re-reads the configuration on every SIGHUP; an invalid one is logged and the old one kept.
async fn reload_on_sighup(
    state: std::sync::Arc<herald::http::AppState>,
    source: ConfigSource,
    hangups: std::io::Result<tokio::signal::unix::Signal>,
) {
    let mut hangups = match hangups {
        Ok(signal) => signal,
        Err(err) => {
            tracing::warn!(error = %err, "cannot listen for SIGHUP; reload is unavailable");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let name = source.describe();
        match source
            .load()
            .map_err(|e| e.to_string())
            .and_then(|(c, warnings)| {
                for warning in &warnings {
                    tracing::warn!("{warning}");
                }
                state.reload(&c)
            }) {
            Ok(()) => {
                tracing::info!(config = %name, "configuration reloaded; new connections use it")
            }
            Err(err) => {
                tracing::error!(config = %name, error = %err, "reload refused; keeping the running configuration")
            }
        }
    }
}

/// Listens for SIGINT and SIGTERM from the moment it is called (a signal during start-up is not
/// left to the default action), with one listener each for the whole run: the returned future
/// resolves on the first signal; a second one exits the process at once.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        let name = signals.next().await;
        tracing::info!("{name} received");
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("second signal: exiting now");
            std::process::exit(130);
        });
    }
}

/// The process's SIGINT and SIGTERM listeners.
struct Signals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(signal) => Some(signal),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot listen for {name}");
                    None
                }
            };
            Signals {
                interrupt: listen(SignalKind::interrupt(), "SIGINT"),
                terminate: listen(SignalKind::terminate(), "SIGTERM"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The name of the next signal received.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = recv(&mut self.interrupt) => "SIGINT",
                _ = recv(&mut self.terminate) => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
