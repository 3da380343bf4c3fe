//! The Lua scripts Herald runs in Redis (`*.lua`, each with `prelude.lua` before it): one typed call
//! per script (its keys and arguments in the order the script's header lists them) and one typed
//! reply, read from Redis' answer by a pure function (unit-tested below without Redis). Callers never
//! index a reply by position. Knows nothing of connections' state, timeouts or follows.

use super::conn::RedisConn;
use super::keys::{location_key, Keys};
use super::record::{self, Record};
use bytes::Bytes;
use redis::{Script, ScriptInvocation, Value};

/// Every script, compiled once (redis-rs sends each by its SHA1 and loads it when Redis lacks it).
pub(super) struct Scripts {
    publish: Script,
    sync: Script,
    create: Script,
    delete: Script,
    expire: Script,
    collect: Script,
    touch: Script,
    info: Script,
    node: Script,
}

/// A script with the shared Lua functions (`prelude.lua`) before it.
fn script(body: &str) -> Script {
    Script::new(&format!("{}{body}", include_str!("prelude.lua")))
}

/// Why a script call failed: Redis (or the connection) refused or failed it, or it ran and answered
/// something Herald cannot read.
#[derive(Debug)]
pub(super) enum ScriptError {
    Redis(redis::RedisError),
    /// What could not be read.
    Malformed(&'static str),
}

impl From<redis::RedisError> for ScriptError {
    fn from(err: redis::RedisError) -> ScriptError {
        ScriptError::Redis(err)
    }
}

/// Reads a reply, or names what could not be read.
type Read<T> = Result<T, &'static str>;

async fn run<T>(
    invocation: ScriptInvocation<'_>,
    conn: &mut RedisConn,
    read: fn(&Value) -> Read<T>,
) -> Result<T, ScriptError> {
    let reply: Value = invocation.invoke_async(conn).await?;
    read(&reply).map_err(ScriptError::Malformed)
}

// ---- publish.lua ----

/// One publish to one channel.
pub(super) struct PublishCall<'a> {
    pub(super) id: &'a str,
    /// `record::tail` of the message.
    pub(super) tail: &'a [u8],
    pub(super) store: bool,
    /// 0: no limit.
    pub(super) max_stored: u64,
    pub(super) message_ttl_ms: u64,
    pub(super) inactivity_ms: u64,
    /// -1: no limit.
    pub(super) allowance: i64,
    /// Counted in the published totals (a client's publish, not an events-channel message).
    pub(super) counted: bool,
    pub(super) announce_command: &'static str,
    /// "" for none.
    pub(super) idempotency_key: &'a str,
    pub(super) keys_remembered: usize,
}

/// What publish.lua did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PublishReply {
    /// The channel limit refused to create the channel: nothing changed.
    Refused,
    Done(PublishDone),
}

/// A publish that went in (or was a replay of one that had).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct PublishDone {
    /// The message's id (for a replay: the channel's last id).
    pub(super) id: u64,
    /// The publish created the channel.
    pub(super) created: bool,
    /// Stored messages of the channel now.
    pub(super) stored: u64,
    pub(super) subscribers: SubscriberCounts,
    /// The channel had taken a publish with this idempotency key: nothing changed.
    pub(super) replayed: bool,
    /// The channel's incarnation (absent from replies of older script versions).
    pub(super) epoch: Option<u64>,
}

impl PublishReply {
    fn read(value: &Value) -> Read<PublishReply> {
        let items = array(value);
        let id = items.first().and_then(int).ok_or("publish")?;
        if id < 0 {
            return Ok(PublishReply::Refused);
        }
        Ok(PublishReply::Done(PublishDone {
            id: id as u64,
            created: items.get(3).and_then(int) == Some(1),
            stored: count(items.get(4)),
            subscribers: SubscriberCounts::read(items.get(5)),
            replayed: items.get(6).and_then(int) == Some(1),
            epoch: items.get(7).and_then(int).map(|e| e.max(0) as u64),
        }))
    }
}

// ---- sync.lua ----

/// What a node that starts or goes on following a channel asks for.
pub(super) struct SyncCall<'a> {
    pub(super) id: &'a str,
    /// Create the channel when it does not exist.
    pub(super) create: bool,
    /// -1: no limit.
    pub(super) allowance: i64,
    pub(super) inactivity_ms: u64,
    /// The incarnation and last id this node has (`None` for a channel it did not follow yet).
    pub(super) known: Option<(u64, u64)>,
}

/// What sync.lua found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SyncReply {
    /// The channel limit refused to create it.
    Refused,
    /// The channel does not exist (and was not to be created).
    Missing,
    /// The incarnation this node followed was deleted (while it was cut off); the text of the
    /// channel-deleted message.
    Deleted(Bytes),
    Found(SyncFound),
}

/// A channel as sync.lua read it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SyncFound {
    /// This call created it.
    pub(super) created: bool,
    /// Its incarnation.
    pub(super) epoch: u64,
    /// Its last message id.
    pub(super) last_id: u64,
    /// (time, tag) of the newest stored message dropped so far.
    pub(super) dropped: Option<(u64, u64)>,
    /// Stored messages now.
    pub(super) stored: u64,
    /// The stored messages after the known id (all of them for another incarnation).
    pub(super) records: Vec<Record>,
    pub(super) subscribers: SubscriberCounts,
    /// History of the channel was lost before this incarnation (Redis forgot an earlier one).
    pub(super) lost: bool,
}

impl SyncReply {
    fn read(value: &Value) -> Read<SyncReply> {
        let items = array(value);
        let field = |i: usize| items.get(i).and_then(int);
        match field(0) {
            Some(-1) => return Ok(SyncReply::Refused),
            Some(0) => return Ok(SyncReply::Missing),
            Some(2) => {
                let text = items.get(1).and_then(bytes).ok_or("sync deleted text")?;
                return Ok(SyncReply::Deleted(text));
            }
            Some(1) => {}
            _ => return Err("sync"),
        }
        let epoch = field(2).ok_or("sync epoch")?;
        let mut records = Vec::new();
        for value in items.get(7).map(array).unwrap_or(&[]) {
            let raw = bytes(value).ok_or("sync record")?;
            records.push(record::parse_record(&raw).map_err(|_| "sync record")?);
        }
        Ok(SyncReply::Found(SyncFound {
            created: field(1) == Some(1),
            epoch: epoch as u64,
            last_id: field(3).unwrap_or(0).max(0) as u64,
            dropped: field(4).zip(field(5)).map(|(t, g)| (t as u64, g as u64)),
            stored: count(items.get(6)),
            records,
            subscribers: SubscriberCounts::read(items.get(8)),
            lost: field(9) == Some(1),
        }))
    }
}

// ---- create.lua ----

/// What create.lua did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CreateReply {
    Created,
    Existed,
    /// The channel limit refused it.
    Refused,
}

impl CreateReply {
    fn read(value: &Value) -> Read<CreateReply> {
        match int(value) {
            Some(1) => Ok(CreateReply::Created),
            Some(0) => Ok(CreateReply::Existed),
            Some(-1) => Ok(CreateReply::Refused),
            _ => Err("create"),
        }
    }
}

// ---- delete.lua, collect.lua, expire.lua, touch.lua ----

/// 1 / 0 answers (delete: the channel existed; collect: this call removed it).
fn flag(what: &'static str) -> impl Fn(&Value) -> Read<bool> {
    move |value| match int(value) {
        Some(1) => Ok(true),
        Some(0) => Ok(false),
        _ => Err(what),
    }
}

fn read_deleted(value: &Value) -> Read<bool> {
    flag("delete")(value)
}

fn read_collected(value: &Value) -> Read<bool> {
    flag("collect")(value)
}

/// How many stored messages went (expire.lua), or how many arguments were read (touch.lua).
fn read_count(value: &Value) -> Read<u64> {
    int(value).map(|n| n.max(0) as u64).ok_or("count")
}

// ---- info.lua ----

/// One channel's counters.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct InfoReply {
    pub(super) last_id: u64,
    pub(super) stored: u64,
    pub(super) subscribers: SubscriberCounts,
}

impl InfoReply {
    /// `None`: the channel does not exist.
    fn read(value: &Value) -> Read<Option<InfoReply>> {
        let items = array(value);
        let Some(last_id) = items.first().and_then(int) else {
            return Ok(None);
        };
        Ok(Some(InfoReply {
            last_id: last_id.max(0) as u64,
            stored: count(items.get(1)),
            subscribers: SubscriberCounts::read(items.get(2)),
        }))
    }
}

// ---- node.lua ----

/// This node's heartbeat report.
pub(super) struct NodeCall<'a> {
    pub(super) node_key: &'a str,
    /// JSON of the `NodeReport`.
    pub(super) report: &'a str,
    pub(super) node_timeout_ms: u64,
    /// The node is leaving: its report goes.
    pub(super) leaving: bool,
}

/// What node.lua answered.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct NodeReply {
    /// (node key, report JSON) of the nodes seen within one node timeout.
    pub(super) live: Vec<(String, Bytes)>,
    /// Keys of the nodes Redis forgot (silent for ten node timeouts).
    pub(super) forgotten: Vec<String>,
    /// Redis did not know the calling node (new, forgotten, or Redis lost its data).
    pub(super) unknown: bool,
}

impl NodeReply {
    fn read(value: &Value) -> Read<NodeReply> {
        let parts = array(value);
        let text = |v: &Value| bytes(v).map(|b| String::from_utf8_lossy(&b).into_owned());
        let live = parts
            .first()
            .map(array)
            .unwrap_or(&[])
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, bytes(pair.get(1)?)?)))
            .collect();
        let forgotten = parts
            .get(1)
            .map(array)
            .unwrap_or(&[])
            .iter()
            .filter_map(text)
            .collect();
        Ok(NodeReply {
            live,
            forgotten,
            unknown: parts.get(2).and_then(int) == Some(1),
        })
    }
}

// ---- shared reply pieces ----

/// A channel's subscriber-count hash (node key → local subscribers) as Redis answered it; pairs
/// that cannot be read are left out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct SubscriberCounts(pub(super) Vec<(String, u64)>);

impl SubscriberCounts {
    /// From a hash reply, whether it came as a RESP2 array or a RESP3 map (cluster connections speak
    /// RESP3).
    pub(super) fn read(value: Option<&Value>) -> SubscriberCounts {
        let pair = |node: &Value, count: &Value| {
            let node = String::from_utf8(bytes(node)?.to_vec()).ok()?;
            Some((node, int(count)?.max(0) as u64))
        };
        SubscriberCounts(match value {
            Some(Value::Map(pairs)) => pairs.iter().filter_map(|(k, v)| pair(k, v)).collect(),
            Some(other) => array(other)
                .chunks(2)
                .filter_map(|p| pair(p.first()?, p.get(1)?))
                .collect(),
            None => Vec::new(),
        })
    }
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A non-negative count (0 when absent or unreadable).
fn count(value: Option<&Value>) -> u64 {
    value.and_then(int).unwrap_or(0).max(0) as u64
}

/// The bytes of a string reply.
pub(super) fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

impl Scripts {
    pub(super) fn new() -> Scripts {
        Scripts {
            publish: script(include_str!("publish.lua")),
            sync: script(include_str!("sync.lua")),
            create: script(include_str!("create.lua")),
            delete: script(include_str!("delete.lua")),
            expire: script(include_str!("expire.lua")),
            collect: script(include_str!("collect.lua")),
            touch: script(include_str!("touch.lua")),
            info: script(include_str!("info.lua")),
            node: script(include_str!("node.lua")),
        }
    }

    /// publish.lua on the channel of `keys` (`channels`: its registry, normal or wildcard).
    pub(super) async fn publish(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        wildcard: bool,
        call: &PublishCall<'_>,
    ) -> Result<PublishReply, ScriptError> {
        let mut invocation = self.publish.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.channels(wildcard))
            .key(keys.expiry())
            .key(keys.published())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .arg(call.id)
            .arg(call.tail)
            .arg(u8::from(call.store))
            .arg(call.max_stored)
            .arg(call.message_ttl_ms)
            .arg(call.inactivity_ms)
            .arg(call.allowance)
            .arg(&keys.pubsub)
            .arg(u8::from(call.counted))
            .arg(call.announce_command)
            .arg(call.idempotency_key)
            .arg(call.keys_remembered);
        run(invocation, conn, PublishReply::read).await
    }

    /// sync.lua on the channel of `keys`.
    pub(super) async fn sync(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        wildcard: bool,
        call: &SyncCall<'_>,
    ) -> Result<SyncReply, ScriptError> {
        let (known_epoch, known_last) = match call.known {
            Some((epoch, last)) => (epoch.to_string(), last),
            None => (String::new(), 0),
        };
        let mut invocation = self.sync.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.channels(wildcard))
            .key(keys.expiry())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .key(&keys.removed)
            .arg(call.id)
            .arg(u8::from(call.create))
            .arg(call.allowance)
            .arg(call.inactivity_ms)
            .arg(known_epoch)
            .arg(known_last);
        run(invocation, conn, SyncReply::read).await
    }

    /// create.lua: creates the channel of `keys` within `allowance` (-1: no limit).
    pub(super) async fn create(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        (id, wildcard): (&str, bool),
        allowance: i64,
        inactivity_ms: u64,
    ) -> Result<CreateReply, ScriptError> {
        let mut invocation = self.create.key(&keys.meta);
        invocation
            .key(keys.channels(wildcard))
            .key(&keys.idempotency)
            .arg(id)
            .arg(allowance)
            .arg(inactivity_ms);
        run(invocation, conn, CreateReply::read).await
    }

    /// delete.lua: true when the channel existed; its removal mark stays `mark_kept_ms`.
    pub(super) async fn delete(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        (id, wildcard): (&str, bool),
        (text, mark_kept_ms): (&[u8], u64),
        announce_command: &str,
    ) -> Result<bool, ScriptError> {
        let mut invocation = self.delete.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.channels(wildcard))
            .key(keys.expiry())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .key(&keys.removed)
            .arg(id)
            .arg(&keys.pubsub)
            .arg(text)
            .arg(announce_command)
            .arg(mark_kept_ms);
        run(invocation, conn, read_deleted).await
    }

    /// expire.lua: drops the channel's expired stored messages; how many went.
    pub(super) async fn expire(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        id: &str,
    ) -> Result<u64, ScriptError> {
        let mut invocation = self.expire.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(keys.expiry())
            .key(keys.stored())
            .arg(id);
        run(invocation, conn, read_count).await
    }

    /// collect.lua: removes the channel if its deadline in `registry` passed; true if this call did.
    pub(super) async fn collect(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        (id, registry): (&str, &str),
        announce_command: &str,
    ) -> Result<bool, ScriptError> {
        let mut invocation = self.collect.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(registry)
            .key(keys.expiry())
            .key(keys.stored())
            .key(&keys.subs)
            .key(&keys.idempotency)
            .arg(id)
            .arg(&keys.pubsub)
            .arg(announce_command);
        run(invocation, conn, read_collected).await
    }

    /// touch.lua: renews the deadlines of `channels` (wildcard?, id) of one location.
    pub(super) async fn touch(
        &self,
        conn: &mut RedisConn,
        location: &str,
        keep_alive_ms: u64,
        channels: &[(bool, crate::broker::ChannelId)],
    ) -> Result<u64, ScriptError> {
        let mut invocation = self.touch.key(location_key(location, "channels"));
        invocation
            .key(location_key(location, "wchannels"))
            .arg(keep_alive_ms);
        for (wildcard, id) in channels {
            invocation
                .arg(if *wildcard { "w" } else { "n" })
                .arg(id.as_str());
        }
        run(invocation, conn, read_count).await
    }

    /// info.lua: one channel's counters, `None` if it does not exist.
    pub(super) async fn info(
        &self,
        conn: &mut RedisConn,
        keys: &Keys,
        id: &str,
    ) -> Result<Option<InfoReply>, ScriptError> {
        let mut invocation = self.info.key(&keys.meta);
        invocation
            .key(&keys.log)
            .key(&keys.subs)
            .key(keys.expiry())
            .key(keys.stored())
            .arg(id);
        run(invocation, conn, InfoReply::read).await
    }

    /// node.lua: writes this node's report (`node_keys`: reports and seen hashes) and reads the
    /// others'.
    pub(super) async fn node(
        &self,
        conn: &mut RedisConn,
        (reports, seen): (&str, &str),
        call: &NodeCall<'_>,
    ) -> Result<NodeReply, ScriptError> {
        let mut invocation = self.node.key(reports);
        invocation
            .key(seen)
            .arg(call.node_key)
            .arg(call.report)
            .arg(call.node_timeout_ms)
            .arg(u8::from(call.leaving));
        run(invocation, conn, NodeReply::read).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn text(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn arr(items: Vec<Value>) -> Value {
        Value::Array(items)
    }

    fn record(id: u64, body: &str) -> Vec<u8> {
        let mut raw = format!("{id} 1700000000 {id} 1700000060000 ").into_bytes();
        raw.extend(record::tail(true, None, None, body.as_bytes()));
        raw
    }

    #[test]
    fn publish_reply_reads_every_field() {
        let reply = arr(vec![
            int(7),
            int(1_700_000_000),
            int(12),
            int(1),
            int(3),
            arr(vec![
                text(b"node-a#1#2"),
                text(b"4"),
                text(b"node-b#1#3"),
                int(2),
            ]),
            int(0),
            int(1_699_999_999_000),
        ]);
        assert_eq!(
            PublishReply::read(&reply),
            Ok(PublishReply::Done(PublishDone {
                id: 7,
                created: true,
                stored: 3,
                subscribers: SubscriberCounts(vec![
                    ("node-a#1#2".into(), 4),
                    ("node-b#1#3".into(), 2)
                ]),
                replayed: false,
                epoch: Some(1_699_999_999_000),
            }))
        );
        assert_eq!(
            PublishReply::read(&arr(vec![int(-1)])),
            Ok(PublishReply::Refused)
        );
        assert_eq!(PublishReply::read(&arr(vec![])), Err("publish"));
        assert_eq!(PublishReply::read(&text(b"OK")), Err("publish"));
        // A replay: the script answers the channel as it is.
        let replay = arr(vec![
            int(5),
            int(1),
            int(2),
            int(0),
            int(5),
            arr(vec![]),
            int(1),
            int(9),
        ]);
        let Ok(PublishReply::Done(done)) = PublishReply::read(&replay) else {
            panic!("a replay reads");
        };
        assert!(done.replayed && !done.created);
    }

    #[test]
    fn sync_reply_reads_history_and_counters() {
        let reply = arr(vec![
            int(1),
            int(0),
            text(b"1699999999000"),
            text(b"12"),
            text(b"1700000000"),
            text(b"5"),
            int(2),
            arr(vec![text(&record(11, "a")), text(&record(12, "b"))]),
            Value::Map(vec![(text(b"node-a"), text(b"3"))]),
        ]);
        let Ok(SyncReply::Found(found)) = SyncReply::read(&reply) else {
            panic!("sync reply reads");
        };
        assert_eq!(found.epoch, 1_699_999_999_000);
        assert_eq!(found.last_id, 12);
        assert_eq!(found.dropped, Some((1_700_000_000, 5)));
        assert_eq!(found.stored, 2);
        assert!(!found.created);
        let ids: Vec<u64> = found.records.iter().map(|r| r.id).collect();
        assert_eq!(ids, [11, 12]);
        assert_eq!(&found.records[1].text[..], b"b");
        assert_eq!(
            found.subscribers,
            SubscriberCounts(vec![("node-a".into(), 3)])
        );
        assert!(!found.lost, "no lost flag: nothing was lost");
    }

    #[test]
    fn sync_reply_tells_deleted_from_lost() {
        assert_eq!(
            SyncReply::read(&arr(vec![int(2), text(b"Channel deleted")])),
            Ok(SyncReply::Deleted(Bytes::from_static(b"Channel deleted")))
        );
        assert_eq!(
            SyncReply::read(&arr(vec![int(2)])),
            Err("sync deleted text")
        );
        let lost = arr(vec![
            int(1),
            int(1),
            int(9),
            int(0),
            text(b""),
            text(b""),
            int(0),
            arr(vec![]),
            arr(vec![]),
            text(b"1"),
        ]);
        let Ok(SyncReply::Found(found)) = SyncReply::read(&lost) else {
            panic!("a lost channel reads");
        };
        assert!(found.lost && found.created);
    }

    #[test]
    fn sync_reply_statuses_and_malformed_answers() {
        assert_eq!(SyncReply::read(&arr(vec![int(0)])), Ok(SyncReply::Missing));
        assert_eq!(SyncReply::read(&arr(vec![int(-1)])), Ok(SyncReply::Refused));
        assert_eq!(SyncReply::read(&arr(vec![int(7)])), Err("sync"));
        assert_eq!(
            SyncReply::read(&arr(vec![int(1), int(0)])),
            Err("sync epoch")
        );
        // No dropped point: empty strings.
        let fresh = arr(vec![
            int(1),
            int(1),
            int(5),
            int(0),
            text(b""),
            text(b""),
            int(0),
            arr(vec![]),
            arr(vec![]),
        ]);
        let Ok(SyncReply::Found(found)) = SyncReply::read(&fresh) else {
            panic!("fresh channel reads");
        };
        assert!(found.created && found.dropped.is_none() && found.records.is_empty());
        let bad_record = arr(vec![
            int(1),
            int(0),
            int(5),
            int(1),
            text(b""),
            text(b""),
            int(1),
            arr(vec![text(b"not a record")]),
            arr(vec![]),
        ]);
        assert_eq!(SyncReply::read(&bad_record), Err("sync record"));
    }

    #[test]
    fn small_replies() {
        assert_eq!(CreateReply::read(&int(1)), Ok(CreateReply::Created));
        assert_eq!(CreateReply::read(&int(0)), Ok(CreateReply::Existed));
        assert_eq!(CreateReply::read(&int(-1)), Ok(CreateReply::Refused));
        assert_eq!(CreateReply::read(&int(2)), Err("create"));
        assert_eq!(read_deleted(&int(1)), Ok(true));
        assert_eq!(read_deleted(&int(0)), Ok(false));
        assert_eq!(read_collected(&Value::Nil), Err("collect"));
        assert_eq!(read_count(&int(3)), Ok(3));
        assert_eq!(read_count(&int(-3)), Ok(0));
    }

    #[test]
    fn info_reply() {
        assert_eq!(InfoReply::read(&Value::Nil), Ok(None));
        let reply = arr(vec![int(9), int(4), arr(vec![text(b"n"), int(1)])]);
        assert_eq!(
            InfoReply::read(&reply),
            Ok(Some(InfoReply {
                last_id: 9,
                stored: 4,
                subscribers: SubscriberCounts(vec![("n".into(), 1)]),
            }))
        );
    }

    #[test]
    fn node_reply() {
        let reply = arr(vec![
            arr(vec![
                text(b"a#1#2"),
                text(b"{\"node\":\"a\"}"),
                text(b"odd"),
            ]),
            arr(vec![text(b"gone#1#1")]),
            int(1),
        ]);
        assert_eq!(
            NodeReply::read(&reply),
            Ok(NodeReply {
                live: vec![("a#1#2".into(), Bytes::from_static(b"{\"node\":\"a\"}"))],
                forgotten: vec!["gone#1#1".into()],
                unknown: true,
            })
        );
    }

    #[test]
    fn subscriber_counts_skip_unreadable_pairs() {
        let counts = SubscriberCounts::read(Some(&arr(vec![
            text(b"a"),
            text(b"2"),
            text(b"b"),
            text(b"many"),
            text(b"c"),
            int(-4),
        ])));
        assert_eq!(
            counts,
            SubscriberCounts(vec![("a".into(), 2), ("c".into(), 0)])
        );
        assert_eq!(SubscriberCounts::read(None), SubscriberCounts::default());
    }
}
