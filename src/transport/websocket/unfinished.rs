//! Unfinished client messages. `FrameBoundaries` wraps a WebSocket's connection and follows the
//! frame boundaries in the bytes the protocol layer reads from the client (headers parsed with
//! tungstenite's own `FrameHeader`), because the protocol layer does not tell whether it holds part
//! of a message. The data bytes of the message in progress are held in the server's `ByteBudget`
//! (with the request bodies being read) while it is unfinished. `UnfinishedMessage` is the other
//! end: it resolves once the client's current message (a frame still arriving, or a fragmented
//! message without its final frame) has been unfinished for longer than a limit, or could not get
//! its bytes from the budget, so the loop can close a connection that would hold a partial message.

use crate::budget::Reservation;
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

/// Messages up to this size are not counted in the server's budget (like small request bodies).
const SMALL_MESSAGE: u64 = 16 << 10;

/// An I/O stream that follows the client's frame boundaries in what is read from it and publishes
/// since when the current message has been unfinished (`None` between messages).
#[derive(Debug)]
pub struct FrameBoundaries<T> {
    inner: T,
    follower: Follower,
    since: watch::Sender<State>,
    /// The unfinished message's share of the server's budget, and the budget's limit.
    budget: Option<(Reservation, u64)>,
}

/// What `UnfinishedMessage` watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct State {
    /// Since when the current message has been unfinished (`None` between messages).
    since: Option<Instant>,
    /// The budget refused the current message's bytes.
    over_budget: bool,
}

impl<T> FrameBoundaries<T> {
    /// Wraps `inner`; the `UnfinishedMessage` tells about the messages read through it. With a
    /// `budget` (a share of the server's `ByteBudget` and its limit), an unfinished message holds
    /// its data bytes in it.
    pub fn new(
        inner: T,
        budget: Option<(Reservation, u64)>,
    ) -> (FrameBoundaries<T>, UnfinishedMessage) {
        let (since, watch) = watch::channel(State::default());
        let boundaries = FrameBoundaries {
            inner,
            follower: Follower::default(),
            since,
            budget,
        };
        (boundaries, UnfinishedMessage(watch))
    }

    fn follow(&mut self, bytes: &[u8]) {
        let crossed_boundary = self.follower.follow(bytes);
        let state = *self.since.borrow();
        let unfinished = self.follower.unfinished();
        let since = match state.since {
            _ if !unfinished => None,
            Some(started) if !crossed_boundary => Some(started),
            _ => Some(Instant::now()),
        };
        let mut over_budget = state.over_budget;
        if let Some((reservation, limit)) = &mut self.budget {
            let held = if unfinished {
                self.follower.message_bytes
            } else {
                0
            };
            // Small messages cost no more than the connection's read buffer (as small bodies).
            if held <= SMALL_MESSAGE {
                reservation.release();
            } else if !reservation.grow_to(held, *limit) {
                over_budget = true;
            }
        }
        let next = State { since, over_budget };
        if next != state {
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
    /// The current frame is a data frame (its payload is part of a message).
    in_data_frame: bool,
    /// Data bytes of the message in progress: the declared lengths of its frames so far (the
    /// protocol layer reserves a frame's whole length when its header arrives).
    message_bytes: u64,
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
                                self.in_data_frame = true;
                                self.message_bytes = self.message_bytes.saturating_add(payload_len);
                            }
                            OpCode::Data(_) => {
                                self.fragmented = !header.is_final;
                                self.in_data_frame = true;
                                self.message_bytes = payload_len;
                            }
                            OpCode::Control(_) => self.in_data_frame = false,
                        }
                    }
                    Ok(None) => {
                        self.header_len = have + taken;
                        bytes = &[];
                    }
                    Err(_) => self.lost = true,
                }
            }
            if !self.unfinished() {
                crossed_boundary = true;
                self.message_bytes = 0;
            }
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
        // Over the budget: read nothing more (the loop closes the connection with 1013).
        if this.since.borrow().over_budget {
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.follow(&buf.filled()[before..]);
        }
        result
    }
}

crate::forward_write::forward_async_write!(FrameBoundaries);

/// The client's current message as `FrameBoundaries` saw it: since when it has been unfinished,
/// and whether the budget refused its bytes.
#[derive(Debug)]
pub struct UnfinishedMessage(watch::Receiver<State>);

/// Why an unfinished message ends the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stalled {
    /// Unfinished for longer than the limit.
    TooLong,
    /// The server's budget for buffered request bytes could not hold it.
    OverBudget,
}

impl UnfinishedMessage {
    /// Resolves once one message has stayed unfinished for longer than `limit`, or its bytes did
    /// not fit in the server's budget; never, once the connection is gone.
    pub async fn stalls(&mut self, limit: Duration) -> Stalled {
        loop {
            let state = *self.0.borrow_and_update();
            if state.over_budget {
                return Stalled::OverBudget;
            }
            let changed = match state.since {
                Some(started) => tokio::select! {
                    _ = tokio::time::sleep_until(started + limit) => return Stalled::TooLong,
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
    fn the_declared_data_bytes_of_the_message_in_progress_are_counted_until_it_ends() {
        let mut follower = Follower::default();
        // A frame's whole declared length counts from its header on.
        follower.follow(&frame(0x01, 100)[..8]);
        assert_eq!(follower.message_bytes, 100);
        follower.follow(&frame(0x01, 100)[8..]);
        assert_eq!(follower.message_bytes, 100);
        // Control frames in between are not part of it.
        follower.follow(&frame(0x89, 4));
        assert_eq!(follower.message_bytes, 100);
        follower.follow(&frame(0x00, 50)[..20]);
        assert!(follower.unfinished());
        assert_eq!(follower.message_bytes, 150);
        follower.follow(&frame(0x00, 50)[20..]);
        assert_eq!(follower.message_bytes, 150);
        follower.follow(&frame(0x80, 10));
        assert!(!follower.unfinished());
        assert_eq!(
            follower.message_bytes, 0,
            "a finished message holds nothing"
        );
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
