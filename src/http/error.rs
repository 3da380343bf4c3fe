//! The one place errors become HTTP responses: `HttpError` carries the status and the explanation,
//! sent both as the body and in the module's `X-Nginx-PushStream-Explain` header.

use super::response::{base_response, EXPLAIN_HEADER};
use super::response::{Body, Finish};
use crate::broker::BrokerError;
use hyper::{header, Response, StatusCode};

/// An error answer: status, explanation, and extra headers (e.g. `Allow`).
#[derive(Debug, Clone)]
pub struct HttpError {
    /// Status code.
    pub status: StatusCode,
    /// Human explanation (also in the explain header).
    pub explain: String,
    /// Extra headers.
    pub headers: Vec<(header::HeaderName, String)>,
}

impl HttpError {
    /// An error with a status and explanation.
    pub fn new(status: StatusCode, explain: impl Into<String>) -> HttpError {
        HttpError {
            status,
            explain: explain.into(),
            headers: Vec::new(),
        }
    }

    /// 405 with the `Allow` header.
    pub fn method_not_allowed(allow: &str) -> HttpError {
        let mut err = HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("Method not allowed. Allowed: {allow}."),
        );
        err.headers.push((header::ALLOW, allow.to_string()));
        err
    }

    /// Builds the response.
    pub fn into_response(self) -> Response<Body> {
        let mut builder = base_response(self.status)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(EXPLAIN_HEADER, header_safe(&self.explain));
        for (name, value) in &self.headers {
            builder = builder.header(name, header_safe(value));
        }
        let body = format!("{}\n", self.explain);
        builder.finish(body)
    }
}

/// Keeps a header value to visible ASCII (non-ASCII and control characters become `?`).
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

impl From<BrokerError> for HttpError {
    fn from(err: BrokerError) -> HttpError {
        let status = match err {
            BrokerError::NoChannelId
            | BrokerError::IdempotencyKeysOff
            | BrokerError::ChannelIdTooLong { .. }
            | BrokerError::ChannelIdNotAllowed { .. } => StatusCode::BAD_REQUEST,
            BrokerError::ReservedChannelId
            | BrokerError::TooManyChannels { .. }
            | BrokerError::TooManySubscriberChannels { .. }
            | BrokerError::TooManyWildcardChannels { .. }
            | BrokerError::TooManyWildcardInRequest { .. }
            | BrokerError::NotAuthorizedToCreate
            | BrokerError::EventsChannelReadOnly
            | BrokerError::EventsChannelSubscription
            | BrokerError::TooManySubscribers { .. } => StatusCode::FORBIDDEN,
            // The module answers 500 when its shared memory is full.
            BrokerError::MemoryExhausted { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            BrokerError::Unavailable(_) | BrokerError::ChannelChanged => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        };
        if let Some(limit) = limit_name(&err) {
            crate::metrics::count_limit_refusal(limit);
        }
        HttpError::new(status, err.to_string())
    }
}

/// The config key of the limit an error reports, if it is a limit.
fn limit_name(err: &BrokerError) -> Option<&'static str> {
    Some(match err {
        BrokerError::ChannelIdTooLong { .. } => "max_channel_id_length",
        BrokerError::TooManyChannels { .. } => "max_number_of_channels",
        BrokerError::TooManySubscriberChannels { .. } => "channels_reserved_for_publishers",
        BrokerError::TooManyWildcardChannels { .. } => "max_number_of_wildcard_channels",
        BrokerError::TooManyWildcardInRequest { .. } => "wildcard_channel_max_qtd",
        BrokerError::TooManySubscribers { .. } => "max_subscribers_per_channel",
        BrokerError::MemoryExhausted { .. } => "shared_memory_size",
        _ => return None,
    })
}
