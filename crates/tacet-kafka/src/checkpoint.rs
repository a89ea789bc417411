//! What a checkpoint leaves on disk, and how recovery reads it back.
//!
//! Per partition group `p` (partition `p` of every topic):
//! - `state/partition-<p>.snap`: header (checkpoint sequence, the next
//!   offset and largest event time per topic, a hash of the journeys config)
//!   as JSON, then the shard snapshot, then an xxh3 checksum of both. Written
//!   to a temporary file, synced, renamed: a reader sees the old or the new
//!   snapshot, never half of one.
//! - outcome files are written under `<out>/.staging/p<p>/` and moved into
//!   `<out>/outcomes/` by the checkpoint that covers them; their names carry
//!   the partition and checkpoint sequence (`part-p3-c12-000000.parquet`).
//!
//! Recovery of `p` reads its snapshot (sequence `N`), deletes the staging
//! folder and every published file of `p` with a sequence above `N` (made by a
//! checkpoint that died before its snapshot), and resumes from the snapshot's
//! offsets. Re-processing from there writes those decisions again, exactly once.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

const MAGIC: &[u8; 8] = b"TACETCK1";

/// Errors reading or writing checkpoint files.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a tacet snapshot or damaged ({why}); move it away to start that partition afresh")]
    Damaged { path: String, why: String },
    #[error(
        "{path}: written under a different [[journey]] config; restoring it would misread its journeys. \
         Finish the old run or move the state folder away"
    )]
    OtherConfig { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The header of a partition snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub partition: i32,
    /// Checkpoint sequence of this partition: outcome files up to it are final.
    pub seq: u64,
    /// Hash of the journeys config the state was built under.
    pub config_hash: u64,
    /// Next offset to consume, per topic.
    pub offsets: BTreeMap<String, i64>,
    /// Largest event time seen, per watermark input (restores them): per
    /// topic, or per source `topic/partition` in repartition mode.
    pub max_seen: BTreeMap<String, i64>,
    /// Repartition mode: next source offset per source `topic/partition`
    /// seen in this group, so records the repartitioner wrote twice (after
    /// its own crash) are recognised and skipped.
    #[serde(default)]
    pub origin_offsets: BTreeMap<String, i64>,
}

/// A snapshot read back.
#[derive(Debug)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    pub shard: Vec<u8>,
}

/// Where partition `p`'s snapshot lives.
pub fn snapshot_path(state_dir: &Path, partition: i32) -> PathBuf {
    state_dir.join(format!("partition-{partition:05}.snap"))
}

/// Writes a snapshot atomically (temporary file, fsync, rename, fsync folder).
pub fn write_snapshot(state_dir: &Path, header: &SnapshotHeader, shard: &[u8]) -> Result<(), CheckpointError> {
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let path = snapshot_path(state_dir, header.partition);
    let tmp = path.with_extension("snap.tmp");
    let head = serde_json::to_vec(header).expect("header serializes");
    let mut bytes = Vec::with_capacity(8 + 4 + head.len() + shard.len() + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(shard);
    let sum = xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(state_dir)
}

/// Reads partition `p`'s snapshot, if there is one.
pub fn read_snapshot(state_dir: &Path, partition: i32, config_hash: u64) -> Result<Option<Snapshot>, CheckpointError> {
    let path = snapshot_path(state_dir, partition);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let damaged = |why: &str| CheckpointError::Damaged {
        path: path.display().to_string(),
        why: why.to_owned(),
    };
    if bytes.len() < 8 + 4 + 8 || &bytes[..8] != MAGIC {
        return Err(damaged("bad magic"));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 8);
    if xxh3_64(body).to_le_bytes() != sum {
        return Err(damaged("checksum mismatch"));
    }
    let head_len = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes")) as usize;
    let head = body.get(12..12 + head_len).ok_or_else(|| damaged("truncated header"))?;
    let header: SnapshotHeader = serde_json::from_slice(head).map_err(|e| damaged(&e.to_string()))?;
    if header.partition != partition {
        return Err(damaged("belongs to another partition"));
    }
    if header.config_hash != config_hash {
        return Err(CheckpointError::OtherConfig {
            path: path.display().to_string(),
        });
    }
    Ok(Some(Snapshot {
        header,
        shard: body[12 + head_len..].to_vec(),
    }))
}

/// The staging folder of partition `p`'s outcome files.
pub fn staging_dir(out: &Path, partition: i32) -> PathBuf {
    out.join(".staging").join(format!("p{partition}"))
}

/// The writer name of partition `p` for checkpoint `seq`.
pub fn writer_name(partition: i32, seq: u64) -> String {
    format!("p{partition}-c{seq}")
}

/// `(partition, seq)` of an outcome file name `part-p<P>-c<S>-<n>.parquet`.
fn parse_name(name: &str) -> Option<(i32, u64)> {
    let rest = name.strip_prefix("part-p")?.strip_suffix(".parquet")?;
    let (p, rest) = rest.split_once("-c")?;
    let (seq, _) = rest.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

fn parquet_files(root: &Path, out: &mut Vec<PathBuf>) -> Result<(), CheckpointError> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(root)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(root))?.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "parquet")
            && !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Moves partition `p`'s staged outcome files into `<out>/outcomes/`, syncing
/// the folders they land in. Returns how many files moved.
pub fn publish(out: &Path, partition: i32) -> Result<usize, CheckpointError> {
    let staging = staging_dir(out, partition);
    let mut files = Vec::new();
    parquet_files(&staging.join("outcomes"), &mut files)?;
    let mut dirs = std::collections::BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&staging).expect("found under staging");
        let target = out.join(rel);
        let dir = target.parent().expect("a file has a folder").to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        fs::rename(file, &target).map_err(io(&target))?;
        dirs.insert(dir);
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    Ok(files.len())
}

/// Recovery of partition `p` at checkpoint `seq`: drops its staging folder
/// and the files of later, unfinished checkpoints. Returns files removed.
pub fn discard_after(out: &Path, partition: i32, seq: u64) -> Result<usize, CheckpointError> {
    let staging = staging_dir(out, partition);
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let mut files = Vec::new();
    parquet_files(&out.join("outcomes"), &mut files)?;
    let mut removed = 0;
    for file in files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if parse_name(name).is_some_and(|(p, s)| p == partition && s > seq) {
            fs::remove_file(&file).map_err(io(&file))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let header = SnapshotHeader {
            partition: 3,
            seq: 7,
            config_hash: 42,
            offsets: [("payments".to_owned(), 1200)].into(),
            max_seen: [("payments".to_owned(), 99)].into(),
            origin_offsets: [("payments/2".to_owned(), 77)].into(),
        };
        write_snapshot(dir.path(), &header, b"shard-bytes").unwrap();
        let snap = read_snapshot(dir.path(), 3, 42).unwrap().unwrap();
        assert_eq!((snap.header, snap.shard.as_slice()), (header, &b"shard-bytes"[..]));
        assert!(read_snapshot(dir.path(), 4, 42).unwrap().is_none());
        assert!(matches!(
            read_snapshot(dir.path(), 3, 43),
            Err(CheckpointError::OtherConfig { .. })
        ));
        let path = snapshot_path(dir.path(), 3);
        let mut bytes = fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 12] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = read_snapshot(dir.path(), 3, 42).unwrap_err().to_string();
        assert!(err.contains("checksum"), "{err}");
    }

    #[test]
    fn recovery_discards_only_unfinished_checkpoints_of_its_partition() {
        let out = tempfile::tempdir().unwrap();
        let day = out.path().join("outcomes/journey=x/date=2026-11-22");
        fs::create_dir_all(&day).unwrap();
        for name in [
            "part-p1-c4-000000.parquet",
            "part-p1-c5-000000.parquet",
            "part-p11-c9-000000.parquet",
            "part-p2-c9-000000.parquet",
        ] {
            fs::write(day.join(name), b"x").unwrap();
        }
        let staged = staging_dir(out.path(), 1).join("outcomes/journey=x/date=2026-11-22");
        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join("part-p1-c6-000000.parquet"), b"x").unwrap();
        assert_eq!(discard_after(out.path(), 1, 4).unwrap(), 1);
        let mut left: Vec<_> = fs::read_dir(&day)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "part-p1-c4-000000.parquet",
                "part-p11-c9-000000.parquet",
                "part-p2-c9-000000.parquet"
            ]
        );
        assert!(!staging_dir(out.path(), 1).exists());

        fs::create_dir_all(&staged).unwrap();
        fs::write(staged.join("part-p1-c5-000000.parquet"), b"x").unwrap();
        assert_eq!(publish(out.path(), 1).unwrap(), 1);
        assert!(day.join("part-p1-c5-000000.parquet").exists());
    }
}
