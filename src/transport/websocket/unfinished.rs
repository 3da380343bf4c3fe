//! Unfinished client messages. `FrameBoundaries` wraps a WebSocket's connection and follows the
//! frame boundaries in the bytes the protocol layer reads from the client (headers parsed with
//! tungstenite's own `FrameHeader`), because the protocol layer does not tell whether it holds part
//! of a message. `UnfinishedMessage` is the other end: it resolves once the client's current message
//! (a frame still arriving, or a fragmented message without its final frame) has been unfinished
//! for longer than a limit, so the loop can close a connection that would hold a partial message
//! forever.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// The longest frame header (2 bytes, a 64-bit length, a mask key).
const MAX_HEADER: usize = 14;

/// An I/O stream that follows the client's frame boundaries in what is read from it and publishes
/// since when the current message has been unfinished (`None` between messages).
#[derive(Debug)]
pub struct FrameBoundaries<T> {
    inner: T,
    follower: Follower,
    since: watch::Sender<Option<Instant>>,
}

impl<T> FrameBoundaries<T> {
    /// Wraps `inner`; the `UnfinishedMessage` tells about the messages read through it.
    pub fn new(inner: T) -> (FrameBoundaries<T>, UnfinishedMessage) {
        let (since, watch) = watch::channel(None);
        let boundaries = FrameBoundaries {
            inner,
            follower: Follower::default(),
            since,
        };
        (boundaries, UnfinishedMessage(watch))
    }

    fn follow(&mut self, bytes: &[u8]) {
        let crossed_boundary = self.follower.follow(bytes);
        let since = *self.since.borrow();
        let next = match since {
            _ if !self.follower.unfinished() => None,
            Some(started) if !crossed_boundary => Some(started),
            _ => Some(Instant::now()),
        };
        if next != since {
            self.since.send_replace(next);
        }
    }
}

/// Where the client's byte stream stands in its frames.
#[derive(Debug, Default)]
struct Follower {
    /// The start of a frame header, while it is incomplete.
    header: [u8; MAX_HEADER],
    header_len: usize,
    /// Payload bytes of the current frame not read yet.
    payload_left: u64,
    /// A data frame without FIN came, and no final continuation frame yet.
    fragmented: bool,
    /// The stream stopped making sense (the protocol layer fails the connection on it).
    lost: bool,
}

impl Follower {
    /// Whether the stream is inside a message: a frame header or payload is incomplete, or a
    /// fragmented message lacks its final frame.
    fn unfinished(&self) -> bool {
        !self.lost && (self.header_len > 0 || self.payload_left > 0 || self.fragmented)
    }

    /// Follows `bytes`, the next bytes of the stream; returns whether the stream was between
    /// messages at some point within them.
    fn follow(&mut self, mut bytes: &[u8]) -> bool {
        let mut crossed_boundary = false;
        while !bytes.is_empty() && !self.lost {
            if self.payload_left > 0 {
                let skipped = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skipped as u64;
                bytes = &bytes[skipped..];
            } else {
                let have = self.header_len;
                let taken = (MAX_HEADER - have).min(bytes.len());
                self.header[have..have + taken].copy_from_slice(&bytes[..taken]);
                let mut cursor = Cursor::new(&self.header[..have + taken]);
                match FrameHeader::parse(&mut cursor) {
                    Ok(Some((header, payload_len))) => {
                        let header_len = usize::try_from(cursor.position()).unwrap_or(MAX_HEADER);
                        bytes = &bytes[header_len.saturating_sub(have).min(bytes.len())..];
                        self.header_len = 0;
                        self.payload_left = payload_len;
                        match header.opcode {
                            OpCode::Data(Data::Continue) => {
                                self.fragmented &= !header.is_final;
                            }
                            OpCode::Data(_) => self.fragmented = !header.is_final,
                            OpCode::Control(_) => {}
                        }
                    }
                    Ok(None) => {
                        self.header_len = have + taken;
                        bytes = &[];
                    }
                    Err(_) => self.lost = true,
                }
            }
            crossed_boundary |= !self.unfinished();
        }
        crossed_boundary
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameBoundaries<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.follow(&buf.filled()[before..]);
        }
        result
    }
}

crate::forward_write::forward_async_write!(FrameBoundaries);

/// Since when the client's current message has been unfinished, as `FrameBoundaries` saw it.
#[derive(Debug)]
pub struct UnfinishedMessage(watch::Receiver<Option<Instant>>);

impl UnfinishedMessage {
    /// Resolves once one message has stayed unfinished for longer than `limit`; never, once the
    /// connection is gone.
    pub async fn outlasts(&mut self, limit: Duration) {
        loop {
            let since = *self.0.borrow_and_update();
            let changed = match since {
                Some(started) => tokio::select! {
                    _ = tokio::time::sleep_until(started + limit) => return,
                    changed = self.0.changed() => changed,
                },
                None => self.0.changed().await,
            };
            if changed.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame header (FIN and opcode in `first`) for `len` payload bytes.
    fn header(first: u8, len: usize) -> Vec<u8> {
        let header = FrameHeader {
            is_final: first & 0x80 != 0,
            opcode: OpCode::from(first & 0x0f),
            mask: Some([1, 2, 3, 4]),
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header
            .format(len as u64, &mut out)
            .expect("a header formats into a Vec");
        out
    }

    fn frame(first: u8, len: usize) -> Vec<u8> {
        let mut out = header(first, len);
        out.resize(out.len() + len, b'x');
        out
    }

    /// Feeds `bytes` one read of `chunk` bytes at a time; returns the state after each read.
    fn states(bytes: &[u8], chunk: usize) -> Vec<(bool, bool)> {
        let mut follower = Follower::default();
        bytes
            .chunks(chunk)
            .map(|piece| {
                let crossed = follower.follow(piece);
                (follower.unfinished(), crossed)
            })
            .collect()
    }

    #[test]
    fn complete_frames_end_between_messages_whatever_the_reads() {
        let stream = [
            frame(0x81, 5),
            frame(0x89, 0),
            frame(0x81, 70_000),
            frame(0x82, 200),
        ]
        .concat();
        for chunk in [1, 2, 3, 7, 14, 100, 4096, stream.len()] {
            let states = states(&stream, chunk);
            assert_eq!(
                states.last(),
                Some(&(false, true)),
                "reads of {chunk} bytes"
            );
        }
    }

    #[test]
    fn a_partial_frame_or_an_unfinished_fragmented_message_is_unfinished() {
        let half = &frame(0x81, 1000)[..500];
        assert_eq!(states(half, 4096), vec![(true, false)]);
        let only_header = &header(0x81, 1000)[..5];
        assert_eq!(states(only_header, 4096), vec![(true, false)]);
        // A first fragment, then control frames: the message is still unfinished.
        let fragment = [frame(0x01, 100), frame(0x89, 4), frame(0x8a, 4)].concat();
        assert_eq!(states(&fragment, 4096), vec![(true, false)]);
        // Its final continuation ends it.
        let finished = [fragment, frame(0x00, 10), frame(0x80, 10)].concat();
        assert_eq!(states(&finished, 4096), vec![(false, true)]);
    }

    #[test]
    fn a_new_message_after_a_finished_one_is_seen_as_crossing_a_boundary() {
        let stream = [frame(0x81, 10), frame(0x01, 10)].concat();
        assert_eq!(states(&stream, 4096), vec![(true, true)]);
    }

    #[test]
    fn an_invalid_header_stops_the_following() {
        // Reserved opcode 3 with FIN: tungstenite's parser refuses it; the protocol layer fails
        // the connection, and the follower no longer claims an unfinished message.
        let mut follower = Follower::default();
        follower.follow(&[0x83, 0x80, 1, 2, 3, 4]);
        assert!(!follower.unfinished());
        follower.follow(&frame(0x01, 10)[..4]);
        assert!(
            !follower.unfinished(),
            "nothing is followed after the invalid header"
        );
    }
}
