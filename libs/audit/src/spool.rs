//! The on-disk spool behind the SIEM sink: every framed record is appended
//! (and flushed) before it is sent; the offset up to which records were
//! delivered is persisted; after a restart the undelivered tail is sent first.
//! Once everything is delivered the file is truncated.
//!
//! **Size.** The sink keeps at most `buffer` records undelivered (older ones
//! are dropped, counted and announced), so the live part of the file is
//! bounded. The dead part (delivered or dropped records) is reclaimed by
//! *compaction* once it is at least [`COMPACT_AT`] bytes and half the file:
//! the live tail is written to a new generation file (`audit.spool.<gen>`),
//! fsynced, the offset file switches to `<gen> 0` atomically, and the old file
//! is deleted. A crash at any point leaves one consistent (generation, offset)
//! pair; files of other generations are deleted on open.
//!
//! File I/O here is small sequential appends on the delivery task; it never
//! runs on request paths (`emit` only queues).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Persist the delivered offset at least every this many records.
const PERSIST_EVERY: usize = 16;
/// Reclaim delivered bytes once there are at least this many (and they are
/// half the file or more).
pub(crate) const COMPACT_AT: u64 = 1024 * 1024;

pub(crate) struct Spool {
    dir: PathBuf,
    file: File,
    offset_path: PathBuf,
    generation: u64,
    written: u64,
    delivered: u64,
    /// End offsets of records appended and not yet delivered, in order.
    ends: VecDeque<u64>,
    since_persist: usize,
    compact_at: u64,
}

fn spool_path(dir: &Path, generation: u64) -> PathBuf {
    if generation == 0 { dir.join("audit.spool") } else { dir.join(format!("audit.spool.{generation}")) }
}

impl Spool {
    /// Open (or create) the spool in `dir`; returns it and the records still undelivered.
    pub(crate) fn open(dir: &Path) -> io::Result<(Self, Vec<Vec<u8>>)> {
        Self::open_with(dir, COMPACT_AT)
    }

    fn open_with(dir: &Path, compact_at: u64) -> io::Result<(Self, Vec<Vec<u8>>)> {
        fs::create_dir_all(dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Audit records are sensitive operational data: owner only.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
        let offset_path = dir.join("audit.offset");
        // `<generation> <offset>`; a bare offset is generation 0.
        let saved = fs::read_to_string(&offset_path).unwrap_or_default();
        let mut fields = saved.split_whitespace().map(|f| f.parse::<u64>().ok());
        let (generation, delivered) = match (fields.next().flatten(), fields.next().flatten()) {
            (Some(generation), Some(offset)) => (generation, offset),
            (Some(offset), None) => (0, offset),
            _ => (0, 0),
        };
        // Leftovers of a compaction interrupted before or after the switch.
        for entry in fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name == "audit.spool" || name.starts_with("audit.spool.")) && path != spool_path(dir, generation) {
                fs::remove_file(&path)?;
            }
        }
        let path = spool_path(dir, generation);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
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
            dir: dir.to_path_buf(),
            file,
            offset_path,
            generation,
            compact_at,
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
        if self.delivered >= self.compact_at && self.delivered * 2 >= self.written {
            return self.compact();
        }
        if self.since_persist >= PERSIST_EVERY {
            self.persist()?;
        }
        Ok(())
    }

    /// Move the live tail to a new generation file and drop the dead head.
    fn compact(&mut self) -> io::Result<()> {
        let mut tail = Vec::new();
        self.file.seek(SeekFrom::Start(self.delivered))?;
        self.file.read_to_end(&mut tail)?;
        let next = self.generation + 1;
        let next_path = spool_path(&self.dir, next);
        let mut file = OpenOptions::new().read(true).append(true).create(true).truncate(false).open(&next_path)?;
        file.set_len(0)?;
        file.write_all(&tail)?;
        file.sync_all()?;
        // The switch: from here on the new generation is the spool.
        let old_path = spool_path(&self.dir, self.generation);
        let shift = self.delivered;
        self.generation = next;
        self.delivered = 0;
        self.persist()?;
        fs::remove_file(old_path)?;
        self.file = file;
        self.written -= shift;
        for end in &mut self.ends {
            *end -= shift;
        }
        Ok(())
    }

    fn persist(&mut self) -> io::Result<()> {
        let tmp = self.offset_path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(format!("{} {}", self.generation, self.delivered).as_bytes())?;
        file.sync_all()?;
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
    fn delivered_bytes_are_reclaimed_and_the_undelivered_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open_with(dir.path(), 100).unwrap();
        let records: Vec<Vec<u8>> = (0..40).map(|n| frame(&format!("record {n:02}"))).collect();
        for record in &records {
            spool.append(record).unwrap();
        }
        for _ in 0..30 {
            spool.advance().unwrap();
        }
        // Compacted: only the live tail is on disk, in a newer generation.
        let files: Vec<String> =
            fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        let spools: Vec<&String> = files.iter().filter(|f| f.starts_with("audit.spool")).collect();
        assert_eq!(spools.len(), 1, "{files:?}");
        assert_ne!(spools[0], "audit.spool", "a new generation");
        let on_disk = fs::metadata(dir.path().join(spools[0])).unwrap().len();
        let total = u64::try_from(records.iter().map(Vec::len).sum::<usize>()).unwrap();
        let live = u64::try_from(records[30..].iter().map(Vec::len).sum::<usize>()).unwrap();
        // Dead bytes stay below the threshold (100) plus one record until the next compaction.
        assert!(on_disk < total && on_disk <= live + 100 + 12, "{on_disk} bytes on disk, {live} live of {total}");
        // Appending and delivering keeps working after the switch.
        spool.append(&frame("record 40")).unwrap();
        spool.advance().unwrap();
        // (Offsets are persisted every few records; unpersisted ones are resent, deduped by `event.id`.)
        spool.persist().unwrap();
        drop(spool);
        let (_, pending) = Spool::open_with(dir.path(), 100).unwrap();
        let mut expected: Vec<Vec<u8>> = records[31..].to_vec();
        expected.push(frame("record 40"));
        assert_eq!(pending, expected);
    }

    #[test]
    fn files_of_other_generations_are_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(dir.path()).unwrap();
        spool.append(&frame("kept")).unwrap();
        drop(spool);
        // A compaction that wrote its file but crashed before switching.
        fs::write(dir.path().join("audit.spool.1"), frame("orphan")).unwrap();
        let (_, pending) = Spool::open(dir.path()).unwrap();
        assert_eq!(pending, vec![frame("kept")]);
        assert!(!dir.path().join("audit.spool.1").exists());
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
