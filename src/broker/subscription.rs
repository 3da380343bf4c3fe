//! A subscription: one connection's cursors into 1..n channels. It yields the backtracked messages
//! first, then waits for and reads new messages, channel deletions and lag. Dropping it detaches the
//! subscriber from every channel, so a connection that ends for any reason frees its slots at once.

use super::channel::{Attached, Channel, ReadStatus};
use super::{Broker, ChannelId, Message};
use futures_util::future::select_all;
use std::sync::Arc;
use tokio::sync::watch;

/// Where a subscriber starts in one channel: which stored messages it receives before new ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Only messages published from now on.
    Live,
    /// The newest N stored messages first (`.bN`).
    Backtrack(u64),
    /// Stored messages newer than (time, tag) (`If-Modified-Since` + `If-None-Match`); without a tag,
    /// messages of that second are skipped too.
    After {
        /// Seconds since the Unix epoch.
        time: u64,
        /// Tag within that second.
        tag: Option<u64>,
    },
    /// Stored messages after the first one whose Event-Id equals this (`Last-Event-ID`); none when no
    /// stored message has it.
    AfterEventId(String),
}

/// Whether the recovery point a subscriber named could be honoured (reported to clients in the
/// `X-Herald-Recovery` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Recovery {
    /// No recovery point was given (live or `.bN`).
    NotAsked,
    /// Every stored message after the point was found and is delivered.
    Complete,
    /// The point is older than the stored window: what is stored is delivered, older ones are gone.
    Truncated,
    /// No stored message has the `Last-Event-ID` given; nothing old is delivered.
    UnknownEventId,
}

impl Recovery {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            Recovery::NotAsked => "none",
            Recovery::Complete => "complete",
            Recovery::Truncated => "truncated",
            Recovery::UnknownEventId => "unknown-event-id",
        }
    }
}

/// Limits and permissions of the location a subscriber comes through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubscribePolicy {
    /// Only channels that exist and hold a stored message may be joined (wildcards exempt, but they
    /// need a normal channel beside them).
    pub authorized_channels_only: bool,
    /// The events channel may be joined.
    pub allow_events_channel: bool,
    /// Most wildcard channels in one request; when set, a request of wildcard channels only is refused.
    pub wildcard_channel_max_qtd: Option<u64>,
}

/// One channel of a subscribe request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeTo {
    /// The channel.
    pub channel: ChannelId,
    /// Where to start.
    pub start: StartAt,
}

/// Something a subscriber must be told.
#[derive(Debug, Clone)]
pub enum Event {
    /// A published message.
    Message(Arc<Message>),
    /// A channel of the subscription was deleted; this is the channel-deleted message. The
    /// subscription no longer follows that channel.
    ChannelDeleted(Arc<Message>),
    /// The shared engine lost the channel's history (Redis restarted without its data): what follows
    /// is the channel's new history, its ids starting again at 1; messages published before may be
    /// missing. The subscription goes on.
    HistoryLost {
        /// The channel.
        channel: ChannelId,
    },
    /// The subscriber fell so far behind that `missed` messages of `channel` are no longer in the
    /// recent window: a slow consumer. Transports end the connection.
    Lagged {
        /// The channel it lagged on.
        channel: ChannelId,
        /// How many messages it missed.
        missed: u64,
    },
}

struct Cursor {
    channel: Arc<Channel>,
    last_read: u64,
    restarts: u64,
    wake: watch::Receiver<()>,
}

/// One subscriber's position in each of its channels.
pub struct Subscription {
    broker: Broker,
    cursors: Vec<Cursor>,
    backlog: Vec<Arc<Message>>,
    read_buf: Vec<Arc<Message>>,
    recovery: Recovery,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let channels: Vec<&ChannelId> = self.cursors.iter().map(|c| &c.channel.id).collect();
        f.debug_struct("Subscription")
            .field("channels", &channels)
            .finish()
    }
}

impl Subscription {
    pub(crate) fn new(broker: Broker) -> Subscription {
        broker.connection_opened();
        Subscription {
            broker,
            cursors: Vec::new(),
            backlog: Vec::new(),
            read_buf: Vec::new(),
            recovery: Recovery::NotAsked,
        }
    }

    pub(crate) fn push(&mut self, channel: Arc<Channel>, attached: Attached) {
        self.backlog.extend(attached.backlog);
        self.recovery = self.recovery.max(attached.recovery);
        self.cursors.push(Cursor {
            channel,
            last_read: attached.cursor,
            restarts: attached.restarts,
            wake: attached.wake,
        });
    }

    /// The backtracked stored messages, channel by channel in request order (taken once).
    pub fn take_backlog(&mut self) -> Vec<Arc<Message>> {
        std::mem::take(&mut self.backlog)
    }

    /// How well the recovery point was honoured, worst channel first.
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    /// True when no channel is left (all were deleted).
    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }

    /// The channels followed now.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelId> {
        self.cursors.iter().map(|c| &c.channel.id)
    }

    /// Waits until there is something to deliver and appends it to `out`: every new message of every
    /// channel, channel deletions and lag. Returns at once when the subscription is empty.
    pub async fn next_events(&mut self, out: &mut Vec<Event>) {
        loop {
            self.poll_events(out);
            if !out.is_empty() || self.cursors.is_empty() {
                return;
            }
            self.changed().await;
        }
    }

    /// Appends to `out` whatever is new now, without waiting.
    pub fn poll_events(&mut self, out: &mut Vec<Event>) {
        self.poll_cursors(out);
    }

    /// Waits until a channel of the subscription changed since the last `poll_events` (returns at
    /// once for an empty subscription).
    pub async fn changed(&mut self) {
        match self.cursors.as_mut_slice() {
            [] => {}
            // The sender lives in the channel we hold, so `changed` cannot fail.
            [only] => {
                let _ = only.wake.changed().await;
            }
            many => {
                let waits = many.iter_mut().map(|c| Box::pin(c.wake.changed()));
                let _ = select_all(waits).await;
            }
        }
    }

    fn poll_cursors(&mut self, out: &mut Vec<Event>) {
        let mut index = 0;
        while index < self.cursors.len() {
            let cursor = &mut self.cursors[index];
            cursor.wake.mark_unchanged();
            self.read_buf.clear();
            match cursor.channel.read_after(
                &mut cursor.last_read,
                &mut cursor.restarts,
                &mut self.read_buf,
            ) {
                ReadStatus::Ok => {
                    out.extend(self.read_buf.drain(..).map(Event::Message));
                    index += 1;
                }
                ReadStatus::Restarted { before } => {
                    let mut read = self.read_buf.drain(..);
                    out.extend(read.by_ref().take(before).map(Event::Message));
                    out.push(Event::HistoryLost {
                        channel: cursor.channel.id.clone(),
                    });
                    out.extend(read.map(Event::Message));
                    index += 1;
                }
                ReadStatus::Lagged { missed } => {
                    out.push(Event::Lagged {
                        channel: cursor.channel.id.clone(),
                        missed,
                    });
                    self.broker.count_lagged();
                    // Skip ahead so the event is reported once; transports end the connection.
                    cursor.last_read += missed;
                    index += 1;
                }
                ReadStatus::Deleted(message) => {
                    out.push(Event::ChannelDeleted(message));
                    let cursor = self.cursors.remove(index);
                    self.broker.detached(&cursor.channel);
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for cursor in self.cursors.drain(..) {
            self.broker.detached(&cursor.channel);
        }
        self.broker.connection_closed();
    }
}
