//! Redis Cluster's key space: the hash slot of a key, and the map of which
//! primary serves each slot, read from `CLUSTER SLOTS`.

use redis::Value;
use std::sync::Arc;

/// The slots of a cluster: 0 to 16383.
pub(crate) const SLOTS: usize = 16384;

/// CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), as Redis
/// Cluster hashes keys.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

/// The hash slot of `key`: only the part between the first `{` and the
/// next `}` counts when it is not empty (a hash tag), so keys sharing a tag
/// share a slot.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// Which primary serves each slot: an address (`host:port`) per slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// The primaries, each once.
    primaries: Vec<Arc<str>>,
    /// For each slot, its primary's index in `primaries`.
    owner: Box<[u16]>,
}

impl SlotMap {
    /// A map that serves no slot (before the first reading).
    pub(crate) fn empty() -> Self {
        Self {
            primaries: Vec::new(),
            owner: vec![u16::MAX; SLOTS].into_boxed_slice(),
        }
    }

    /// The primary serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&Arc<str>> {
        self.primaries
            .get(usize::from(self.owner[usize::from(slot) % SLOTS]))
    }

    /// Every primary, each once.
    pub(crate) fn primaries(&self) -> &[Arc<str>] {
        &self.primaries
    }

    /// Records that `slot` is now served by `addr` (a `MOVED` answer).
    pub(crate) fn moved(&mut self, slot: u16, addr: &str) {
        let index = match self.primaries.iter().position(|p| p.as_ref() == addr) {
            Some(index) => index,
            None => {
                self.primaries.push(Arc::from(addr));
                self.primaries.len() - 1
            }
        };
        if let Ok(index) = u16::try_from(index) {
            self.owner[usize::from(slot) % SLOTS] = index;
        }
    }

    /// Parses a `CLUSTER SLOTS` reply, got from the node at `asked_host`
    /// (the host of a primary announced with an empty address). Fails,
    /// saying why, unless every slot is served: a cluster missing slots
    /// cannot take every topic.
    pub(crate) fn parse(reply: &Value, asked_host: &str) -> Result<Self, String> {
        let Value::Array(ranges) = reply else {
            return Err("CLUSTER SLOTS did not answer a list".to_owned());
        };
        let mut primaries: Vec<Arc<str>> = Vec::new();
        let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
        for range in ranges {
            let Value::Array(parts) = range else {
                return Err("a CLUSTER SLOTS range is not a list".to_owned());
            };
            let (Some(start), Some(end), Some(Value::Array(node))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err("a CLUSTER SLOTS range has no slots or no primary".to_owned());
            };
            let (Some(start), Some(end)) = (integer(start), integer(end)) else {
                return Err("a CLUSTER SLOTS range has slots that are not numbers".to_owned());
            };
            if start > end || end >= SLOTS as i64 || start < 0 {
                return Err(format!("CLUSTER SLOTS names slots {start}-{end}"));
            }
            let host = match node.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err("a CLUSTER SLOTS primary has no host".to_owned()),
            };
            let Some(port) = node
                .get(1)
                .and_then(integer)
                .filter(|p| (1..=65535).contains(p))
            else {
                return Err("a CLUSTER SLOTS primary has no valid port".to_owned());
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let addr = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let index = match primaries.iter().position(|p| p.as_ref() == addr) {
                Some(index) => index,
                None => {
                    primaries.push(Arc::from(addr));
                    primaries.len() - 1
                }
            };
            let index = u16::try_from(index).map_err(|_| "too many primaries".to_owned())?;
            for slot in start..=end {
                owner[slot as usize] = index;
            }
        }
        if let Some(missing) = owner.iter().position(|&o| o == u16::MAX) {
            let served = owner.iter().filter(|&&o| o != u16::MAX).count();
            return Err(format!(
                "the cluster serves {served} of {SLOTS} slots (slot {missing} has no primary): is it fully set up?"
            ));
        }
        Ok(Self { primaries, owner })
    }
}

fn integer(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        Value::BulkString(text) => std::str::from_utf8(text).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_those_redis_computes() {
        // Reference values: `CLUSTER KEYSLOT` on Redis 7.0.
        assert_eq!(crc16(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"123456789"), 12739);
        assert_eq!(key_slot(b"p:{c/t}:meta"), 10992);
        assert_eq!(key_slot(b"p:{c/t}:events"), 10992);
        assert_eq!(key_slot(b"c/t"), 10992);
        // An empty tag hashes the whole key; only the first tag counts.
        assert_eq!(key_slot(b"a{}b"), crc16(b"a{}b") % 16384);
        assert_eq!(key_slot(b"x{c/t}{other}"), 10992);
        assert_eq!(
            key_slot(b"no close {brace"),
            crc16(b"no close {brace") % 16384
        );
    }

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    fn range(start: i64, end: i64, primary: Value) -> Value {
        Value::Array(vec![Value::Int(start), Value::Int(end), primary])
    }

    #[test]
    fn a_full_map_is_read_and_moved_slots_are_recorded() {
        let reply = Value::Array(vec![
            range(0, 8000, node("127.0.0.1", 7001)),
            range(8001, 16383, node("", 7002)),
        ]);
        let mut map = SlotMap::parse(&reply, "10.0.0.9").expect("a full map");
        assert_eq!(map.owner(0).map(AsRef::as_ref), Some("127.0.0.1:7001"));
        assert_eq!(map.owner(8001).map(AsRef::as_ref), Some("10.0.0.9:7002"));
        assert_eq!(map.primaries().len(), 2);
        map.moved(5, "127.0.0.1:7003");
        assert_eq!(map.owner(5).map(AsRef::as_ref), Some("127.0.0.1:7003"));
        assert_eq!(map.owner(6).map(AsRef::as_ref), Some("127.0.0.1:7001"));
        assert!(SlotMap::empty().owner(6).is_none());
        assert_eq!(map.primaries().len(), 3);
    }

    #[test]
    fn a_map_missing_slots_or_malformed_is_refused() {
        let partial = Value::Array(vec![range(0, 100, node("127.0.0.1", 7001))]);
        let error = SlotMap::parse(&partial, "h").expect_err("partial");
        assert!(error.contains("serves 101 of 16384"), "{error}");
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![range(5, 2, node("h", 1))]),
            Value::Array(vec![range(0, 16384, node("h", 1))]),
            Value::Array(vec![range(0, 16383, node("h", 0))]),
            Value::Array(vec![range(0, 16383, Value::Array(vec![]))]),
        ] {
            assert!(SlotMap::parse(&bad, "h").is_err(), "{bad:?}");
        }
    }
}
