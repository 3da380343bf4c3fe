//! Message bodies and the byte scanner that finds them again.
//!
//! Every published body starts with a marker `@@L<seq>.<channel>.<send_ns>.` and is padded with `x`
//! to the requested size. The marker survives every framing the servers use (SSE `data:` lines,
//! raw streaming, WebSocket text frames, long-polling bodies, JSON templates: it has no quote, no
//! backslash and no line break), so a subscriber never parses the framing itself: it feeds the
//! payload bytes to [`Scanner`], which reports each marker it sees, even when the marker is split
//! across reads.

/// Longest sequence number a subscriber tracks; larger values are counted as invalid.
pub const MAX_SEQ: u64 = 50_000_000;

/// One message found in a subscriber's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Sequence number of the message within its channel (0-based).
    pub seq: u64,
    /// Index of the channel it was published to.
    pub channel: u64,
    /// Send time, nanoseconds since the Unix epoch (CLOCK_REALTIME, shared by all processes).
    pub send_ns: u64,
}

/// Writes the body of message `seq` of `channel`, sent at `send_ns`, padded to `size` bytes (or
/// longer when the marker alone is longer), into `out` (cleared first).
pub fn encode(out: &mut Vec<u8>, seq: u64, channel: u64, send_ns: u64, size: usize) {
    use std::io::Write;
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(out, "@@L{seq}.{channel}.{send_ns}.");
    if out.len() < size {
        out.resize(size, b'x');
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first `@`.
    Idle,
    /// Saw one `@`.
    At1,
    /// Saw `@@`.
    At2,
    /// Reading decimal field `field` (0 = seq, 1 = channel, 2 = send time).
    Field { field: u8, digits: u8 },
}

/// Incremental scanner for [`Marker`]s; keeps its state between calls, so markers split across
/// reads are found.
#[derive(Debug, Clone)]
pub struct Scanner {
    state: State,
    values: [u64; 3],
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Idle,
            values: [0; 3],
        }
    }
}

impl Scanner {
    /// Scans `input`, calling `found` for each complete marker.
    pub fn feed(&mut self, input: &[u8], mut found: impl FnMut(Marker)) {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Idle {
                // Skip the padding and framing quickly.
                match memchr::memchr(b'@', &input[i..]) {
                    Some(offset) => {
                        i += offset + 1;
                        self.state = State::At1;
                        continue;
                    }
                    None => return,
                }
            }
            let byte = input[i];
            i += 1;
            self.state = match self.state {
                State::Idle => State::Idle,
                State::At1 => {
                    if byte == b'@' {
                        State::At2
                    } else {
                        State::Idle
                    }
                }
                State::At2 => match byte {
                    b'L' => {
                        self.values = [0; 3];
                        State::Field {
                            field: 0,
                            digits: 0,
                        }
                    }
                    b'@' => State::At2,
                    _ => State::Idle,
                },
                State::Field { field, digits } => match byte {
                    b'0'..=b'9' if digits < 20 => {
                        let slot = &mut self.values[usize::from(field)];
                        *slot = slot
                            .saturating_mul(10)
                            .saturating_add(u64::from(byte - b'0'));
                        State::Field {
                            field,
                            digits: digits + 1,
                        }
                    }
                    b'.' if digits > 0 => {
                        if field == 2 {
                            found(Marker {
                                seq: self.values[0],
                                channel: self.values[1],
                                send_ns: self.values[2],
                            });
                            State::Idle
                        } else {
                            State::Field {
                                field: field + 1,
                                digits: 0,
                            }
                        }
                    }
                    b'@' => State::At1,
                    _ => State::Idle,
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(parts: &[&[u8]]) -> Vec<Marker> {
        let mut scanner = Scanner::default();
        let mut out = Vec::new();
        for part in parts {
            scanner.feed(part, |m| out.push(m));
        }
        out
    }

    #[test]
    fn encodes_and_pads() {
        let mut body = Vec::new();
        encode(&mut body, 7, 3, 123_456, 40);
        assert_eq!(body.len(), 40);
        assert!(body.starts_with(b"@@L7.3.123456."));
        encode(&mut body, 7, 3, 123_456, 4);
        assert_eq!(&body[..], b"@@L7.3.123456.");
    }

    #[test]
    fn finds_markers_in_framings() {
        let mut body = Vec::new();
        encode(&mut body, 12, 0, 99, 32);
        let mut sse = b"HTTP/1.1 200 OK\r\n\r\n: hi\n\ndata: ".to_vec();
        sse.extend_from_slice(&body);
        sse.extend_from_slice(b"\n\n: -1\n\nid: 5\ndata: ");
        encode(&mut body, 13, 0, 100, 32);
        sse.extend_from_slice(&body);
        sse.extend_from_slice(b"\n\n");
        let found = scan_all(&[&sse]);
        assert_eq!(found.len(), 2);
        assert_eq!(
            found[0],
            Marker {
                seq: 12,
                channel: 0,
                send_ns: 99
            }
        );
        assert_eq!(found[1].seq, 13);
    }

    #[test]
    fn finds_markers_split_at_every_byte() {
        let mut body = Vec::new();
        encode(&mut body, 4_000_001, 17, 1_700_000_000_123_456_789, 64);
        let mut stream = b"x@@@x@".to_vec();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"\n@@L1.2\n");
        for split in 0..stream.len() {
            let found = scan_all(&[&stream[..split], &stream[split..]]);
            assert_eq!(found.len(), 1, "split at {split}");
            assert_eq!(found[0].seq, 4_000_001);
            assert_eq!(found[0].channel, 17);
            assert_eq!(found[0].send_ns, 1_700_000_000_123_456_789);
        }
    }

    #[test]
    fn ignores_garbage() {
        assert!(scan_all(&[b"@@L.1.2.", b"@@Lx", b"@@L1..", b"@L1.2.3."]).is_empty());
    }
}
