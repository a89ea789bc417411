//! What a checkpoint leaves on disk, and how recovery reads it back.
//!
//! Per partition group `p` (partition `p` of every topic):
//! - `state/partition-<p>.snap`: header (checkpoint sequence, the next
//!   offset and largest event time per topic, the hash of what shapes the
//!   state, the outcome files this checkpoint publishes) as JSON, then the
//!   shard snapshot, then an xxh3 checksum of both. Written to a temporary
//!   file, synced, renamed: a reader sees the old or the new snapshot, never
//!   half of one.
//! - outcome files are written under `<out>/.staging/p<p>/` and moved into
//!   `<out>/outcomes/` by the checkpoint that covers them; their names carry
//!   the partition and checkpoint sequence (`part-p3-c12-000000.parquet`).
//!
//! A checkpoint is committed when its snapshot is: the files it publishes
//! are listed in it (the manifest) *before* any of them is moved. So
//! recovery of `p` reads its snapshot (sequence `N`), finishes moving the
//! files of `N`'s manifest that are still staged (a crash between the
//! snapshot and the moves), deletes whatever else is staged (written after
//! `N`, never published) and resumes from the snapshot's offsets.
//! Re-processing from there writes those decisions again, exactly once.
//! Nothing under `outcomes/` is ever deleted: a published file is final.
//! A partition without a snapshot whose outcomes were published by an
//! earlier run is refused ([`CheckpointError::StateMissing`]), since
//! re-deciding it from the committed offsets with empty state would give
//! other rows, silently.

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
        "{path}: written under another shape of state (journey names, steps, acks, deadlines, timeouts, \
         attributes or field mapping changed; descriptions, SLOs and alert settings do not count). \
         Restoring it would misread its journeys. Two safe ways on, neither deletes a published outcome: \
         run the config the snapshot was written under until it is done, or start the changed journeys \
         fresh with a new --out and a new group_id (its consumers read the topics from the earliest \
         offset, or from the offset you reset the new group to)"
    )]
    OtherConfig { path: String },
    #[error(
        "partition {partition} has outcomes published up to checkpoint {seq} under {out}, but no snapshot in \
         {state}: its state (open journeys, offsets) is gone, and deciding it again from the committed offsets \
         would give other rows. Put the state folder back, or start afresh with a new --out and a new group_id"
    )]
    StateMissing {
        partition: i32,
        seq: u64,
        out: String,
        state: String,
    },
    #[error(
        "{path}: listed by checkpoint {seq} of partition {partition} but neither staged nor published; \
         an outcome file was removed by hand"
    )]
    ManifestFileMissing { path: String, partition: i32, seq: u64 },
    #[error(
        "partition {partition}: {attempts} claims in a row lost to other instances committing it; \
         more than one member of the group believes it owns the partition"
    )]
    Contended { partition: i32, attempts: u32 },
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
    /// The outcome files this checkpoint publishes, relative to the
    /// staging folder (`outcomes/journey=…/date=…/part-….parquet`).
    #[serde(default)]
    pub staged: Vec<String>,
    /// The staging folder of `staged`, relative to the output folder.
    #[serde(default)]
    pub staging: String,
    /// The generation of the assignment this state was written under: each
    /// instance that takes the partition over claims the next one.
    #[serde(default)]
    pub generation: u64,
}

/// The hash snapshots carry: of what gives their bytes meaning, in a
/// canonical form (sorted JSON of names and values, not `Debug` text).
/// That is each journey's name, steps, acks, deadline, ack timeout and
/// attributes (their order is their slot), the engine's orphan timeout and
/// late horizon (in the timers and tombstones), and each source's field
/// mapping (what a trace id and an event name are read from). A journey's
/// description, SLO and alert overrides do not count: editing one keeps
/// every snapshot usable.
pub fn state_hash(config: &tacet_core::Config) -> u64 {
    use serde_json::json;
    let journeys: Vec<serde_json::Value> = config
        .journeys
        .iter()
        .map(|j| {
            let attributes: Vec<serde_json::Value> = j
                .attributes
                .iter()
                .map(|(name, spec)| {
                    let (pointer, kind) = match spec {
                        tacet_core::config::AttributeSpec::Pointer(p) => (p.as_str(), None),
                        tacet_core::config::AttributeSpec::Typed(t) => {
                            (t.pointer.as_str(), Some(format!("{:?}", t.kind)))
                        }
                    };
                    json!([name, pointer, kind])
                })
                .collect();
            json!({
                "name": j.name,
                "start": j.start,
                "ack_ok": j.ack_ok,
                "ack_error": j.ack_error,
                "complete": j.complete,
                "deadline_ms": j.deadline.as_millis() as u64,
                "ack_timeout_ms": j.ack_timeout.as_millis() as u64,
                "attributes": attributes,
            })
        })
        .collect();
    let mappings: Vec<serde_json::Value> = config
        .sources
        .iter()
        .map(|s| {
            let f = &s.fields;
            json!([s.name, f.trace_id, f.time, f.event, f.service, f.status, f.event_id])
        })
        .collect();
    let shape = json!({
        "journeys": journeys,
        "orphan_timeout_ms": config.engine.orphan_timeout.map(|d| d.as_millis() as u64),
        "late_horizon_ms": config.engine.late_horizon.as_millis() as u64,
        "mappings": mappings,
    });
    xxh3_64(shape.to_string().as_bytes())
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

/// A snapshot's bytes: magic, header length and JSON, shard, checksum.
fn encode(header: &SnapshotHeader, shard: &[u8]) -> Vec<u8> {
    let head = serde_json::to_vec(header).expect("header serializes");
    let mut bytes = Vec::with_capacity(8 + 4 + head.len() + shard.len() + 8);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(head.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&head);
    bytes.extend_from_slice(shard);
    let sum = xxh3_64(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// Writes a snapshot atomically (temporary file, fsync, rename, fsync folder).
pub fn write_snapshot(state_dir: &Path, header: &SnapshotHeader, shard: &[u8]) -> Result<(), CheckpointError> {
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let path = snapshot_path(state_dir, header.partition);
    let tmp = path.with_extension("snap.tmp");
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&encode(header, shard)).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &path).map_err(io(&path))?;
    sync_dir(state_dir)
}

/// Reads the snapshot (or commit) file at `path` of partition `p`, if it exists.
fn read_snapshot_file(path: &Path, partition: i32, config_hash: u64) -> Result<Option<Snapshot>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
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

/// Reads partition `p`'s snapshot of the single-file layout, if there is one.
pub fn read_snapshot(state_dir: &Path, partition: i32, config_hash: u64) -> Result<Option<Snapshot>, CheckpointError> {
    read_snapshot_file(&snapshot_path(state_dir, partition), partition, config_hash)
}

/// The staging folder of partition `p`'s outcome files (of every generation).
pub fn staging_root(out: &Path, partition: i32) -> PathBuf {
    out.join(".staging").join(format!("p{partition}"))
}

/// The staging folder, relative to the output folder, of partition `p`'s
/// outcome files written under `generation`: each owner stages apart, so a
/// stale owner's files never mix with the current one's.
pub fn staging_rel(partition: i32, generation: u64) -> String {
    format!(".staging/p{partition}/g{generation}")
}

/// The writer name of partition `p` for checkpoint `seq` of `generation`.
pub fn writer_name(partition: i32, generation: u64, seq: u64) -> String {
    format!("p{partition}-g{generation}-c{seq}")
}

/// `(partition, seq)` of an outcome file name `part-p<P>[-g<G>]-c<S>-<n>.parquet`.
fn parse_name(name: &str) -> Option<(i32, u64)> {
    let rest = name.strip_prefix("part-p")?.strip_suffix(".parquet")?;
    let (p, rest) = rest.split_once('-')?;
    let rest = match rest.strip_prefix('g') {
        Some(after) => after.split_once('-')?.1,
        None => rest,
    };
    let (seq, _) = rest.strip_prefix('c')?.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

// ------------------------------------------------------------ the commit log

/// Partition `p`'s commit log: `commit-<N>.snap`, one per checkpoint and
/// per claim, each a whole snapshot.
///
/// A commit is created only if absent (written to a temporary file, synced,
/// then hard-linked to its name: `link` fails if the name exists, atomically,
/// on a local or shared POSIX folder; object storage offers the same as a
/// create-if-absent put). So of two instances that both believe they own
/// `p` — one paused past its session timeout, the other given `p` meanwhile —
/// only one can create commit `N + 1`: the new owner claims the partition
/// by creating the next commit (its generation + 1) before it restores, and
/// the stale owner's next checkpoint finds its commit taken and is refused
/// ([`Commit::Fenced`]): its state is dropped without a write, its staged
/// files are never published. The commit is the checkpoint's commit point;
/// outcome files move into `outcomes/` only after it.
pub fn commit_dir(state_dir: &Path, partition: i32) -> PathBuf {
    state_dir.join(format!("partition-{partition:05}"))
}

fn commit_path(state_dir: &Path, partition: i32, n: u64) -> PathBuf {
    commit_dir(state_dir, partition).join(format!("commit-{n:012}.snap"))
}

/// The numbers of partition `p`'s commits in its log (a few: older ones
/// are cleaned up as new ones are made).
fn commit_numbers(state_dir: &Path, partition: i32) -> Result<Vec<u64>, CheckpointError> {
    let dir = commit_dir(state_dir, partition);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut numbers = Vec::new();
    for entry in entries {
        let name = entry.map_err(io(&dir))?.file_name();
        let n = name
            .to_str()
            .and_then(|n| n.strip_prefix("commit-"))
            .and_then(|n| n.strip_suffix(".snap"))
            .and_then(|n| n.parse::<u64>().ok());
        numbers.extend(n);
    }
    Ok(numbers)
}

/// The number of partition `p`'s latest commit (0: none).
pub fn latest_commit(state_dir: &Path, partition: i32) -> Result<u64, CheckpointError> {
    Ok(commit_numbers(state_dir, partition)?.into_iter().max().unwrap_or(0))
}

/// Partition `p`'s latest committed state: (commit number, snapshot), the
/// snapshot's shard empty for a partition claimed before any checkpoint.
/// Falls back to the single-file snapshot of earlier versions.
pub fn read_latest(
    state_dir: &Path,
    partition: i32,
    config_hash: u64,
) -> Result<Option<(u64, Snapshot)>, CheckpointError> {
    // A commit read between its listing and a concurrent clean-up is gone:
    // look again (there is a newer one).
    for _ in 0..16 {
        let n = latest_commit(state_dir, partition)?;
        if n == 0 {
            return Ok(read_snapshot(state_dir, partition, config_hash)?.map(|s| (0, s)));
        }
        if let Some(snap) = read_snapshot_file(&commit_path(state_dir, partition, n), partition, config_hash)? {
            return Ok(Some((n, snap)));
        }
    }
    Err(CheckpointError::Damaged {
        path: commit_dir(state_dir, partition).display().to_string(),
        why: "its latest commit keeps disappearing".into(),
    })
}

/// What [`try_commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Created: the checkpoint is committed.
    Made,
    /// The number was taken: another instance owns the partition now.
    Fenced,
}

/// Creates commit `n` of partition `header.partition` if it does not exist
/// yet, then forgets commits older than the one before it.
pub fn try_commit(state_dir: &Path, n: u64, header: &SnapshotHeader, shard: &[u8]) -> Result<Commit, CheckpointError> {
    let dir = commit_dir(state_dir, header.partition);
    fs::create_dir_all(&dir).map_err(io(&dir))?;
    // Commits older than the one before the latest are deleted, so a free
    // name proves nothing by itself: a commit at or past `n` means `n` was
    // passed.
    if latest_commit(state_dir, header.partition)? >= n {
        return Ok(Commit::Fenced);
    }
    let path = commit_path(state_dir, header.partition, n);
    let tmp = dir.join(format!(
        ".commit-{n:012}.{}.{}.tmp",
        std::process::id(),
        header.generation
    ));
    let mut file = fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(&encode(header, shard)).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Commit::Fenced),
        Err(e) => return Err(io(&path)(e)),
    }
    sync_dir(&dir)?;
    // Paused between the check above and the link, this instance may have
    // linked a number another one had passed and cleaned up: a commit past
    // `n` says so. Commit `n` is then not the latest and is never read;
    // whoever made the later one restored from a commit before it, or
    // from `n` itself, whose files it publishes.
    let numbers = commit_numbers(state_dir, header.partition)?;
    if numbers.iter().any(|&m| m > n) {
        return Ok(Commit::Fenced);
    }
    // Only the latest commit is read; the one before it stays for a reader
    // that listed the folder just before this one appeared. What the
    // listing shows older goes (a stale owner's refused commit included),
    // so each checkpoint removes a file or two, however long the log.
    for old in numbers.into_iter().filter(|&m| m + 1 < n) {
        let old = commit_path(state_dir, header.partition, old);
        match fs::remove_file(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&old)(e)),
        }
    }
    Ok(Commit::Made)
}

/// Partition `p` taken over: its latest committed state, re-committed as
/// the next commit under the next generation, so that a former owner's
/// next checkpoint is refused. Returns the claim's commit number and the
/// state (its shard empty when nothing was ever checkpointed).
pub fn claim(state_dir: &Path, partition: i32, config_hash: u64) -> Result<(u64, Snapshot), CheckpointError> {
    for _ in 0..CLAIM_ATTEMPTS {
        let (n, base) = match read_latest(state_dir, partition, config_hash)? {
            Some((n, snap)) => (n, snap),
            None => (
                0,
                Snapshot {
                    header: SnapshotHeader {
                        partition,
                        config_hash,
                        ..Default::default()
                    },
                    shard: Vec::new(),
                },
            ),
        };
        let mut header = base.header.clone();
        header.generation += 1;
        if try_commit(state_dir, n + 1, &header, &base.shard)? == Commit::Made {
            return Ok((
                n + 1,
                Snapshot {
                    header,
                    shard: base.shard,
                },
            ));
        }
        // Another instance claimed or committed first: look again.
    }
    Err(CheckpointError::Contended {
        partition,
        attempts: CLAIM_ATTEMPTS,
    })
}

/// Claims of one partition tried before giving up: each lost attempt means
/// another instance committed in between, which a rebalance settles.
const CLAIM_ATTEMPTS: u32 = 64;

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

/// The outcome files staged in `staging` (relative to `out`), relative to
/// it: the manifest of the checkpoint being taken.
pub fn staged_files(out: &Path, staging: &str) -> Result<Vec<String>, CheckpointError> {
    let staging = out.join(staging);
    let mut files = Vec::new();
    parquet_files(&staging.join("outcomes"), &mut files)?;
    let mut names: Vec<String> = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&staging).expect("found under staging");
            rel.to_string_lossy().into_owned()
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Moves the files of checkpoint `header`'s manifest from partition `p`'s
/// staging folder into `<out>/outcomes/`, syncing the folders they land
/// in. A file already moved (a publication interrupted and resumed) is
/// left where it is. Returns how many files moved.
pub fn publish(out: &Path, header: &SnapshotHeader) -> Result<usize, CheckpointError> {
    let staging = if header.staging.is_empty() {
        staging_root(out, header.partition)
    } else {
        out.join(&header.staging)
    };
    let mut dirs = std::collections::BTreeSet::new();
    let mut moved = 0;
    for name in &header.staged {
        let from = staging.join(name);
        let target = out.join(name);
        if !from.exists() {
            if target.exists() {
                continue;
            }
            return Err(CheckpointError::ManifestFileMissing {
                path: target.display().to_string(),
                partition: header.partition,
                seq: header.seq,
            });
        }
        let dir = target.parent().expect("a file has a folder").to_path_buf();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        fs::rename(&from, &target).map_err(io(&target))?;
        dirs.insert(dir);
        moved += 1;
    }
    for dir in &dirs {
        sync_dir(dir)?;
    }
    Ok(moved)
}

/// Recovery of a partition from its claimed state `header`: finishes
/// publishing the manifest of the checkpoint it was taken at, then drops
/// what else is staged (outcome files of checkpoints that never committed,
/// or of a former owner). Returns the staged files dropped. Never deletes a
/// published file.
pub fn recover(out: &Path, header: &SnapshotHeader) -> Result<usize, CheckpointError> {
    publish(out, header)?;
    let staging = staging_root(out, header.partition);
    let mut dropped = Vec::new();
    parquet_files(&staging, &mut dropped)?;
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    Ok(dropped.len())
}

/// A partition about to start without any committed state: refused if an
/// earlier run published outcomes of it (see the module docs).
pub fn refuse_missing_state(out: &Path, state_dir: &Path, partition: i32) -> Result<(), CheckpointError> {
    match published_checkpoint(out, partition)? {
        Some(seq) => Err(CheckpointError::StateMissing {
            partition,
            seq,
            out: out.display().to_string(),
            state: state_dir.display().to_string(),
        }),
        None => Ok(()),
    }
}

/// The latest checkpoint that published an outcome file of partition `p`.
fn published_checkpoint(out: &Path, partition: i32) -> Result<Option<u64>, CheckpointError> {
    let mut files = Vec::new();
    parquet_files(&out.join("outcomes"), &mut files)?;
    Ok(files
        .iter()
        .filter_map(|f| parse_name(f.file_name()?.to_str()?))
        .filter(|(p, _)| *p == partition)
        .map(|(_, seq)| seq)
        .max())
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
            staged: vec!["outcomes/journey=x/date=2026-11-22/part-p3-g2-c7-000000.parquet".into()],
            staging: ".staging/p3/g2".into(),
            generation: 2,
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

    /// Writes an empty outcome file at `root/rel`.
    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    fn names_under(dir: &Path) -> Vec<String> {
        let mut files = Vec::new();
        parquet_files(dir, &mut files).unwrap();
        let mut names: Vec<String> = files
            .iter()
            .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    const DAY: &str = "outcomes/journey=x/date=2026-11-22";

    /// A crash between a checkpoint's snapshot and the moves of its files:
    /// recovery finishes the moves, drops what was staged after the
    /// snapshot, and leaves every published file (of any partition) alone.
    #[test]
    fn recovery_publishes_the_manifest_drops_the_rest_and_deletes_nothing_published() {
        let out = tempfile::tempdir().unwrap();
        let state = out.path().join("state");
        for name in [
            "part-p1-c4-000000.parquet",
            "part-p1-c9-000000.parquet",
            "part-p2-c9-000000.parquet",
        ] {
            touch(out.path(), &format!("{DAY}/{name}"));
        }
        let staging = out.path().join(staging_rel(1, 3));
        touch(&staging, &format!("{DAY}/part-p1-c5-000000.parquet"));
        touch(&staging, &format!("{DAY}/part-p1-c6-000000.parquet"));
        // A former owner's staged file, never committed.
        touch(
            &out.path().join(staging_rel(1, 2)),
            &format!("{DAY}/part-p1-g2-c5-000000.parquet"),
        );
        let header = SnapshotHeader {
            partition: 1,
            seq: 5,
            staged: vec![format!("{DAY}/part-p1-c5-000000.parquet")],
            staging: staging_rel(1, 3),
            generation: 3,
            ..Default::default()
        };
        assert_eq!(
            recover(out.path(), &header).unwrap(),
            2,
            "c6 never committed, nor g2's file"
        );
        assert_eq!(
            names_under(&out.path().join("outcomes")),
            [
                "part-p1-c4-000000.parquet",
                "part-p1-c5-000000.parquet",
                "part-p1-c9-000000.parquet",
                "part-p2-c9-000000.parquet"
            ]
        );
        assert!(!staging_root(out.path(), 1).exists());
        // Recovering again is a no-op: the manifest's file is published.
        assert_eq!(recover(out.path(), &header).unwrap(), 0);
        let _ = state;
    }

    /// No snapshot but published outcomes: refused, naming the partition
    /// and what to do; nothing is deleted. No snapshot and nothing
    /// published is a fresh start.
    #[test]
    fn a_partition_with_published_outcomes_and_no_snapshot_is_refused() {
        let out = tempfile::tempdir().unwrap();
        let state = out.path().join("state");
        touch(out.path(), &format!("{DAY}/part-p3-c7-000000.parquet"));
        touch(
            &staging_root(out.path(), 3),
            &format!("{DAY}/part-p3-c8-000000.parquet"),
        );
        let err = refuse_missing_state(out.path(), &state, 3).unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::StateMissing {
                    partition: 3,
                    seq: 7,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("Put the state folder back"), "{err}");
        assert_eq!(names_under(&out.path().join("outcomes")), ["part-p3-c7-000000.parquet"]);
        refuse_missing_state(out.path(), &state, 4).expect("partition 4 starts fresh");
    }

    /// Two instances that both believe they own a partition: the one that
    /// claims it last holds it; the other's next commit is refused, and a
    /// claim restores the latest committed state whoever committed it.
    #[test]
    fn a_claim_fences_the_former_owner_and_restores_the_latest_commit() {
        let state = tempfile::tempdir().unwrap();
        let state = state.path();
        let (a, fresh) = claim(state, 5, 42).unwrap();
        assert_eq!((a, fresh.header.generation, fresh.shard.len()), (1, 1, 0));
        let mut header = fresh.header.clone();
        header.seq = 1;
        assert_eq!(try_commit(state, a + 1, &header, b"state-a").unwrap(), Commit::Made);
        // B takes over: generation 2, from A's commit.
        let (b, taken) = claim(state, 5, 42).unwrap();
        assert_eq!(
            (b, taken.header.generation, taken.shard.as_slice()),
            (3, 2, &b"state-a"[..])
        );
        // A, stale, tries its next commit: refused.
        header.seq = 2;
        assert_eq!(try_commit(state, a + 2, &header, b"stale").unwrap(), Commit::Fenced);
        let (n, latest) = read_latest(state, 5, 42).unwrap().unwrap();
        assert_eq!(
            (n, latest.header.generation, latest.shard.as_slice()),
            (3, 2, &b"state-a"[..])
        );
        // Old commits are forgotten; the latest two stay.
        let mut header = taken.header.clone();
        for seq in 2..5 {
            header.seq = seq;
            assert_eq!(
                try_commit(state, b + seq - 1, &header, b"state-b").unwrap(),
                Commit::Made
            );
        }
        assert_eq!(fs::read_dir(commit_dir(state, 5)).unwrap().count(), 2);
        // A's next number was cleaned up by B: free, but passed. Refused.
        assert!(!commit_path(state, 5, a + 2).exists());
        assert_eq!(
            try_commit(state, a + 2, &fresh.header, b"stale").unwrap(),
            Commit::Fenced
        );
        // A stale file the pre-check missed (linked below the latest, as
        // after a pause between check and link) goes with the next commit.
        fs::copy(commit_path(state, 5, b + 3), commit_path(state, 5, a + 2)).unwrap();
        header.seq = 5;
        assert_eq!(try_commit(state, b + 4, &header, b"state-b").unwrap(), Commit::Made);
        let mut left = commit_numbers(state, 5).unwrap();
        left.sort_unstable();
        assert_eq!(left, [b + 3, b + 4]);
    }

    /// The snapshot hash follows what shapes the state and nothing else:
    /// every such field changes it, a description, an SLO or alert
    /// overrides do not.
    #[test]
    fn the_state_hash_changes_with_the_shape_of_state_only() {
        let base = tacet_core::Config::embedded_default();
        let hash = state_hash(&base);
        let same: [fn(&mut tacet_core::Config); 3] = [
            |c| c.journeys[0].slo = 0.5,
            |c| c.journeys[0].description = Some("another text".into()),
            |c| c.alerts.update_interval = std::time::Duration::from_secs(1),
        ];
        for (i, edit) in same.iter().enumerate() {
            let mut c = base.clone();
            edit(&mut c);
            assert_eq!(state_hash(&c), hash, "edit {i} keeps the snapshots");
        }
        let shaping: [fn(&mut tacet_core::Config); 8] = [
            |c| c.journeys[0].name.push('x'),
            |c| c.journeys[0].complete.push("extra.step".into()),
            |c| c.journeys[0].ack_ok.push("extra.ack".into()),
            |c| c.journeys[0].deadline += std::time::Duration::from_secs(1),
            |c| c.journeys[0].ack_timeout += std::time::Duration::from_secs(1),
            |c| {
                c.journeys[0].attributes.insert(
                    "extra".into(),
                    tacet_core::config::AttributeSpec::Pointer("/extra".into()),
                );
            },
            |c| c.engine.late_horizon += std::time::Duration::from_secs(1),
            |c| c.sources[0].fields.trace_id = "/traceparent".into(),
        ];
        for (i, edit) in shaping.iter().enumerate() {
            let mut c = base.clone();
            edit(&mut c);
            assert_ne!(state_hash(&c), hash, "edit {i} refuses the snapshots");
        }
    }

    #[test]
    fn outcome_file_names_of_both_layouts_parse() {
        assert_eq!(parse_name("part-p3-c12-000000.parquet"), Some((3, 12)));
        assert_eq!(parse_name("part-p3-g2-c12-000001.parquet"), Some((3, 12)));
        assert_eq!(parse_name("part-run-s1-0.parquet"), None);
    }

    /// A manifest file that is neither staged nor published was removed by
    /// hand: an error, not a silent gap.
    #[test]
    fn a_manifest_file_gone_from_both_places_is_an_error() {
        let out = tempfile::tempdir().unwrap();
        let header = SnapshotHeader {
            partition: 1,
            seq: 2,
            staged: vec![format!("{DAY}/part-p1-c2-000000.parquet")],
            ..Default::default()
        };
        assert!(matches!(
            publish(out.path(), &header),
            Err(CheckpointError::ManifestFileMissing { .. })
        ));
    }
}
