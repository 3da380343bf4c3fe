//! The Lua scripts Herald runs in Redis (`*.lua`, each with `prelude.lua` before it) and the readers
//! of their replies.

use crate::broker::BrokerError;
use bytes::Bytes;
use redis::{Script, Value};

pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) sync: Script,
    pub(super) create: Script,
    pub(super) delete: Script,
    pub(super) expire: Script,
    pub(super) collect: Script,
    pub(super) touch: Script,
    pub(super) info: Script,
    pub(super) node: Script,
}

/// A script with the shared Lua functions (`prelude.lua`) before it.
pub(super) fn script(body: &str) -> Script {
    Script::new(&format!("{}{body}", include_str!("prelude.lua")))
}

pub(super) fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

pub(super) fn bytes(value: &Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        _ => None,
    }
}

pub(super) fn array(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) => items,
        _ => &[],
    }
}

/// The flat [field, value, field, value, …] form of a hash reply, whether it came as a RESP2 array
/// or a RESP3 map (cluster connections speak RESP3).
pub(super) fn hash_pairs(value: &Value) -> Vec<Value> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        other => array(other).to_vec(),
    }
}

pub(super) fn malformed(what: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "Redis answered something Herald cannot read ({what}); are two Herald versions sharing one key_prefix?"
    ))
}
