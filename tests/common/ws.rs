//! WebSocket clients (tokio-tungstenite): handshakes with optional headers, and bounded reads of the
//! next frame, text, close frame, or of silence. Pings and pongs are skipped unless said otherwise.

#![allow(dead_code)]

use super::WAIT;
use futures_util::StreamExt;
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket handshake to `ws://{addr}{path}` with extra request headers; panics only when no
/// answer comes within `WAIT` (a refusal is the `Err`).
pub async fn handshake(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Ws, Response), WsError> {
    let url = format!("ws://{addr}{path}");
    let mut request = url.as_str().into_client_request().expect("ws request");
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    tokio::time::timeout(WAIT, connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("{url}: no handshake answer within {WAIT:?}"))
}

/// Opens a WebSocket (bounded) and checks the 101 answer.
pub async fn connect(addr: SocketAddr, path: &str) -> Ws {
    let (ws, response) = handshake(addr, path, &[])
        .await
        .unwrap_or_else(|e| panic!("ws://{addr}{path}: handshake failed: {e}"));
    assert_eq!(
        response.status(),
        StatusCode::SWITCHING_PROTOCOLS,
        "ws://{addr}{path}: {response:?}"
    );
    ws
}

/// The next message of any kind, pings included (bounded); panics when the connection ends or
/// fails first.
pub async fn next_message(ws: &mut Ws, waiting_for: &str) -> Message {
    match tokio::time::timeout(WAIT, ws.next()).await {
        Err(_) => panic!("no frame within {WAIT:?} while waiting for {waiting_for}"),
        Ok(None) => panic!("connection ended while waiting for {waiting_for}"),
        Ok(Some(Err(e))) => panic!("connection failed while waiting for {waiting_for}: {e}"),
        Ok(Some(Ok(message))) => message,
    }
}

/// The next frame that is not a ping or pong (bounded).
pub async fn next_frame(ws: &mut Ws, waiting_for: &str) -> Message {
    let deadline = Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("websocket: nothing within {WAIT:?} while waiting for {waiting_for}"),
            Ok(None) => panic!("websocket ended while waiting for {waiting_for}"),
            Ok(Some(Err(e))) => panic!("websocket failed while waiting for {waiting_for}: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => return message,
        }
    }
}

/// The next frame, which must be a text frame; returns its text.
pub async fn next_text(ws: &mut Ws) -> String {
    match next_frame(ws, "a text frame").await {
        Message::Text(text) => text.as_str().to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// The next frame must be the text frame `expected`.
pub async fn expect_text(ws: &mut Ws, expected: &str) {
    match next_frame(ws, &format!("text {expected:?}")).await {
        Message::Text(text) => assert_eq!(text.as_str(), expected, "websocket text frame"),
        other => panic!("expected text frame {expected:?}, got {other:?}"),
    }
}

/// `want` text frames in a row (bounded by `wait` in all).
pub async fn texts(ws: &mut Ws, want: usize, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < want {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!(
                "WebSocket: only {} of {want} text frames: {got:?}",
                got.len()
            ),
            Ok(None) => panic!("WebSocket ended after {got:?}"),
            Ok(Some(Err(e))) => panic!("WebSocket failed after {got:?}: {e}"),
            Ok(Some(Ok(Message::Text(t)))) => got.push(t.as_str().to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(other))) => panic!("WebSocket: unexpected frame {other:?} after {got:?}"),
        }
    }
    got
}

/// The next frame must be the server's close frame with `code`; returns its reason.
pub async fn expect_close(ws: &mut Ws, code: CloseCode) -> String {
    match next_frame(ws, &format!("a close frame {code:?}")).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, code, "close code (reason {:?})", frame.reason);
            frame.reason.as_str().to_string()
        }
        other => panic!("expected a close frame with code {code:?}, got {other:?}"),
    }
}

/// After a close frame: the stream ends (bounded).
pub async fn expect_end(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => panic!("connection did not end within {WAIT:?} after the close frame"),
            Ok(None) => return,
            Ok(Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed))) => return,
            Ok(Some(Err(e))) => panic!("connection failed instead of closing: {e}"),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(other))) => panic!("frame after the close frame: {other:?}"),
        }
    }
}

/// Asserts that nothing but pings and pongs arrives (and the connection stays) during `period`.
pub async fn expect_quiet(ws: &mut Ws, period: Duration) {
    let deadline = Instant::now() + period;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("websocket: expected silence, got {other:?}"),
        }
    }
}

/// Sends a close frame and waits (at most 1 s) for it to go out; the outcome does not matter.
pub async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
}
