//! The wire form of a message in Redis: how a publish's headers and text travel to the Lua script,
//! how the script stores them in a channel's log, and what it announces on the channel's pub/sub
//! name. Numbers are ASCII decimals separated by single spaces; the headers and text follow as raw
//! bytes whose lengths the header gives, so any text (binary included) passes unchanged.
//!
//! Stored record:  `{id} {time} {tag} {expires_ms} {store} {event_id_len} {event_type_len} {event_id}{event_type}{text}`
//! Announcement:   `m{epoch} {stored record}` (a message), `d{text}` (channel deleted), `x` (channel collected)

use bytes::Bytes;

/// One message as Redis holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: u64,
    pub time: u64,
    pub tag: u64,
    /// Wall-clock expiry of the stored copy, milliseconds since the Unix epoch.
    pub expires_ms: u64,
    pub store: bool,
    pub event_id: Option<Box<str>>,
    pub event_type: Option<Box<str>>,
    pub text: Bytes,
}

/// What a node hears on a channel's pub/sub name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announcement {
    /// A message of the channel's incarnation `epoch`.
    Message { epoch: u64, record: Record },
    /// The channel was deleted; subscribers get this text.
    Deleted(Bytes),
    /// The channel was removed for inactivity.
    Collected,
}

/// The part of a record the publisher sends (the script puts id, time, tag and expiry before it).
pub fn tail(store: bool, event_id: Option<&str>, event_type: Option<&str>, text: &[u8]) -> Vec<u8> {
    let event_id = event_id.unwrap_or("");
    let event_type = event_type.unwrap_or("");
    let head = format!(
        "{} {} {} ",
        u8::from(store),
        event_id.len(),
        event_type.len()
    );
    let mut out = Vec::with_capacity(head.len() + event_id.len() + event_type.len() + text.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(event_id.as_bytes());
    out.extend_from_slice(event_type.as_bytes());
    out.extend_from_slice(text);
    out
}

/// Why a record could not be read (a key written by something else, or a different version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Herald record in Redis: {0}")]
pub struct RecordError(&'static str);

/// Splits off one space-terminated decimal number.
fn number(input: &[u8]) -> Result<(u64, &[u8]), RecordError> {
    let end = input
        .iter()
        .position(|b| *b == b' ')
        .ok_or(RecordError("missing field"))?;
    let digits = std::str::from_utf8(&input[..end]).map_err(|_| RecordError("not a number"))?;
    let value = digits
        .parse::<u64>()
        .map_err(|_| RecordError("not a number"))?;
    Ok((value, &input[end + 1..]))
}

fn header(bytes: &[u8]) -> Result<Option<Box<str>>, RecordError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .map(|s| Some(s.into()))
        .map_err(|_| RecordError("header is not UTF-8"))
}

/// Reads a stored record.
pub fn parse_record(input: &Bytes) -> Result<Record, RecordError> {
    let rest = &input[..];
    let (id, rest) = number(rest)?;
    let (time, rest) = number(rest)?;
    let (tag, rest) = number(rest)?;
    let (expires_ms, rest) = number(rest)?;
    let (store, rest) = number(rest)?;
    let (event_id_len, rest) = number(rest)?;
    let (event_type_len, rest) = number(rest)?;
    let (event_id_len, event_type_len) = (event_id_len as usize, event_type_len as usize);
    if event_id_len
        .checked_add(event_type_len)
        .is_none_or(|headers| headers > rest.len())
    {
        return Err(RecordError("headers longer than the record"));
    }
    let offset = input.len() - rest.len();
    Ok(Record {
        id,
        time,
        tag,
        expires_ms,
        store: store == 1,
        event_id: header(&rest[..event_id_len])?,
        event_type: header(&rest[event_id_len..event_id_len + event_type_len])?,
        text: input.slice(offset + event_id_len + event_type_len..),
    })
}

/// Reads an announcement.
pub fn parse_announcement(input: Bytes) -> Result<Announcement, RecordError> {
    match input.first() {
        Some(b'm') => {
            let (epoch, rest) = number(&input[1..])?;
            let offset = input.len() - rest.len();
            Ok(Announcement::Message {
                epoch,
                record: parse_record(&input.slice(offset..))?,
            })
        }
        Some(b'd') => Ok(Announcement::Deleted(input.slice(1..))),
        Some(b'x') => Ok(Announcement::Collected),
        _ => Err(RecordError("unknown announcement")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(tail: &[u8]) -> Bytes {
        let mut record = b"7 1700000000 42 1700000060000 ".to_vec();
        record.extend_from_slice(tail);
        Bytes::from(record)
    }

    #[test]
    fn record_round_trips_headers_and_binary_text() {
        let text = b"caf\xc3\xa9 \x00\xff binary";
        let record = parse_record(&stored(&tail(true, Some("e1"), Some("news"), text)))
            .expect("record parses");
        assert_eq!(record.id, 7);
        assert_eq!(record.time, 1_700_000_000);
        assert_eq!(record.tag, 42);
        assert_eq!(record.expires_ms, 1_700_000_060_000);
        assert!(record.store);
        assert_eq!(record.event_id.as_deref(), Some("e1"));
        assert_eq!(record.event_type.as_deref(), Some("news"));
        assert_eq!(&record.text[..], text);
    }

    #[test]
    fn record_without_headers_or_text() {
        let record = parse_record(&stored(&tail(false, None, None, b""))).expect("parses");
        assert!(!record.store);
        assert_eq!(record.event_id, None);
        assert_eq!(record.event_type, None);
        assert!(record.text.is_empty());
    }

    #[test]
    fn announcements() {
        let mut message = b"m1699999999000 ".to_vec();
        message.extend_from_slice(&stored(&tail(true, None, None, b"hi")));
        match parse_announcement(Bytes::from(message)).expect("parses") {
            Announcement::Message { epoch, record } => {
                assert_eq!(epoch, 1_699_999_999_000);
                assert_eq!(&record.text[..], b"hi");
            }
            other => panic!("expected a message, got {other:?}"),
        }
        assert_eq!(
            parse_announcement(Bytes::from_static(b"dgone")).expect("parses"),
            Announcement::Deleted(Bytes::from_static(b"gone"))
        );
        assert_eq!(
            parse_announcement(Bytes::from_static(b"x")).expect("parses"),
            Announcement::Collected
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        for bad in [
            &b""[..],
            b"m",
            b"1 2 3",
            b"1 2 3 4 1 9 0 short",
            b"q",
            b"a b c d e f g ",
        ] {
            let bytes = Bytes::copy_from_slice(bad);
            assert!(
                parse_record(&bytes).is_err() || parse_announcement(bytes.clone()).is_err(),
                "{bad:?}"
            );
        }
        assert!(parse_record(&Bytes::from_static(b"1 2 3 4 1 9 0 short")).is_err());
        // Lengths that overflow when added are refused, not a panic.
        assert!(parse_record(&Bytes::from_static(b"1 2 3 4 1 1 18446744073709551615 x")).is_err());
    }
}
