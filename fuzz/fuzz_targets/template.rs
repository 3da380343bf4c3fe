//! The template engine: `Template::compile` on fuzzed sources and `render` on fuzzed messages
//! (`Message::synthetic` with fuzzed channel, Event-Id, Event-Type, numbers and text), plus the framers
//! built on it (plain template framing and EventSource). Checks the engine's promises: text without
//! `~` is literal, `~text~` is the text as published, tokens inside a message are never expanded, and
//! the `-json` forms are valid JSON string contents.
//!
//! Input: newline-separated `template \n channel \n event-id \n event-type \n "id time tag" \n text…`
//! (the text is the rest of the input, raw bytes, newlines included).

#![no_main]

use bytes::{Bytes, BytesMut};
use herald::broker::{ChannelId, Message};
use herald::transport::eventsource::EventSourceFramer;
use herald::transport::template::{Template, TemplateFramer};
use herald::transport::Framer;
use libfuzzer_sys::fuzz_target;

/// httpdate formats years up to 9999; publish times come from the clock, never from input.
const LAST_FORMATTABLE_SECOND: u64 = 253_402_300_799;

fn render(template: &Template, message: &Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    template.render(message, &mut out);
    out.to_vec()
}

fn json_inside(template: &str, message: &Message) -> String {
    let quoted = render(&Template::compile(&format!("\"{template}\"")), message);
    serde_json::from_slice::<String>(&quoted).unwrap_or_else(|e| {
        panic!(
            "{template} is not a JSON string's inside ({e}): {:?}",
            String::from_utf8_lossy(&quoted)
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(6, |b| *b == b'\n');
    let mut next = || parts.next().unwrap_or(&[]);
    let source = String::from_utf8_lossy(next()).into_owned();
    let channel = String::from_utf8_lossy(next()).into_owned();
    let event_id = String::from_utf8_lossy(next()).into_owned();
    let event_type = String::from_utf8_lossy(next()).into_owned();
    let numbers = String::from_utf8_lossy(next()).into_owned();
    let text = Bytes::copy_from_slice(next());
    let mut numbers = numbers.split_whitespace();
    let id: i64 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(1);
    let time: u64 = numbers
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
        .min(LAST_FORMATTABLE_SECOND);
    let tag: u64 = numbers.next().and_then(|n| n.parse().ok()).unwrap_or(1);

    let mut message = Message::synthetic(
        ChannelId::new_unchecked(&channel),
        id,
        time,
        tag,
        text.clone(),
    );
    message.event_id = (!event_id.is_empty()).then(|| event_id.clone().into_boxed_str());
    message.event_type = (!event_type.is_empty()).then(|| event_type.clone().into_boxed_str());

    let template = Template::compile(&source);
    let rendered = render(&template, &message);
    if !source.contains('~') {
        assert_eq!(
            rendered,
            source.as_bytes(),
            "text without ~ must stay literal"
        );
    }
    assert_eq!(
        render(&Template::compile("~text~"), &message),
        text.to_vec()
    );
    assert_eq!(
        render(&Template::compile("<~size~>"), &message),
        format!("<{}>", text.len()).into_bytes()
    );
    // The source is compiled once: the message's own text is never scanned for tokens.
    assert_eq!(
        render(&Template::compile("[~text~]"), &message),
        [b"[".as_slice(), &text, b"]"].concat()
    );
    assert_eq!(
        json_inside("~text-json~", &message),
        String::from_utf8_lossy(&text)
    );
    assert_eq!(json_inside("~channel-json~", &message), channel);
    assert_eq!(json_inside("~event-id-json~", &message), event_id);
    assert_eq!(json_inside("~event-type-json~", &message), event_type);

    // The framers of every mode, with the fuzzed source as message, header and footer template.
    let plain = TemplateFramer::new(&source, &source, &source, &event_id, "text/plain");
    let _ = (
        plain.header(),
        plain.message(&message),
        plain.ping(),
        plain.footer(),
    );
    let sse = EventSourceFramer::new(&source, &source, &source);
    let framed = sse.message(&message);
    assert!(
        framed.ends_with(b"\n\n"),
        "an SSE event ends with a blank line"
    );
    // No input can add a field or end the event early (SSE injection).
    assert!(!framed.contains(&b'\r'), "CR in an SSE event: {framed:?}");
    for line in framed[..framed.len() - 2].split(|b| *b == b'\n') {
        assert!(
            line.starts_with(b"data: ")
                || line.starts_with(b"id: ")
                || line.starts_with(b"event: "),
            "unexpected SSE line {line:?} in {framed:?}"
        );
    }
    let _ = (sse.header(), sse.ping(), sse.footer());
});
