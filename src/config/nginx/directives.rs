//! The push-stream directives Herald reads: one row per directive (`SPECS`: where it may appear,
//! what kind of value it takes, the Herald key it sets), the legacy names (`RENAMED`), the ones that
//! no longer mean anything (`REMOVED`), and the typed `Value` a directive's argument becomes.
//! To support a new directive, add its row here.

use std::path::PathBuf;
use std::time::Duration;

/// Where a `push_stream_*` directive may appear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// `http` only; maps to `[channels]`.
    Http,
    /// `http`, `server` or `location`, inherited downwards; maps to a `[[location]]` key.
    Any,
}

/// How a directive's argument is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Flag,
    Num,
    /// A time in whole seconds (nginx's sec slot: `ms` not allowed).
    Secs,
    /// A time with millisecond resolution (nginx's msec slot).
    Msecs,
    Size,
    Text,
    /// An nginx complex value: text with variables.
    Expr,
    /// A file whose contents are the value (`push_stream_header_template_file`).
    File,
}

/// One `push_stream_*` value directive: its name, scope, argument kind and the Herald key it sets.
pub(super) struct Spec {
    pub(super) name: &'static str,
    pub(super) scope: Scope,
    pub(super) kind: Kind,
    pub(super) key: &'static str,
}

pub(super) const fn spec(name: &'static str, scope: Scope, kind: Kind, key: &'static str) -> Spec {
    Spec {
        name,
        scope,
        kind,
        key,
    }
}

/// Every value directive of the module, in the order `[channels]` keys are written.
#[rustfmt::skip]
pub(super) const SPECS: &[Spec] = &[
    spec("push_stream_shared_memory_size",                  Scope::Http, Kind::Size,  "shared_memory_size"),
    spec("push_stream_message_ttl",                         Scope::Http, Kind::Secs,  "message_ttl"),
    spec("push_stream_max_messages_stored_per_channel",     Scope::Http, Kind::Num,   "max_messages_stored_per_channel"),
    spec("push_stream_max_channel_id_length",               Scope::Http, Kind::Num,   "max_channel_id_length"),
    spec("push_stream_max_number_of_channels",              Scope::Http, Kind::Num,   "max_number_of_channels"),
    spec("push_stream_max_number_of_wildcard_channels",     Scope::Http, Kind::Num,   "max_number_of_wildcard_channels"),
    spec("push_stream_max_subscribers_per_channel",         Scope::Http, Kind::Num,   "max_subscribers_per_channel"),
    spec("push_stream_wildcard_channel_prefix",             Scope::Http, Kind::Text,  "wildcard_channel_prefix"),
    spec("push_stream_events_channel_id",                   Scope::Http, Kind::Text,  "events_channel_id"),
    spec("push_stream_ping_message_text",                   Scope::Http, Kind::Text,  "ping_message_text"),
    spec("push_stream_channel_deleted_message_text",        Scope::Http, Kind::Text,  "channel_deleted_message_text"),
    spec("push_stream_channel_inactivity_time",             Scope::Http, Kind::Secs,  "channel_inactivity_time"),
    spec("push_stream_timeout_with_body",                   Scope::Http, Kind::Flag,  "timeout_with_body"),
    spec("push_stream_channels_path",                       Scope::Any,  Kind::Expr,  "channels_path"),
    spec("push_stream_store_messages",                      Scope::Any,  Kind::Flag,  "store_messages"),
    spec("push_stream_channel_info_on_publish",             Scope::Any,  Kind::Flag,  "channel_info_on_publish"),
    spec("push_stream_authorized_channels_only",            Scope::Any,  Kind::Flag,  "authorized_channels_only"),
    spec("push_stream_header_template_file",                Scope::Any,  Kind::File,  "header_template"),
    spec("push_stream_header_template",                     Scope::Any,  Kind::Text,  "header_template"),
    spec("push_stream_message_template",                    Scope::Any,  Kind::Text,  "message_template"),
    spec("push_stream_footer_template",                     Scope::Any,  Kind::Text,  "footer_template"),
    spec("push_stream_wildcard_channel_max_qtd",            Scope::Any,  Kind::Num,   "wildcard_channel_max_qtd"),
    spec("push_stream_ping_message_interval",               Scope::Any,  Kind::Msecs, "ping_message_interval"),
    spec("push_stream_subscriber_connection_ttl",           Scope::Any,  Kind::Msecs, "subscriber_connection_ttl"),
    spec("push_stream_longpolling_connection_ttl",          Scope::Any,  Kind::Msecs, "longpolling_connection_ttl"),
    spec("push_stream_websocket_allow_publish",             Scope::Any,  Kind::Flag,  "websocket_allow_publish"),
    spec("push_stream_last_received_message_time",          Scope::Any,  Kind::Expr,  "last_received_message_time"),
    spec("push_stream_last_received_message_tag",           Scope::Any,  Kind::Expr,  "last_received_message_tag"),
    spec("push_stream_last_event_id",                       Scope::Any,  Kind::Expr,  "last_event_id"),
    spec("push_stream_user_agent",                          Scope::Any,  Kind::Expr,  "user_agent"),
    spec("push_stream_padding_by_user_agent",               Scope::Any,  Kind::Text,  "padding_by_user_agent"),
    spec("push_stream_allowed_origins",                     Scope::Any,  Kind::Expr,  "allowed_origins"),
    spec("push_stream_allow_connections_to_events_channel", Scope::Any,  Kind::Flag,  "allow_connections_to_events_channel"),
];

/// Old directive names (the module's CHANGELOG) and the directive each became.
#[rustfmt::skip]
pub(super) const RENAMED: &[(&str, &str)] = &[
    ("push_stream_max_reserved_memory",              "push_stream_shared_memory_size"),
    ("push_stream_min_message_buffer_timeout",       "push_stream_message_ttl"),
    ("push_stream_max_message_buffer_length",        "push_stream_max_messages_stored_per_channel"),
    ("push_stream_subscriber_connection_timeout",    "push_stream_subscriber_connection_ttl"),
    ("push_stream_broadcast_channel_prefix",         "push_stream_wildcard_channel_prefix"),
    ("push_stream_max_number_of_broadcast_channels", "push_stream_max_number_of_wildcard_channels"),
    ("push_stream_broadcast_channel_max_qtd",        "push_stream_wildcard_channel_max_qtd"),
];

/// Directives the module removed, with what replaced them; ignored with a warning.
#[rustfmt::skip]
pub(super) const REMOVED: &[(&str, &str)] = &[
    ("push_stream_content_type",                      "use nginx's default_type in the location"),
    ("push_stream_keepalive",                         "keep-alive is always on"),
    ("push_stream_memory_cleanup_timeout",            "cleanup is automatic"),
    ("push_stream_shared_memory_cleanup_objects_ttl", "cleanup is automatic"),
    ("push_stream_subscriber_disconnect_interval",    "use push_stream_subscriber_connection_ttl"),
    ("push_stream_min_message_buffer_length",         "no longer has an equivalent"),
];

/// A value read from a directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Flag(bool),
    Num(u64),
    Time(Duration),
    Size(u64),
    Text(String),
    /// A Herald expression (`$arg_id`, `$1`, …), already translated from nginx variables.
    Expr(String),
    /// An absolute file path.
    File(PathBuf),
}
