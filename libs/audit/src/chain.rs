//! Records and their tamper-evident chain.
//!
//! Every record of one process carries `estate.instance` (a UUID for the
//! process), `estate.seq` (1, 2, 3 …) and `estate.prev_hash`: the SHA-256 of
//! the previous record's canonical JSON (sorted keys, no whitespace), 64 zeros
//! for the first. [`verify`] replays the chain of each instance and reports
//! the first gap (missing records), reorder or modification. Exact duplicates
//! (a resend after a reconnect) are skipped.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::event::AuditEvent;

/// The `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The chain position of one process.
#[derive(Debug)]
pub(crate) struct ChainState {
    pub(crate) instance: String,
    pub(crate) seq: u64,
    pub(crate) prev_hash: String,
}

impl ChainState {
    pub(crate) fn new() -> Self {
        Self { instance: uuid::Uuid::new_v4().to_string(), seq: 0, prev_hash: GENESIS.to_owned() }
    }

    /// Turn `event` into the next record (canonical JSON) and advance the chain.
    pub(crate) fn record(&mut self, service: &str, event: &AuditEvent, timestamp: &str) -> String {
        self.seq += 1;
        let mut record = json!({
            "@timestamp": timestamp,
            "event": {
                "id": uuid::Uuid::now_v7().to_string(),
                "kind": "event",
                "category": [event.action.category()],
                "action": event.action.name(),
                "outcome": event.outcome,
            },
            "service": { "name": service },
            "estate": { "instance": self.instance, "seq": self.seq, "prev_hash": self.prev_hash },
        });
        if let Some(reason) = event.reason {
            record["event"]["reason"] = json!(reason);
        }
        if let Some(sub) = &event.subject {
            record["user"]["id"] = json!(sub);
        }
        if let Some(name) = &event.user_name {
            record["user"]["name"] = json!(name);
        }
        if let Some(ip) = event.source_ip {
            record["source"] = json!({ "ip": ip.to_string() });
        }
        if let Some(http) = &event.http {
            record["http"] =
                json!({ "request": { "method": http.method }, "response": { "status_code": http.status } });
            record["url"] = json!({ "path": http.route });
        }
        if let Some(trace) = &event.trace_id {
            record["trace"] = json!({ "id": trace });
        }
        let estate = &mut record["estate"];
        if let Some(client) = &event.client_id {
            estate["client_id"] = json!(client);
        }
        if let Some(peer) = &event.peer {
            estate["peer"] = json!(peer);
        }
        if let Some(jti) = &event.jti {
            estate["jti"] = json!(jti);
        }
        if let Some(lease_id) = &event.lease_id {
            estate["lease_id"] = json!(lease_id);
        }
        if let Some(key_id) = &event.key_id {
            estate["key_id"] = json!(key_id);
        }
        if let Some(count) = event.count {
            estate["count"] = json!(count);
        }
        // serde_json's map is ordered by key: this is the canonical form.
        let text = record.to_string();
        self.prev_hash = digest(&text);
        text
    }
}

fn digest(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The first thing wrong with a received log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// A line is not a record.
    #[error("line {line}: not an audit record")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// Records are missing before this one.
    #[error("line {line}: gap in instance {instance}: expected seq {expected}, found {found}")]
    Gap {
        /// Line.
        line: usize,
        /// Process instance.
        instance: String,
        /// Expected sequence number.
        expected: u64,
        /// Found.
        found: u64,
    },
    /// A record arrived out of order.
    #[error("line {line}: out of order in instance {instance}: seq {found} after {previous}")]
    Reordered {
        /// Line.
        line: usize,
        /// Process instance.
        instance: String,
        /// The previous seq.
        previous: u64,
        /// Found.
        found: u64,
    },
    /// The previous record was changed (its hash does not match).
    #[error("line {line}: instance {instance} seq {seq}: the previous record was modified")]
    Modified {
        /// Line.
        line: usize,
        /// Process instance.
        instance: String,
        /// This record's seq.
        seq: u64,
    },
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Records checked (duplicates not counted).
    pub records: usize,
    /// Process instances seen.
    pub instances: usize,
}

/// Verify the records in `lines` (one JSON record per line; lines from the
/// test SIEM receiver, `{"msg": "<record>", …}`, are unwrapped).
pub fn verify<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Verified, ChainError> {
    struct Last {
        seq: u64,
        hash: String,
    }
    let mut last: HashMap<String, Last> = HashMap::new();
    // Every (instance, seq) seen, with its hash: a resend after a reconnect
    // repeats records exactly and is skipped; a *different* record under a seen
    // number is a modification.
    let mut seen: HashMap<(String, u64), String> = HashMap::new();
    let mut records = 0;
    for (index, line) in lines.into_iter().enumerate() {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let malformed = ChainError::Malformed { line: line_no };
        let mut value: Value = serde_json::from_str(line).map_err(|_| malformed.clone())?;
        if let Some(inner) = value.get("msg").and_then(Value::as_str) {
            value = serde_json::from_str(inner).map_err(|_| malformed.clone())?;
        }
        let estate = value.get("estate").ok_or_else(|| malformed.clone())?;
        let instance = estate.get("instance").and_then(Value::as_str).ok_or_else(|| malformed.clone())?.to_owned();
        let seq = estate.get("seq").and_then(Value::as_u64).ok_or_else(|| malformed.clone())?;
        let prev_hash = estate.get("prev_hash").and_then(Value::as_str).ok_or_else(|| malformed.clone())?.to_owned();
        let hash = digest(&value.to_string());
        match seen.get(&(instance.clone(), seq)) {
            Some(known) if *known == hash => continue, // a resend
            Some(_) => return Err(ChainError::Modified { line: line_no, instance, seq }),
            None => {}
        }
        match last.get(&instance) {
            None => {}
            Some(previous) if seq <= previous.seq => {
                return Err(ChainError::Reordered { line: line_no, instance, previous: previous.seq, found: seq });
            }
            Some(previous) if seq != previous.seq + 1 => {
                return Err(ChainError::Gap { line: line_no, instance, expected: previous.seq + 1, found: seq });
            }
            Some(previous) if prev_hash != previous.hash => {
                return Err(ChainError::Modified { line: line_no, instance, seq });
            }
            Some(_) => {}
        }
        if !last.contains_key(&instance) && seq == 1 && prev_hash != GENESIS {
            return Err(ChainError::Modified { line: line_no, instance, seq });
        }
        seen.insert((instance.clone(), seq), hash.clone());
        last.insert(instance, Last { seq, hash });
        records += 1;
    }
    Ok(Verified { records, instances: last.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Action, Outcome};

    fn chain(n: usize) -> Vec<String> {
        let mut state = ChainState::new();
        (0..n)
            .map(|_| {
                state.record("order", &AuditEvent::new(Action::AccessDenied, Outcome::Failure), "2026-12-04T00:00:00Z")
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_resends_are_skipped() {
        let lines = chain(5);
        assert_eq!(verify(lines.iter().map(String::as_str)).unwrap(), Verified { records: 5, instances: 1 });
        let mut with_resend = lines.clone();
        with_resend.insert(3, lines[2].clone());
        // A reconnect replays a window of earlier records.
        with_resend.extend(lines[1..4].iter().cloned());
        assert_eq!(verify(with_resend.iter().map(String::as_str)).unwrap().records, 5);
    }

    #[test]
    fn deletion_reordering_and_editing_are_detected() {
        let lines = chain(5);
        let mut deleted = lines.clone();
        deleted.remove(2);
        assert!(matches!(verify(deleted.iter().map(String::as_str)), Err(ChainError::Gap { line: 3, .. })));

        let mut reordered = lines.clone();
        reordered.swap(1, 2);
        assert!(matches!(
            verify(reordered.iter().map(String::as_str)),
            Err(ChainError::Gap { .. } | ChainError::Reordered { .. })
        ));

        let mut edited = lines.clone();
        edited[1] = edited[1].replace("access_denied", "token_issued");
        assert!(matches!(verify(edited.iter().map(String::as_str)), Err(ChainError::Modified { line: 3, .. })));
    }
}
