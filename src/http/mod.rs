//! The HTTP side: the listener and connection loop (`Server`), request dispatch to the matched
//! location (publisher, subscriber, statistics), and the error-to-response mapping. It wires
//! `broker` and `transport` together and holds no channel state of its own.

pub mod access;
mod body;
pub mod channels_path;
mod descriptors;
mod error;
mod io;
mod publisher;
mod raw;
mod response;
pub mod router;
mod static_files;
mod stats;
mod subscriber;

pub use error::HttpError;

use crate::broker::{BrokerSettings, ChannelIdRules};
use crate::config::Config;
use crate::engine::Engine;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use arc_swap::ArcSwap;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use response::{Body, Finish};
use router::{FormatRegistry, Handler, Router};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// The part of the configuration a reload replaces: locations, id rules and connection limits.
/// Requests take a snapshot when they start; connections keep what they started with.
#[derive(Debug)]
pub struct Routes {
    /// Compiled locations.
    pub router: Router,
    /// Channel id rules.
    pub rules: ChannelIdRules,
    /// Largest request body (and WebSocket message).
    pub max_body_size: u64,
    /// Write stall that closes a connection.
    pub send_timeout: Duration,
    /// TCP keepalive idle time.
    pub tcp_keepalive: Duration,
    /// Drain time after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// The configured listen address (a reload cannot move the listener).
    pub listen: String,
    /// Log one line per request.
    pub access_log: bool,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Channel prefixes that need an authorizing location.
    pub private_channel_prefixes: Vec<String>,
    /// Most channels per subscribe request.
    pub max_channels_per_subscription: Option<u64>,
    /// Most distinct channels per publisher request.
    pub max_channels_per_publish: Option<u64>,
    /// Most open connections.
    pub max_connections: Option<u64>,
    /// Most open connections per peer address.
    pub max_connections_per_address: Option<u64>,
    /// Time to send the request head.
    pub header_read_timeout: Duration,
    /// Largest request head.
    pub max_header_size: usize,
    /// Time a WebSocket client gets to finish a message it started.
    pub websocket_message_timeout: Duration,
    /// Longest wait between two reads of a request body.
    pub body_read_timeout: Duration,
    /// Most request-body bytes buffered at once by the server.
    pub max_buffered_body_size: u64,
}

impl Routes {
    fn compile(config: &Config, formats: &mut FormatRegistry) -> Result<Routes, String> {
        Ok(Routes {
            router: Router::compile(config, formats)?,
            rules: ChannelIdRules::new(
                config.channels.max_channel_id_length,
                &config.channels.channel_id_pattern,
            )
            .map_err(|e| format!("channels.channel_id_pattern: {e}"))?,
            max_body_size: config.server.max_body_size.0,
            send_timeout: config.server.send_timeout.0,
            tcp_keepalive: config.server.tcp_keepalive.0,
            shutdown_timeout: config.server.shutdown_timeout.0,
            listen: config.server.listen.clone(),
            access_log: config.server.access_log,
            trusted_proxies: config
                .server
                .trusted_proxies
                .iter()
                .map(|p| access::parse_net(p))
                .collect::<Result<_, _>>()?,
            private_channel_prefixes: config.channels.private_channel_prefixes.clone(),
            max_channels_per_subscription: config.channels.max_channels_per_subscription,
            max_channels_per_publish: config.channels.max_channels_per_publish,
            max_connections: config.server.max_connections,
            max_connections_per_address: config.server.max_connections_per_address,
            header_read_timeout: config.server.header_read_timeout.0,
            // Validation keeps it at least MIN_HEADER_SIZE.
            max_header_size: usize::try_from(config.server.max_header_size.0).unwrap_or(usize::MAX),
            websocket_message_timeout: config.server.websocket_message_timeout.0,
            body_read_timeout: config.server.body_read_timeout.0,
            max_buffered_body_size: config.server.max_buffered_body_size.0,
        })
    }
}

/// Everything a request handler needs. Shared by all connections.
#[derive(Debug)]
pub struct AppState {
    /// The engine: publishes, deletes, subscriptions and statistics go through it (its local broker
    /// with `engine.broker()`).
    pub engine: Engine,
    routes: ArcSwap<Routes>,
    formats: Mutex<FormatRegistry>,
    /// Host name for statistics.
    pub hostname: String,
    /// Ends live subscriber streams on shutdown.
    pub shutdown: Shutdown,
    /// The address the listener is bound to (a reload is checked against it).
    listen_addr: SocketAddr,
    /// Request-body and unfinished WebSocket message bytes buffered now (bounded by
    /// `max_buffered_body_size`).
    pub buffered_bytes: Arc<crate::budget::ByteBudget>,
}

impl AppState {
    /// The current locations and limits.
    pub fn routes(&self) -> Arc<Routes> {
        self.routes.load_full()
    }

    /// Applies a new configuration: new requests and connections use its locations, templates,
    /// TTLs and limits; open connections keep theirs. The listen address cannot change (a warning
    /// says so).
    pub fn reload(&self, config: &Config) -> Result<(), String> {
        for warning in config.check_exposure(self.listen_addr)? {
            tracing::warn!("{warning}");
        }
        let mut formats = self.formats.lock();
        let routes = Routes::compile(config, &mut formats)?;
        let settings = BrokerSettings::from_config(&config.channels, formats.len());
        drop(formats);
        if routes.listen != self.routes().listen {
            tracing::warn!(
                old = %self.routes().listen,
                new = %routes.listen,
                "server.listen cannot change on reload; restart to move the listener"
            );
        }
        self.engine.reconfigure(settings);
        self.routes.store(Arc::new(routes));
        Ok(())
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration could not be compiled.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The listener would serve an admin API to anyone.
    #[error("refusing to start: {0}")]
    Exposed(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    trigger: ShutdownTrigger,
    /// Connections the open-file limit leaves room for.
    capacity: descriptors::ConnectionCapacity,
}

impl Server {
    /// Compiles the config and binds its listen address (or `listen`, when given).
    pub async fn bind(config: &Config, listen: Option<SocketAddr>) -> Result<Server, StartError> {
        let addr = match listen {
            Some(addr) => addr,
            None => config.listen_addr().map_err(StartError::Config)?,
        };
        for warning in config.check_exposure(addr).map_err(StartError::Exposed)? {
            tracing::warn!("{warning}");
        }
        // Before anything registers a metric handle.
        if crate::metrics::install().is_none() {
            tracing::warn!(
                "another metrics recorder is installed; /metrics will not show Herald's metrics"
            );
        }
        let mut formats = FormatRegistry::default();
        let routes = Routes::compile(config, &mut formats).map_err(StartError::Config)?;
        let hostname = gethostname::gethostname().to_string_lossy().into_owned();
        let engine = Engine::new(
            &config.engine,
            BrokerSettings::from_config(&config.channels, formats.len()),
            &hostname,
        )
        .map_err(StartError::Config)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let capacity = descriptors::ConnectionCapacity::at_start(config.server.max_connections);
        let (trigger, shutdown) = shutdown::channel();
        let listen_addr = listener.local_addr().unwrap_or(addr);
        let state = Arc::new(AppState {
            engine,
            routes: ArcSwap::from_pointee(routes),
            formats: Mutex::new(formats),
            hostname,
            shutdown,
            listen_addr,
            buffered_bytes: Arc::default(),
        });
        Ok(Server {
            listener,
            state,
            trigger,
            capacity,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The shared state (broker, router).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `signal` resolves, then stops accepting, ends subscriber streams (each gets its
    /// footer) and waits up to the shutdown timeout for connections to finish.
    pub async fn run(self, signal: impl Future<Output = ()>) {
        let Server {
            listener,
            state,
            trigger,
            capacity,
        } = self;
        let mut spare_descriptor = descriptors::SpareDescriptor::open();
        let out_of_descriptors_refusal = io::refusal_bytes("the open-file limit");
        // Every connection's guard (`io::ConnectionGuard`, held by the connection task and by an
        // upgraded WebSocket's task) holds a clone of `open_connections`; `closed` resolves when
        // all have ended.
        let (open_connections, mut closed) = tokio::sync::mpsc::channel::<()>(1);
        let sweeper = tokio::spawn({
            let engine = state.engine.clone();
            let shutdown = state.shutdown.clone();
            async move { engine.run(shutdown).await }
        });
        let upkeep = tokio::spawn({
            let mut shutdown = state.shutdown.clone();
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tokio::select! {
                        _ = tick.tick() => crate::metrics::upkeep(),
                        _ = shutdown.recv() => return,
                    }
                }
            }
        });
        let connection_counts = Arc::new(io::ConnectionCounts::default());
        tokio::pin!(signal);
        let mut accept_backoff = Duration::from_millis(5);
        loop {
            let (stream, peer) = tokio::select! {
                _ = &mut signal => break,
                accepted = listener.accept() => match accepted {
                    Ok(pair) => {
                        accept_backoff = Duration::from_millis(5);
                        pair
                    }
                    Err(err) => {
                        // Out of descriptors: the spare lets one waiting client get its 503.
                        if descriptors::out_of_descriptors(&err)
                            && spare_descriptor
                                .answer_one(&listener, &out_of_descriptors_refusal)
                                .await
                        {
                            continue;
                        }
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(accept_backoff).await;
                        accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
            };
            let routes = state.routes();
            let slot = match io::ConnectionCounts::admit(
                &connection_counts,
                peer.ip(),
                capacity.limit(routes.max_connections),
                routes.max_connections_per_address,
            ) {
                Ok(slot) => slot,
                Err(limit) => {
                    crate::metrics::count_connection_refusal(limit);
                    tokio::spawn(io::refuse_connection(stream, limit));
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if let Err(err) = io::enable_keepalive(&stream, routes.tcp_keepalive) {
                tracing::debug!(%peer, error = %err, "cannot enable TCP keepalive");
            }
            let stream = io::TimedIo::new(stream, routes.send_timeout);
            let guard = io::ConnectionGuard::new(slot, open_connections.clone());
            let state = state.clone();
            tokio::spawn(serve_connection(state, stream, peer, routes, guard));
        }
        drop(listener);
        tracing::info!("shutting down: closing subscriber connections");
        trigger.trigger();
        drop(open_connections);
        let shutdown_timeout = state.routes().shutdown_timeout;
        if tokio::time::timeout(shutdown_timeout, closed.recv())
            .await
            .is_err()
        {
            tracing::warn!(
                ?shutdown_timeout,
                "connections still open after the shutdown timeout; closing them"
            );
        }
        let _ = sweeper.await;
        let _ = upkeep.await;
    }
}

/// Serves one accepted connection: long-lived subscribers on the lean path, the rest with hyper.
/// `guard` is the connection's slot and drain handle; it goes with the connection (and with a
/// WebSocket it is upgraded to).
async fn serve_connection(
    state: Arc<AppState>,
    mut stream: io::TimedIo<tokio::net::TcpStream>,
    peer: SocketAddr,
    routes: Arc<Routes>,
    guard: io::ConnectionGuard,
) {
    let mut shutdown = state.shutdown.clone();
    let first = tokio::select! {
        first = raw::read_first_request(&mut stream, &state, routes.max_header_size, routes.header_read_timeout) => first,
        _ = shutdown.recv() => return,
    };
    let prefix = match first {
        raw::FirstRequest::Gone => return,
        raw::FirstRequest::Subscriber(request) => {
            let response = handle(&state, request, peer.ip()).await;
            if let Err(err) = raw::write_response(&mut stream, response).await {
                tracing::debug!(%peer, error = %err, "subscriber connection ended with an error");
            }
            return;
        }
        raw::FirstRequest::Other(prefix) => prefix,
    };
    // Boxed, so that the lean path's connections do not carry the size of hyper's connection state.
    Box::pin(serve_with_hyper(state, stream, prefix, peer, routes, guard)).await;
}

/// Serves a connection with hyper, replaying the bytes the lean path already read. Each request
/// carries a clone of the connection's `guard` in its extensions, for a WebSocket upgrade to keep.
async fn serve_with_hyper(
    state: Arc<AppState>,
    stream: io::TimedIo<tokio::net::TcpStream>,
    prefix: Vec<u8>,
    peer: SocketAddr,
    routes: Arc<Routes>,
    guard: io::ConnectionGuard,
) {
    let mut shutdown = state.shutdown.clone();
    let service_state = state.clone();
    let service = service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let state = service_state.clone();
        request.extensions_mut().insert(guard.clone());
        async move { Ok::<_, Infallible>(handle(&state, request, peer.ip()).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(routes.header_read_timeout)
        .max_buf_size(routes.max_header_size)
        .serve_connection(TokioIo::new(raw::Rewind::new(stream, prefix)), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.recv() => {
            // Finish the response in flight (subscriber streams end with their footer on the same
            // signal), then close instead of keeping the connection alive.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        if err.is_parse_too_large() {
            crate::metrics::count_limit_refusal("max_header_size");
        } else if err.is_timeout() {
            crate::metrics::count_limit_refusal("header_read_timeout");
        }
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Dispatches one request to its location.
async fn handle<B>(state: &AppState, request: Request<B>, peer: std::net::IpAddr) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = std::time::Instant::now();
    let (mut parts, body) = request.into_parts();
    let upgrade = subscriber::Upgrade::take(&mut parts.extensions);
    let path = parts.uri.path().to_string();
    if let Some(response) = health_response(state, &path) {
        return response;
    }
    let query = parts.uri.query().unwrap_or("").to_string();
    let routes = state.routes();
    let Some((location, vars)) = routes.router.route(&path, &query, &parts.headers) else {
        return HttpError::new(StatusCode::NOT_FOUND, format!("No location serves {path}."))
            .into_response();
    };
    let client = access::client_address(peer, &parts.headers, &routes.trusted_proxies);
    // Channel ids are text: bytes that are not UTF-8 are refused, not replaced (else `%FF` and
    // `%FE` would name the same channel).
    let channels_path = location.channels_path.eval_exact(&vars);
    let channels_log = match (&channels_path, routes.access_log) {
        (Ok(channels), true) => channels.clone(),
        _ => String::new(),
    };
    let checked = if parts.method == hyper::Method::OPTIONS {
        // CORS preflights carry no credentials.
        Ok(())
    } else {
        location
            .access
            .check_request(client, &parts.headers)
            .and_then(|()| {
                let publishes = matches!(parts.method, hyper::Method::POST | hyper::Method::PUT);
                match &location.handler {
                    Handler::Publisher(_) if publishes => {
                        location.access.check_publish_rate(client, &parts.headers)
                    }
                    _ => Ok(()),
                }
            })
    };
    let checked = checked.and_then(|()| {
        channels_path.map_err(|err| HttpError::new(StatusCode::BAD_REQUEST, err.to_string()))
    });
    let result = match (&location.handler, checked) {
        (_, Err(refused)) => Err(refused),
        (Handler::Publisher(settings), Ok(channels_path)) => {
            publisher::handle(state, settings, &parts, body, &query, &channels_path).await
        }
        (Handler::Subscriber(settings), Ok(channels_path)) => {
            subscriber::handle(
                state,
                settings,
                (&location.access, client),
                &parts,
                upgrade,
                &vars,
                &channels_path,
            )
            .await
        }
        (Handler::Stats, Ok(channels_path)) => {
            stats::handle(state, &parts.method, &parts.headers, &vars, &channels_path).await
        }
        (Handler::Metrics, Ok(_)) => metrics_response(state, &parts.method),
        (Handler::Static, Ok(channels_path)) => static_files::handle(&parts.method, &channels_path),
    };
    let mut response = result.unwrap_or_else(HttpError::into_response);
    if let Some(origins) = &location.allowed_origins {
        add_cors_headers(&mut response, &origins.eval(&vars), &location.handler);
    }
    let status = response.status().as_u16();
    location.requests.count(status);
    if routes.access_log {
        // Long-lived answers (streams, WebSocket upgrades) are logged when they start: their size
        // is not known yet.
        let bytes = hyper::body::Body::size_hint(response.body())
            .exact()
            .map_or_else(|| "stream".to_string(), |n| n.to_string());
        tracing::info!(
            target: "herald::access",
            client = %client,
            method = %parts.method,
            path = %path,
            channels = %channels_log,
            status,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            bytes = %bytes,
            location = %location.path,
            "request"
        );
    }
    response
}

/// `/healthz` (the process answers) and `/readyz` (accepting subscribers: 503 once shutdown began).
fn health_response(state: &AppState, path: &str) -> Option<Response<Body>> {
    let (status, text) = match path {
        "/healthz" => return Some(liveness_response()),
        "/readyz" if state.shutdown.is_shutdown() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        ),
        "/readyz" => match state.engine.readiness() {
            Ok(()) => (StatusCode::OK, "ready\n".to_string()),
            Err(problem) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("engine: {problem}\n"),
            ),
        },
        _ => return None,
    };
    Some(
        response::base_response(status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .finish(Body::from(text)),
    )
}

/// The answer to `/healthz`: 200, the process answers (also given at the connection limit).
fn liveness_response() -> Response<Body> {
    response::base_response(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from("ok\n"))
        .unwrap_or_default()
}

/// The metrics location: Prometheus text exposition.
fn metrics_response(state: &AppState, method: &hyper::Method) -> Result<Response<Body>, HttpError> {
    if method != hyper::Method::GET {
        return Err(HttpError::method_not_allowed("GET"));
    }
    Ok(response::base_response(StatusCode::OK)
        .header(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .finish(crate::metrics::render(state.engine.broker())))
}

/// The module's CORS headers: origin, the location's methods, and the headers its clients send.
fn add_cors_headers(response: &mut Response<Body>, origin: &str, handler: &Handler) {
    let methods = match handler {
        Handler::Publisher(settings) => publisher::allowed_methods(settings),
        Handler::Subscriber(_) | Handler::Stats | Handler::Metrics | Handler::Static => "GET",
    };
    let Ok(origin) = HeaderValue::from_str(origin) else {
        return;
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(
            "If-Modified-Since,If-None-Match,Etag,Event-Id,Event-Type,Last-Event-Id,Idempotency-Key",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(
            "Etag,Last-Modified,X-Nginx-PushStream-Explain,X-Herald-Recovery,Idempotent-Replayed",
        ),
    );
}
