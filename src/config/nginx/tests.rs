//! Tests of the nginx importer: syntax, directives, inheritance, output and errors.

use super::render::{format_duration, size_item};
use super::syntax::{tokenize, Tok};
use super::values::{listen_address, nginx_expr};
use super::*;
use crate::config::{MatchKind, Role, SubscriberMode};
use std::time::Duration;

fn words(text: &str) -> Vec<(String, usize)> {
    tokenize(text, &Arc::from(Path::new("t.conf")))
        .unwrap()
        .into_iter()
        .filter_map(|t| match t.tok {
            Tok::Word(w) => Some((w, t.line)),
            _ => None,
        })
        .collect()
}

fn parse_err(text: &str) -> String {
    parse_text(text, &Arc::from(Path::new("t.conf")), 0)
        .unwrap_err()
        .to_string()
}

fn import(text: &str) -> Import {
    import_str(text, Path::new("/nonexistent/t.conf"))
        .unwrap_or_else(|e| panic!("import failed: {e}\n{text}"))
}

fn import_err(text: &str) -> String {
    match import_str(text, Path::new("/nonexistent/t.conf")) {
        Ok(import) => panic!("expected an error, got:\n{}", import.toml),
        Err(e) => e.to_string(),
    }
}

/// A config with `http` lines (from line 3), and one server holding `server` lines.
fn conf(http: &str, server: &str) -> String {
    format!("http {{\npush_stream_shared_memory_size 1m;\n{http}\nserver {{\nlisten 127.0.0.1:9080;\n{server}\n}}\n}}\n")
}

const PUB: &str =
    "location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; }";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("herald-nginx-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn quoted_strings_unescape_like_nginx() {
    let w = words(
        r#"a "x \"y\" \\n \t z" 'it\'s' "$arg_id" w\;x "multi
line" ${arg_id}tail"#,
    );
    let texts: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        texts,
        [
            "a",
            "x \"y\" \\n \t z",
            "it's",
            "$arg_id",
            "w\\;x",
            "multi\nline",
            "${arg_id}tail"
        ]
    );
    assert_eq!(w[5].1, 1, "a token's line is where it starts");
    assert_eq!(w[6].1, 2);
}

#[test]
fn comments_end_at_the_line_and_hash_inside_words_is_text() {
    let w = words("a b#c # comment ; { }\n  d; # another\n");
    let texts: Vec<&str> = w.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(texts, ["a", "b#c", "d"]);
    assert_eq!(w[2].1, 2);
}

#[test]
fn syntax_errors_name_file_and_line() {
    let missing_semicolon = parse_err("http {\n  server {\n    listen 80\n  }\n}\n");
    assert!(
        missing_semicolon.starts_with("t.conf:4: unexpected \"}\"")
            && missing_semicolon.contains("\"listen\" (line 3) is not terminated by \";\""),
        "{missing_semicolon}"
    );
    let unclosed = parse_err("http {\n  server {\n  }\n");
    assert!(
        unclosed.starts_with("t.conf:3: unexpected end of file, expecting \"}\""),
        "{unclosed}"
    );
    assert!(parse_err("a;\n}\n").starts_with("t.conf:2: unexpected \"}\""));
    assert!(parse_err("\n;\n").starts_with("t.conf:2: unexpected \";\""));
    let quote = parse_err("a;\nb \"open;\nc;\n");
    assert!(
        quote.starts_with("t.conf:2: unterminated quoted string"),
        "{quote}"
    );
    let glued = parse_err("a \"x\"y;\n");
    assert!(glued.starts_with("t.conf:1: unexpected \"y\""), "{glued}");
    let eof = parse_err("http {\n listen 80\n");
    assert!(eof.contains("expecting \";\" or \"{\""), "{eof}");
}

#[test]
fn includes_are_relative_to_the_including_file_and_globs_are_sorted() {
    let dir = TempDir::new("includes");
    dir.write(
        "conf.d/b.conf",
        "server { listen 9081; location /pub { push_stream_publisher; include ../snippets/path.conf; } }\n",
    );
    dir.write("conf.d/a.conf", "push_stream_message_ttl 7m;\n");
    dir.write("conf.d/.hidden.conf", "push_stream_bogus 1;\n");
    dir.write("conf.d/skip.txt", "push_stream_bogus 1;\n");
    dir.write("snippets/path.conf", "push_stream_channels_path $arg_id;\n");
    let main = dir.write("nginx.conf", "http {\n  include conf.d/*.conf;\n}\n");
    let import = import_file(&main).unwrap();
    assert_eq!(import.config.server.listen, "0.0.0.0:9081");
    assert_eq!(
        import.config.channels.message_ttl.0,
        Duration::from_secs(420)
    );
    assert_eq!(import.config.locations[0].channels_path(), "$arg_id");
    assert!(
        import.toml.contains("# from conf.d/b.conf:1 location /pub"),
        "{}",
        import.toml
    );
}

#[test]
fn include_errors_name_the_include_line_and_errors_inside_name_the_included_file() {
    let dir = TempDir::new("include-errors");
    let main = dir.write("nginx.conf", "http {\n\n  include missing.conf;\n}\n");
    let err = import_file(&main).unwrap_err().to_string();
    assert!(
        err.contains("nginx.conf:3: include \"missing.conf\": cannot open"),
        "{err}"
    );
    dir.write("bad.conf", "# first\npush_stream_message_ttl 5m\n}\n");
    let main = dir.write("nginx.conf", "http {\n  include bad.conf;\n}\n");
    let err = import_file(&main).unwrap_err().to_string();
    assert!(err.contains("bad.conf:3: unexpected \"}\""), "{err}");
    // A glob that matches nothing is fine, as in nginx.
    let main = dir.write(
        "nginx.conf",
        &format!("http {{ include none/*.conf; server {{ {PUB} }} }}\n"),
    );
    assert!(import_file(&main).is_ok());
}

#[test]
fn include_loops_are_refused() {
    let dir = TempDir::new("include-loop");
    dir.write("loop.conf", "include loop.conf;\n");
    let main = dir.write("nginx.conf", "include loop.conf;\n");
    let err = import_file(&main).unwrap_err().to_string();
    assert!(
        err.contains("loop.conf:1: includes nested more than"),
        "{err}"
    );
}

#[test]
fn wildcards_match_like_glob() {
    let m = |p: &str, n: &str| glob::Pattern::new(p).is_ok_and(|p| p.matches(n));
    assert!(m("*.conf", "a.conf"));
    assert!(!m("*.conf", "a.conf.bak"));
    assert!(m("site-?.conf", "site-1.conf"));
    assert!(m("[ab]*", "beta"));
    assert!(!m("[!ab]*", "beta"));
    assert!(m("[0-9].conf", "7.conf"));
    assert!(m("*", ""));
}

#[test]
fn variables_map_to_herald_expressions() {
    assert_eq!(nginx_expr("$arg_id").unwrap(), "$arg_id");
    assert_eq!(nginx_expr("${arg_id}").unwrap(), "$arg_id");
    assert_eq!(nginx_expr("$1").unwrap(), "$1");
    assert_eq!(
        nginx_expr("room-$1/$http_x_channel").unwrap(),
        "room-$1/$http_x_channel"
    );
    assert_eq!(nginx_expr("${1}.b5").unwrap(), "$1.b5");
    assert_eq!(nginx_expr("*").unwrap(), "*");
    assert_eq!(nginx_expr("$cookie_session").unwrap(), "$cookie_session");
    assert!(nginx_expr("$remote_addr").is_err());
    assert!(nginx_expr("${arg_id}x")
        .unwrap_err()
        .contains("directly followed"));
    assert!(nginx_expr("$12").unwrap_err().contains("directly followed"));
    assert!(nginx_expr("a$")
        .unwrap_err()
        .contains("invalid variable name"));
    assert!(nginx_expr("${arg_id").unwrap_err().contains("closing"));
}

#[test]
fn listen_forms() {
    assert_eq!(listen_address("80").unwrap(), "0.0.0.0:80");
    assert_eq!(listen_address("127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
    assert_eq!(listen_address("127.0.0.1").unwrap(), "127.0.0.1:80");
    assert_eq!(listen_address("*:9080").unwrap(), "0.0.0.0:9080");
    assert_eq!(listen_address("localhost:9080").unwrap(), "127.0.0.1:9080");
    assert_eq!(listen_address("[::]:9080").unwrap(), "[::]:9080");
    assert_eq!(listen_address("[::1]").unwrap(), "[::1]:80");
    assert!(listen_address("unix:/tmp/x.sock").is_err());
    assert!(listen_address("example.com:80").is_err());
    assert!(listen_address("99999").is_err());
}

#[test]
fn durations_and_sizes_are_written_in_nginx_syntax() {
    assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    assert_eq!(format_duration(Duration::ZERO), "0s");
    assert_eq!(size_item(32 << 20).to_string(), "\"32m\"");
    assert_eq!(size_item(1000).to_string(), "1000");
    assert_eq!(size_item(0).to_string(), i64::MAX.to_string());
}

#[test]
fn directives_inherit_http_then_server_then_location() {
    let import = import(&conf(
        "push_stream_message_template \"http:~text~\";\npush_stream_ping_message_interval 5s;\npush_stream_channels_path $arg_id;",
        "push_stream_message_template \"server:~text~\";\n\
         location /a { push_stream_subscriber; }\n\
         location /b { push_stream_subscriber; push_stream_message_template \"loc:~text~\"; push_stream_channels_path $arg_b; }\n\
         location /pub { push_stream_publisher; }",
    ));
    let locs = &import.config.locations;
    assert_eq!(locs[0].message_template(), "server:~text~");
    assert_eq!(locs[0].channels_path(), "$arg_id");
    assert_eq!(
        locs[0].ping_message_interval.unwrap().0,
        Duration::from_secs(5)
    );
    assert_eq!(locs[1].message_template(), "loc:~text~");
    assert_eq!(locs[1].channels_path(), "$arg_b");
    assert_eq!(locs[2].role(), Role::Publisher);
    assert_eq!(
        locs[2].message_template, None,
        "templates are not written on publishers"
    );
    assert_eq!(
        import.config.channels.shared_memory_size.unwrap().0,
        1 << 20
    );
}

#[test]
fn module_defaults_are_written_out() {
    let import = import(&conf(
        "",
        "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; }\n\
         location ~ /sub/(.*) { push_stream_subscriber; push_stream_channels_path $1; }\n\
         location /ev/ { push_stream_subscriber eventsource; push_stream_channels_path $arg_id; }\n\
         location = /stats { push_stream_channels_statistics; push_stream_channels_path $arg_id; }",
    ));
    let locs = &import.config.locations;
    assert_eq!(locs[0].store_messages, Some(false));
    assert_eq!(locs[0].channel_info_on_publish, Some(true));
    assert!(!locs[0].admin);
    assert_eq!(locs[1].match_kind, MatchKind::Regex);
    assert_eq!(locs[1].content_type.as_deref(), Some("text/plain"));
    assert_eq!(locs[2].mode, SubscriberMode::EventSource);
    assert_eq!(locs[2].content_type, None);
    assert_eq!(
        (locs[3].match_kind, locs[3].role()),
        (MatchKind::Exact, Role::Stats)
    );
    assert_eq!(import.config.server.max_body_size.0, 1 << 20);
    assert_eq!(import.config.server.listen, "127.0.0.1:9080");
}

#[test]
fn location_modifiers() {
    let import = import(&conf(
        "",
        "location = /pub { push_stream_publisher; push_stream_channels_path $arg_id; }\n\
         location ~* ^/SUB/(.*)$ { push_stream_subscriber; push_stream_channels_path $1; }\n\
         location ^~ /lp/ { push_stream_subscriber long-polling; push_stream_channels_path $arg_id; }\n\
         location ~/ev/(.*) { push_stream_subscriber eventsource; push_stream_channels_path $1; }\n\
         location @named { push_stream_publisher; }",
    ));
    let locs = &import.config.locations;
    assert_eq!(
        (locs[0].match_kind, locs[0].path.as_str()),
        (MatchKind::Exact, "/pub")
    );
    assert_eq!(
        (locs[1].match_kind, locs[1].path.as_str()),
        (MatchKind::Regex, "(?i)^/SUB/(.*)$")
    );
    assert_eq!(
        (locs[2].match_kind, locs[2].path.as_str()),
        (MatchKind::Prefix, "/lp/")
    );
    assert_eq!(
        (locs[3].match_kind, locs[3].path.as_str()),
        (MatchKind::Regex, "/ev/(.*)")
    );
    assert_eq!(locs.len(), 4);
    let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        text.iter()
            .any(|w| w.contains("t.conf:8:") && w.contains("^~")),
        "{text:#?}"
    );
    assert!(
        text.iter()
            .any(|w| w.contains("t.conf:10:") && w.contains("named")),
        "{text:#?}"
    );
}

#[test]
fn every_ignored_directive_gets_one_warning_with_its_line() {
    let import = import(
        "user nginx;\nworker_processes 2;\nevents {\n  worker_connections 10;\n}\nhttp {\n  sendfile on;\n  push_stream_shared_memory_size 1m;\n  server {\n    listen 9080;\n    server_name x;\n    location /pub {\n      push_stream_publisher;\n      push_stream_channels_path $arg_id;\n      add_header X-A b;\n      if ($arg_x) {\n        push_stream_store_messages on;\n        return 403;\n      }\n    }\n  }\n}\n",
    );
    let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
    let expected = [
        (1, "\"user\" ignored"),
        (2, "\"worker_processes\" ignored"),
        (3, "\"events\" block ignored"),
        (7, "\"sendfile\" ignored"),
        (11, "\"server_name\" ignored"),
        (15, "\"add_header\" ignored"),
        (16, "block ignored with everything in it"),
    ];
    assert_eq!(text.len(), expected.len(), "{text:#?}");
    for ((line, what), warning) in expected.iter().zip(&text) {
        assert!(
            warning.starts_with(&format!("/nonexistent/t.conf:{line}: ")) && warning.contains(what),
            "{warning} should be line {line}: {what}"
        );
    }
}

#[test]
fn legacy_names_are_read_and_removed_ones_warned() {
    let import = import(&conf(
        "push_stream_min_message_buffer_timeout 1m;\npush_stream_max_message_buffer_length 5;\npush_stream_broadcast_channel_prefix \"b_\";\npush_stream_content_type text/html;",
        "location /ws { push_stream_websocket; set $push_stream_channel_id $arg_id; push_stream_broadcast_channel_max_qtd 2; }\n\
         location /ev { push_stream_subscriber; push_stream_eventsource_support on; set $push_stream_channels_path $arg_id; push_stream_subscriber_connection_timeout 1m; }\n\
         location /pub { push_stream_publisher; push_stream_channels_path $arg_id; push_stream_keepalive on; }",
    ));
    let ch = &import.config.channels;
    assert_eq!(ch.message_ttl.0, Duration::from_secs(60));
    assert_eq!(ch.message_ttl.0, Duration::from_secs(60));
    assert_eq!(ch.max_messages_stored_per_channel, Some(5));
    assert_eq!(ch.wildcard_channel_prefix.as_deref(), Some("b_"));
    let locs = &import.config.locations;
    assert_eq!(locs[0].mode, SubscriberMode::WebSocket);
    assert_eq!(locs[0].channels_path(), "$arg_id");
    assert_eq!(locs[0].wildcard_channel_max_qtd, Some(2));
    assert_eq!(locs[1].mode, SubscriberMode::EventSource);
    assert_eq!(
        locs[1].subscriber_connection_ttl.unwrap().0,
        Duration::from_secs(60)
    );
    let text = import
        .warnings
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "\"push_stream_min_message_buffer_timeout\" is the old name of \"push_stream_message_ttl\"",
        "\"push_stream_content_type\" ignored: the module removed it",
        "\"push_stream_keepalive\" ignored",
        "old form of \"push_stream_subscriber websocket\"",
        "old form of \"push_stream_subscriber eventsource\"",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

#[test]
fn directive_errors_are_like_nginx_t() {
    let cases = [
        ("push_stream_bogus on;", "", "t.conf:4: unknown directive \"push_stream_bogus\""),
        ("push_stream_message_ttl;", "", "invalid number of arguments in \"push_stream_message_ttl\""),
        ("push_stream_message_ttl 500ms;", "", "whole seconds"),
        ("push_stream_message_ttl soon;", "", "invalid value \"soon\""),
        ("push_stream_shared_memory_size lots;", "", "invalid value \"lots\""),
        ("push_stream_max_number_of_channels -1;", "", "whole number"),
        ("push_stream_timeout_with_body yes;", "", "it must be \"on\" or \"off\""),
        ("", "push_stream_message_ttl 5m;", "t.conf:7: \"push_stream_message_ttl\" directive is not allowed here"),
        ("", "push_stream_publisher;", "t.conf:7: \"push_stream_publisher\" directive is not allowed here"),
        ("", "location /x { push_stream_publisher sometimes; }", "invalid push_stream_publisher mode value: sometimes"),
        ("", "location /x { push_stream_publisher; push_stream_subscriber; }", "\"push_stream_subscriber\" directive is duplicate"),
        ("", "location /x { push_stream_publisher; push_stream_channels_path $uri; }", "variable $uri is not supported"),
        ("", "location /x { push_stream_publisher; }", "push_stream_channels_path must be set for location /x"),
        ("push_stream_header_template a;\npush_stream_header_template_file /etc/hosts;", "", "t.conf:5: \"push_stream_header_template_file\" directive is duplicate: \"push_stream_header_template\" at line 4"),
        ("", "location /x { push_stream_channels_path $arg_id; push_stream_store_messages on { } }", "is not terminated by \";\""),
        ("", "location /x /y /z { }", "invalid number of arguments in \"location\""),
        ("", "location ! /x { }", "invalid location modifier \"!\""),
        ("", "client_max_body_size huge;", "invalid value \"huge\" in \"client_max_body_size\""),
        ("", "allow everyone;", "invalid parameter \"everyone\""),
    ];
    for (http, server, expected) in cases {
        let text = conf(&format!("\n{http}"), &format!("{server}\n{PUB}"));
        let err = import_err(&text);
        assert!(
            err.contains(expected),
            "{http} / {server}: {err} should contain {expected:?}"
        );
        assert!(err.starts_with("/nonexistent/t.conf:"), "{err}");
    }
}

#[test]
fn validation_errors_point_at_the_nginx_directive() {
    let err = import_err(&conf(
        "push_stream_max_number_of_wildcard_channels 2;\npush_stream_wildcard_channel_prefix w_;",
        "location /s { push_stream_subscriber; push_stream_channels_path $arg_id;\npush_stream_wildcard_channel_max_qtd 5; }",
    ));
    assert!(
        err.starts_with("/nonexistent/t.conf:8: \"push_stream_wildcard_channel_max_qtd\""),
        "{err}"
    );
    let err = import_err(&conf("push_stream_max_channel_id_length 0;", PUB));
    assert!(
        err.starts_with("/nonexistent/t.conf:3: \"push_stream_max_channel_id_length\""),
        "{err}"
    );
    let err = import_err(&conf(
        "",
        "location ~ /sub/( { push_stream_subscriber; push_stream_channels_path $1; }",
    ));
    assert!(
        err.starts_with("/nonexistent/t.conf:6: \"location ~ /sub/(\""),
        "{err}"
    );
    let err = import_err(&conf("push_stream_max_number_of_wildcard_channels 2;", PUB));
    assert!(
        err.contains("push_stream_wildcard_channel_prefix is not set"),
        "{err}"
    );
}

#[test]
fn wildcard_max_qtd_defaults_to_the_wildcard_channel_limit() {
    let import = import(&conf(
        "push_stream_max_number_of_wildcard_channels 4;\npush_stream_wildcard_channel_prefix w_;",
        "location /s { push_stream_subscriber; push_stream_channels_path $arg_id; }",
    ));
    assert_eq!(import.config.locations[0].wildcard_channel_max_qtd, Some(4));
}

#[test]
fn body_size_comes_from_the_locations_that_read_bodies() {
    let one = import(&conf(
        "client_max_body_size 2m;",
        "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 10m; }\n\
         location /sub { push_stream_subscriber; push_stream_channels_path $arg_id; }",
    ));
    assert_eq!(one.config.server.max_body_size.0, 10 << 20);
    assert!(one.warnings.is_empty(), "{:?}", one.warnings);
    let two = import(&conf(
        "client_max_body_size 2m;",
        "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 10m; }\n\
         location /pub2 { push_stream_publisher; push_stream_channels_path $arg_id; client_max_body_size 5m; }",
    ));
    assert_eq!(two.config.server.max_body_size.0, 2 << 20);
    assert_eq!(two.warnings.len(), 2, "{:?}", two.warnings);
    let unlimited = import(&conf("client_max_body_size 0;", PUB));
    assert_eq!(unlimited.config.server.max_body_size.0, i64::MAX as u64);
}

#[test]
fn client_body_timeout_becomes_body_read_timeout() {
    let none = import(&conf("", PUB));
    assert_eq!(
        none.config.server.body_read_timeout.0,
        Duration::from_secs(60)
    );
    assert!(!none.toml.contains("body_read_timeout"), "{}", none.toml);
    let set = import(&conf("client_body_timeout 15s;", PUB));
    assert_eq!(
        set.config.server.body_read_timeout.0,
        Duration::from_secs(15)
    );
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let differ = import(&conf(
        "client_body_timeout 15s;",
        "location /pub { push_stream_publisher; push_stream_channels_path $arg_id; client_body_timeout 5s; }\n\
         location /pub2 { push_stream_publisher; push_stream_channels_path $arg_id; }",
    ));
    assert_eq!(
        differ.config.server.body_read_timeout.0,
        Duration::from_secs(15)
    );
    assert!(
        differ
            .warnings
            .iter()
            .any(|w| w.message.contains("client_body_timeout differs")),
        "{:?}",
        differ.warnings
    );
    let zero = import_err(&conf("client_body_timeout 0;", PUB));
    assert!(
        zero.contains("body_read_timeout") || zero.contains("client_body_timeout"),
        "{zero}"
    );
}

#[test]
fn allow_and_deny_become_address_lists() {
    let lists = |rules: &str| {
        let import = import(&conf("", &format!("location /pub {{ push_stream_publisher; push_stream_channels_path $arg_id; {rules} }}")));
        let loc = &import.config.locations[0];
        (
            loc.allow_addresses.clone(),
            loc.deny_addresses.clone(),
            import.warnings.len(),
        )
    };
    let none: Vec<String> = Vec::new();
    assert_eq!(
        lists("allow 127.0.0.1; allow ::1; deny all;"),
        (vec!["127.0.0.1".into(), "::1".into()], none.clone(), 0)
    );
    assert_eq!(
        lists("deny 10.0.0.0/8; allow all;"),
        (none.clone(), vec!["10.0.0.0/8".into()], 0)
    );
    assert_eq!(
        lists("deny all;"),
        (none.clone(), vec!["0.0.0.0/0".into(), "::/0".into()], 0)
    );
    assert_eq!(
        lists("deny 10.1.0.0/16; allow 10.0.0.0/8; deny all;"),
        (vec!["10.0.0.0/8".into()], vec!["10.1.0.0/16".into()], 0)
    );
    // An allow before an overlapping deny cannot be expressed exactly: warned.
    assert_eq!(
        lists("allow 10.1.2.3; deny 10.0.0.0/8;"),
        (none.clone(), vec!["10.0.0.0/8".into()], 1)
    );
    assert_eq!(lists("deny all; allow 127.0.0.1;").2, 1);
    // Inherited whole from the server when the location has none.
    let import = import(&conf("", &format!("allow 127.0.0.1; deny all;\n{PUB}")));
    assert_eq!(import.config.locations[0].allow_addresses, ["127.0.0.1"]);
}

#[test]
fn only_the_first_server_with_push_stream_locations_is_served() {
    let import = import(&format!(
        "http {{\n push_stream_shared_memory_size 1m;\n server {{ listen 1; location / {{ root /x; }} }}\n server {{ listen 2; {PUB} }}\n server {{ listen 3; {PUB} }}\n}}\n"
    ));
    assert_eq!(import.config.server.listen, "0.0.0.0:2");
    let text: Vec<String> = import.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text[0].contains(":3: server block ignored: it has no push_stream location"));
    // The served block's admin publisher has no allow/deny and listens on every address.
    assert!(text[1].contains(":4: 0.0.0.0:2 is reachable from other hosts"));
    assert!(import.config.server.allow_public_admin);
    assert!(text[2].contains(":5: server block ignored: it has 1 push_stream location(s)"));
}

#[test]
fn header_template_file_is_resolved_against_the_nginx_file() {
    let dir = TempDir::new("header-file");
    dir.write("templates/header.html", "<h1>hello</h1>");
    let main = dir.write(
        "nginx.conf",
        "http { server { location /s { push_stream_subscriber; push_stream_channels_path $arg_id; push_stream_header_template_file templates/header.html; } } }\n",
    );
    let import = import_file(&main).unwrap();
    assert_eq!(import.config.locations[0].header_template, "<h1>hello</h1>");
    let missing = dir.write(
        "nginx.conf",
        "http { server { location /s { push_stream_subscriber; push_stream_channels_path $arg_id;\npush_stream_header_template_file nope.html; } } }\n",
    );
    let err = import_file(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nginx.conf:2: \"push_stream_header_template_file\""),
        "{err}"
    );
}

#[test]
fn the_migrated_toml_loads_to_the_same_config() {
    let import = import(&conf(
        "push_stream_message_template \"{\\\"t\\\":\\\"~text~\\\"}\\n\";\npush_stream_ping_message_text 'p \"q\"';",
        "location /pub { push_stream_publisher admin; push_stream_channels_path $arg_id; allow 127.0.0.1; deny all; }\n\
         location ~ /lp/(.*) { push_stream_subscriber long-polling; push_stream_channels_path $1; push_stream_longpolling_connection_ttl 1500ms; default_type application/json; }",
    ));
    let reloaded = Config::from_toml(&import.toml, "migrated.toml", None).unwrap();
    assert_eq!(format!("{:?}", reloaded), format!("{:?}", import.config));
    assert_eq!(import.config.channels.ping_message_text, "p \"q\"");
    assert_eq!(import.config.locations[0].message_template, None);
    assert_eq!(
        import.config.locations[1].message_template(),
        "{\"t\":\"~text~\"}\n"
    );
}

#[test]
fn a_file_without_http_is_read_as_its_contents() {
    let import = import(&format!(
        "push_stream_shared_memory_size 1m;\nserver {{ {PUB} }}\n"
    ));
    assert_eq!(import.config.locations.len(), 1);
    assert!(import.warnings[0].message.contains("no http block"));
}
