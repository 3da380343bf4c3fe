//! The `herald` command: run the server (embedded default config, `--config FILE`, `--nginx-config
//! FILE`, `--listen ADDR`), check a config file (`herald check-config [--connect] FILE`: `--connect` also
//! reaches the Redis servers of `[engine]`; an nginx.conf is read as `--nginx-config` would), print the
//! TOML equivalent of an nginx push-stream configuration (`herald migrate FILE`), print the embedded
//! default config (`herald default-config`), or ask a running server to reload its config
//! (`herald reload PID`: the file the process was started with is validated first, then SIGHUP).

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
    /// Ask the running server with this process id to re-read its configuration: the file it was
    /// started with is validated first (exit 1 and nothing sent when invalid), then SIGHUP is sent.
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
    /// Print the embedded default configuration (what `herald` serves without --config), to copy
    /// and edit: `herald default-config > herald.toml`.
    DefaultConfig,
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
    // Colour codes only for a person at a terminal, not in journald, files or log collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Reload { pid }) = &cli.command {
        return reload(*pid);
    }
    if let Some(Command::DefaultConfig) = &cli.command {
        print!("{}", herald::config::DEFAULT_CONFIG);
        return ExitCode::SUCCESS;
    }
    if let Some(Command::CheckConfig { file, connect }) = &cli.command {
        let loaded = match is_nginx_conf(file) {
            true => nginx::import_file(file).map(|import| {
                for warning in &import.warnings {
                    eprintln!("warning: {warning}");
                }
                import.config
            }),
            false => Config::from_file(file),
        };
        return match loaded {
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

/// An nginx configuration rather than Herald TOML: its name ends in `.conf`, or its text has an
/// nginx block (`http {`, `server {`, `location … {`) or a `push_stream_` directive.
fn is_nginx_conf(file: &std::path::Path) -> bool {
    if file.extension().is_some_and(|e| e == "conf") {
        return true;
    }
    let Ok(text) = std::fs::read_to_string(file) else {
        return false;
    };
    text.lines().map(str::trim).any(|line| {
        line.starts_with("push_stream_")
            || ((line.starts_with("http")
                || line.starts_with("server")
                || line.starts_with("location"))
                && line.ends_with('{'))
    })
}

/// `herald reload PID`: finds how the process was started (its command line and working directory
/// in /proc), loads and checks that configuration exactly as the server will (including the
/// listener exposure check), and only then sends SIGHUP. Exit 0 when sent, 1 when the file is
/// refused (nothing sent), 2 when the process cannot be read or signalled.
fn reload(pid: i32) -> ExitCode {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let cmdline = match std::fs::read(proc_dir.join("cmdline")) {
        Ok(bytes) => bytes,
        Err(err) => {
            eprintln!("cannot read the command line of process {pid}: {err}");
            return ExitCode::from(2);
        }
    };
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let is_herald = args.first().is_some_and(|a| {
        std::path::Path::new(a)
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("herald"))
    });
    if !is_herald {
        eprintln!(
            "process {pid} is not a herald server ({:?}); nothing sent",
            args.first()
        );
        return ExitCode::from(2);
    }
    let started = match Cli::try_parse_from(&args) {
        Ok(cli) if cli.command.is_none() => cli,
        _ => {
            eprintln!("process {pid} is not a herald server (it runs {args:?}); nothing sent");
            return ExitCode::from(2);
        }
    };
    let cwd = std::fs::read_link(proc_dir.join("cwd")).unwrap_or_default();
    let resolve = |file: PathBuf| {
        if file.is_relative() {
            cwd.join(file)
        } else {
            file
        }
    };
    let source = match (started.config, started.nginx_config) {
        (Some(file), _) => ConfigSource::Toml(resolve(file)),
        (None, Some(file)) => ConfigSource::Nginx(resolve(file)),
        (None, None) => ConfigSource::Embedded,
    };
    let config = match source.load() {
        Ok((config, _)) => config,
        Err(err) => {
            eprintln!("{err}\nreload refused: process {pid} keeps its running configuration; nothing sent");
            return ExitCode::FAILURE;
        }
    };
    let listen = started
        .listen
        .map(Ok)
        .unwrap_or_else(|| config.listen_addr());
    if let Ok(addr) = listen {
        if let Err(problem) = config.check_exposure(addr) {
            eprintln!("{problem}\nreload refused: process {pid} keeps its running configuration; nothing sent");
            return ExitCode::FAILURE;
        }
    }
    // SAFETY: kill(2) with a pid that names a herald process and a valid signal number has no
    // memory effects.
    let sent = unsafe { libc::kill(pid, libc::SIGHUP) };
    if sent != 0 {
        eprintln!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        );
        return ExitCode::from(2);
    }
    println!(
        "{} is valid; asked process {pid} to reload it",
        source.describe()
    );
    ExitCode::SUCCESS
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
    tracing::info!(
        "location /healthz (exact): liveness, 200 while the process answers; /readyz (exact): readiness, 503 while shutting down or while the engine cannot serve"
    );
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
