//! Which Cluster master a command goes to: the key it names, that key's hash slot, and
//! the slot map (`CLUSTER SLOTS`).
//!
//! redis-rs routes commands itself but keeps its slot function and slot map private, so
//! the few lines of the Cluster specification needed to scope a circuit breaker to one
//! master are written here (the CRC16 is the `crc16` crate redis-rs uses too).

use redis::{Arg, Cmd, Value};

/// Hash slots in a Redis Cluster.
const SLOTS: u16 = 16384;

/// The hash slot of `key`: CRC16 of its hash tag (`{...}`) when it has a non-empty one.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS
}

/// The first key `cmd` names, for the commands this crate sends: the first argument, or
/// for EVAL/EVALSHA the first of its keys, for XREAD the first stream. `None` for
/// commands without a key (PING, TIME, WAIT, CLUSTER ...), which any node may serve.
pub fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            Arg::Simple(bytes) => bytes,
            _ => &[][..],
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" => {
            let count: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            (count > 0).then(|| args.get(3).copied()).flatten()
        }
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1).copied()
        }
        b"PING" | b"TIME" | b"WAIT" | b"CLUSTER" | b"INFO" | b"SCRIPT" | b"ECHO" => None,
        _ => args.get(1).copied(),
    }
}

/// Slot ranges and the address (`host:port`) of the master serving each.
#[derive(Debug, Clone, Default)]
pub struct SlotMap {
    ranges: Vec<(u16, u16, String)>,
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply; ranges it cannot read are skipped.
    pub fn from_reply(reply: Value) -> SlotMap {
        let Value::Array(entries) = reply else {
            return SlotMap::default();
        };
        let mut ranges: Vec<(u16, u16, String)> = entries
            .into_iter()
            .filter_map(|entry| {
                let Value::Array(parts) = entry else {
                    return None;
                };
                let int = |v: &Value| match v {
                    Value::Int(i) => u16::try_from(*i).ok(),
                    _ => None,
                };
                let (start, end) = (int(parts.first()?)?, int(parts.get(1)?)?);
                let Value::Array(master) = parts.get(2)? else {
                    return None;
                };
                let host = match master.first()? {
                    Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
                    Value::SimpleString(s) => s.clone(),
                    _ => return None,
                };
                let port = int(master.get(1)?)?;
                Some((start, end, format!("{host}:{port}")))
            })
            .collect();
        ranges.sort();
        SlotMap { ranges }
    }

    /// The master serving `slot`, if known.
    pub fn master_of(&self, slot: u16) -> Option<&str> {
        let i = self.ranges.partition_point(|(start, _, _)| *start <= slot);
        let (start, end, addr) = self.ranges.get(i.checked_sub(1)?)?;
        (*start <= slot && slot <= *end).then_some(addr.as_str())
    }

    /// Every master with the slot ranges it serves, as `start-end` strings.
    pub fn masters(&self) -> Vec<(String, Vec<String>)> {
        let mut masters: Vec<(String, Vec<String>)> = Vec::new();
        for (start, end, addr) in &self.ranges {
            let range = format!("{start}-{end}");
            match masters.iter_mut().find(|(a, _)| a == addr) {
                Some((_, slots)) => slots.push(range),
                None => masters.push((addr.clone(), vec![range])),
            }
        }
        masters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_specification() {
        // Reference values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_ne!(
            slot_of(b"foo{}{bar}"),
            slot_of(b"bar"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn the_first_key_is_found_for_each_command_shape() {
        let key = |c: &Cmd| first_key(c).map(|k| String::from_utf8(k.to_vec()).unwrap());
        assert_eq!(key(redis::cmd("GET").arg("a")), Some("a".into()));
        assert_eq!(
            key(redis::cmd("EVALSHA")
                .arg("sha")
                .arg(2)
                .arg("k1")
                .arg("k2")
                .arg("x")),
            Some("k1".into())
        );
        assert_eq!(key(redis::cmd("EVAL").arg("return 1").arg(0)), None);
        assert_eq!(
            key(redis::cmd("XREAD")
                .arg("COUNT")
                .arg(5)
                .arg("STREAMS")
                .arg("s")
                .arg("0-0")),
            Some("s".into())
        );
        assert_eq!(key(&redis::cmd("TIME")), None);
    }

    #[test]
    fn the_slot_map_finds_the_master_of_each_slot() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)])
        };
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(10922),
                node("10.0.0.2", 7001),
            ]),
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                node("10.0.0.1", 7000),
            ]),
            Value::Array(vec![
                Value::Int(10923),
                Value::Int(16383),
                node("10.0.0.1", 7000),
            ]),
        ]);
        let map = SlotMap::from_reply(reply);
        assert_eq!(map.master_of(0), Some("10.0.0.1:7000"));
        assert_eq!(map.master_of(5461), Some("10.0.0.2:7001"));
        assert_eq!(map.master_of(16383), Some("10.0.0.1:7000"));
        assert_eq!(map.masters().len(), 2);
        assert_eq!(SlotMap::default().master_of(3), None);
    }
}
