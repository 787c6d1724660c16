//! The on-disk spool behind the SIEM sink: every framed record is appended
//! (and flushed) before it is sent; the offset up to which records were
//! delivered is persisted; after a restart the undelivered tail is sent first.
//! Once everything is delivered the file is truncated, so it only grows while
//! the SIEM is away.
//!
//! File I/O here is small sequential appends on the delivery task; it never
//! runs on request paths (`emit` only queues).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Persist the delivered offset at least every this many records.
const PERSIST_EVERY: usize = 16;

pub(crate) struct Spool {
    file: File,
    offset_path: PathBuf,
    written: u64,
    delivered: u64,
    /// End offsets of records appended and not yet delivered, in order.
    ends: VecDeque<u64>,
    since_persist: usize,
}

impl Spool {
    /// Open (or create) the spool in `dir`; returns it and the records still undelivered.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Vec<Vec<u8>>)> {
        fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Audit records are sensitive operational data: owner only.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let path = dir.join("audit.spool");
        let offset_path = dir.join("audit.offset");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let delivered: u64 = fs::read_to_string(&offset_path).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
        let mut content = Vec::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_end(&mut content)?;
        let start = usize::try_from(delivered).unwrap_or(usize::MAX).min(content.len());
        let (frames, complete_end) = parse_frames(&content, start);
        // A record half-written when the process died is cut off.
        if complete_end < content.len() {
            file.set_len(u64::try_from(complete_end).unwrap_or(0))?;
        }
        let mut ends = VecDeque::new();
        let mut end = start;
        for frame in &frames {
            end += frame.len();
            ends.push_back(u64::try_from(end).unwrap_or(u64::MAX));
        }
        let spool = Self {
            file,
            offset_path,
            written: u64::try_from(complete_end).unwrap_or(0),
            delivered: u64::try_from(start).unwrap_or(0),
            ends,
            since_persist: 0,
        };
        Ok((spool, frames))
    }

    /// Append a record (flushed to the OS before it is sent).
    pub(crate) fn append(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write_all(frame)?;
        self.file.flush()?;
        self.written += u64::try_from(frame.len()).unwrap_or(0);
        self.ends.push_back(self.written);
        Ok(())
    }

    /// Make appended records durable (fsync); called when the queue is drained.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The oldest undelivered record was delivered (or deliberately dropped).
    pub(crate) fn advance(&mut self) -> io::Result<()> {
        if let Some(end) = self.ends.pop_front() {
            self.delivered = end;
            self.since_persist += 1;
        }
        if self.ends.is_empty() && self.delivered == self.written {
            // Everything is out: start the file afresh.
            self.file.set_len(0)?;
            self.written = 0;
            self.delivered = 0;
            return self.persist();
        }
        if self.since_persist >= PERSIST_EVERY {
            self.persist()?;
        }
        Ok(())
    }

    fn persist(&mut self) -> io::Result<()> {
        let tmp = self.offset_path.with_extension("tmp");
        fs::write(&tmp, self.delivered.to_string())?;
        fs::rename(&tmp, &self.offset_path)?;
        self.since_persist = 0;
        Ok(())
    }
}

/// RFC 5425 frames (`LEN SP MSG`) from `start`; returns them and where the
/// last complete one ends.
fn parse_frames(content: &[u8], start: usize) -> (Vec<Vec<u8>>, usize) {
    let mut frames = Vec::new();
    let mut at = start;
    while at < content.len() {
        let Some(space) = content[at..].iter().position(|b| *b == b' ') else { break };
        let Some(len) = std::str::from_utf8(&content[at..at + space]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            break;
        };
        let end = at + space + 1 + len;
        if end > content.len() {
            break;
        }
        frames.push(content[at..end].to_vec());
        at = end;
    }
    (frames, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &str) -> Vec<u8> {
        format!("{} {msg}", msg.len()).into_bytes()
    }

    #[test]
    fn undelivered_records_survive_a_restart_and_a_torn_write_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, pending) = Spool::open(dir.path()).unwrap();
        assert!(pending.is_empty());
        for msg in ["one", "two", "three"] {
            spool.append(&frame(msg)).unwrap();
        }
        spool.advance().unwrap(); // "one" delivered
        spool.persist().unwrap();
        drop(spool);
        // A crash in the middle of writing a fourth record.
        fs::OpenOptions::new().append(true).open(dir.path().join("audit.spool")).unwrap().write_all(b"9 fou").unwrap();

        let (_spool, pending) = Spool::open(dir.path()).unwrap();
        assert_eq!(pending, vec![frame("two"), frame("three")]);
    }

    #[test]
    fn a_fully_delivered_spool_is_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        spool.append(&frame("a")).unwrap();
        spool.advance().unwrap();
        assert_eq!(fs::metadata(dir.path().join("audit.spool")).unwrap().len(), 0);
        let (_, pending) = Spool::open(dir.path()).unwrap();
        assert!(pending.is_empty());
    }
}
