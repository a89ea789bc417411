//! NDJSON input cut into line-aligned chunks. Several files are read
//! round-robin, each its own partition, so that their event times advance
//! together instead of one file finishing before the next begins.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Deref;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::deadletter::{DeadLetter, DecodeError};
use crate::decode::DecodeStats;

/// A run of whole lines from one input.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Order in the whole input (over all partitions).
    pub seq: u64,
    /// Which input this came from.
    pub partition: u32,
    /// The input's name (file path, or `-` for stdin).
    pub source: Arc<str>,
    /// Line number (1-based) of the chunk's first line.
    pub first_line: u64,
    /// Whole lines; the last may lack its newline at end of input.
    pub bytes: Arc<ChunkBytes>,
    /// The input ends with this chunk.
    pub last: bool,
}

/// Free chunk buffers, reused so that reading does not fault in fresh pages
/// for every megabyte.
type Pool = Arc<Mutex<Vec<Vec<u8>>>>;

/// Buffers kept for reuse; more than the chunks ever in flight.
const POOLED: usize = 64;

/// The bytes of a chunk, shared (not copied) by every batch cut from it. The
/// buffer goes back to its reader's pool when the last batch is done.
#[derive(Debug, Default)]
pub struct ChunkBytes {
    buf: Vec<u8>,
    pool: Option<Pool>,
}

impl From<Vec<u8>> for ChunkBytes {
    fn from(buf: Vec<u8>) -> Self {
        Self { buf, pool: None }
    }
}

impl Deref for ChunkBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for ChunkBytes {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool
            && let Ok(mut free) = pool.lock()
            && free.len() < POOLED
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

struct Input {
    name: Arc<str>,
    reader: Box<dyn Read + Send>,
    carry: Vec<u8>,
    next_line: u64,
    done: bool,
    /// Inside an oversized line: drop bytes until the next newline.
    skipping: bool,
}

/// Reads inputs as chunks of about `chunk_bytes`.
pub struct ChunkReader {
    inputs: Vec<Input>,
    next_seq: u64,
    turn: usize,
    chunk_bytes: usize,
    max_line: usize,
    bytes_read: Arc<AtomicU64>,
    total_bytes: Option<u64>,
    pool: Pool,
}

/// An input that cannot be opened or read, with its name.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ReadError {
    pub path: String,
    pub source: io::Error,
}

impl ChunkReader {
    /// Opens `paths` (`-` is stdin). Fails naming the first that cannot be opened.
    pub fn open(paths: &[String], chunk_bytes: usize, max_line: usize) -> Result<Self, ReadError> {
        let mut inputs = Vec::new();
        let mut total = Some(0u64);
        for path in paths {
            let reader: Box<dyn Read + Send> = if path == "-" {
                total = None;
                Box::new(io::stdin())
            } else {
                let file = File::open(Path::new(path)).map_err(|source| ReadError {
                    path: path.clone(),
                    source,
                })?;
                let len = file.metadata().map(|m| m.len()).ok();
                total = total.zip(len).map(|(a, b)| a + b);
                Box::new(file)
            };
            inputs.push(Input {
                name: Arc::from(path.as_str()),
                reader,
                carry: Vec::new(),
                next_line: 1,
                done: false,
                skipping: false,
            });
        }
        Ok(Self::from_inputs(inputs, chunk_bytes, max_line, total))
    }

    /// Reads from in-memory or custom readers, named for dead letters.
    pub fn from_readers(readers: Vec<(String, Box<dyn Read + Send>)>, chunk_bytes: usize, max_line: usize) -> Self {
        let inputs = readers
            .into_iter()
            .map(|(name, reader)| Input {
                name: Arc::from(name.as_str()),
                reader,
                carry: Vec::new(),
                next_line: 1,
                done: false,
                skipping: false,
            })
            .collect();
        Self::from_inputs(inputs, chunk_bytes, max_line, None)
    }

    fn from_inputs(inputs: Vec<Input>, chunk_bytes: usize, max_line: usize, total_bytes: Option<u64>) -> Self {
        Self {
            inputs,
            next_seq: 0,
            turn: 0,
            chunk_bytes: chunk_bytes.max(1024),
            max_line,
            bytes_read: Arc::new(AtomicU64::new(0)),
            total_bytes,
            pool: Pool::default(),
        }
    }

    /// Number of partitions (inputs).
    pub fn partitions(&self) -> usize {
        self.inputs.len()
    }

    /// Bytes read so far, for progress bars.
    pub fn progress(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// Total bytes when every input is a file.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// The next chunk, round-robin over inputs; `None` when all have ended.
    /// Lines longer than `max_line` that do not fit a chunk are dead-lettered here.
    pub fn next_chunk(
        &mut self,
        dead: &mut Vec<DeadLetter>,
        stats: &mut DecodeStats,
    ) -> Result<Option<Chunk>, ReadError> {
        let n = self.inputs.len();
        for _ in 0..n {
            let p = self.turn % n;
            self.turn += 1;
            if self.inputs[p].done {
                continue;
            }
            let chunk = self.read_chunk(p, dead, stats)?;
            return Ok(Some(chunk));
        }
        Ok(None)
    }

    fn read_chunk(
        &mut self,
        p: usize,
        dead: &mut Vec<DeadLetter>,
        stats: &mut DecodeStats,
    ) -> Result<Chunk, ReadError> {
        let chunk_bytes = self.chunk_bytes;
        let max_line = self.max_line;
        let mut buf = self
            .pool
            .lock()
            .ok()
            .and_then(|mut free| free.pop())
            .unwrap_or_default();
        buf.clear();
        let input = &mut self.inputs[p];
        buf.extend_from_slice(&input.carry);
        input.carry.clear();
        let mut eof = false;
        let mut first = true;
        loop {
            // Fill up to chunk_bytes; grow by as much again while no line ends.
            let filled = buf.len();
            let want = if first {
                chunk_bytes.max(filled + 1)
            } else {
                filled + chunk_bytes
            };
            first = false;
            buf.reserve(want - filled);
            // read_to_end reads into spare capacity (no zero-filling for files)
            // and retries on EINTR.
            let got = (&mut input.reader)
                .take((want - filled) as u64)
                .read_to_end(&mut buf)
                .map_err(|source| ReadError {
                    path: input.name.to_string(),
                    source,
                })?;
            self.bytes_read.fetch_add(got as u64, Ordering::Relaxed);
            if filled + got < want {
                eof = true;
            }
            if input.skipping {
                match memchr::memchr(b'\n', &buf) {
                    Some(i) => {
                        buf.drain(..=i);
                        input.skipping = false;
                        input.next_line += 1;
                    }
                    None => {
                        buf.clear();
                        if eof {
                            break;
                        }
                        continue;
                    }
                }
            }
            if eof || memchr::memrchr(b'\n', &buf).is_some() {
                break;
            }
            if buf.len() > max_line {
                // One line longer than allowed and no end in sight: refuse it
                // now and skip to its end, so memory stays bounded.
                stats.records += 1;
                stats.errors[DecodeError::OversizedLine.index()] += 1;
                let position = format!("{}:{}", input.name, input.next_line);
                dead.push(DeadLetter::new(&input.name, position, DecodeError::OversizedLine, &buf));
                buf.clear();
                input.skipping = true;
            }
        }
        let cut = if eof {
            buf.len()
        } else {
            memchr::memrchr(b'\n', &buf).map_or(buf.len(), |i| i + 1)
        };
        input.carry.extend_from_slice(&buf[cut..]);
        buf.truncate(cut);
        let first_line = input.next_line;
        input.next_line += memchr::memchr_iter(b'\n', &buf).count() as u64;
        input.done = eof && input.carry.is_empty();
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(Chunk {
            seq,
            partition: p as u32,
            source: input.name.clone(),
            first_line,
            bytes: Arc::new(ChunkBytes {
                buf,
                pool: Some(self.pool.clone()),
            }),
            last: input.done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(inputs: Vec<(&str, &str)>, chunk: usize, max_line: usize) -> (Vec<Chunk>, Vec<DeadLetter>) {
        let readers = inputs
            .into_iter()
            .map(|(n, t)| {
                (
                    n.to_string(),
                    Box::new(io::Cursor::new(t.as_bytes().to_vec())) as Box<dyn Read + Send>,
                )
            })
            .collect();
        let mut r = ChunkReader::from_readers(readers, chunk, max_line);
        let (mut out, mut dead, mut stats) = (Vec::new(), Vec::new(), DecodeStats::default());
        while let Some(c) = r.next_chunk(&mut dead, &mut stats).unwrap() {
            out.push(c);
        }
        (out, dead)
    }

    #[test]
    fn chunks_are_line_aligned_and_numbered() {
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        let (cs, dead) = chunks(vec![("a", &text)], 1024, 1 << 20);
        assert!(dead.is_empty());
        assert!(cs.len() > 10);
        let mut expect = 1;
        for c in &cs {
            assert_eq!(c.first_line, expect);
            assert!(c.bytes.is_empty() || c.bytes.ends_with(b"\n"));
            let first = std::str::from_utf8(&c.bytes).unwrap().lines().next();
            if let Some(first) = first {
                assert_eq!(first, format!("line {}", expect - 1));
            }
            expect += c.bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        assert!(cs.last().unwrap().last);
        let joined: Vec<u8> = cs.iter().flat_map(|c| c.bytes.iter().copied()).collect();
        assert_eq!(joined, text.as_bytes());
    }

    #[test]
    fn inputs_alternate_and_last_line_needs_no_newline() {
        let (cs, _) = chunks(vec![("a", "x\ny"), ("b", "z\n")], 1024, 1 << 20);
        let parts: Vec<_> = cs.iter().map(|c| (c.partition, c.last)).collect();
        assert_eq!(parts, [(0, true), (1, true)]);
        assert_eq!(&cs[0].bytes[..], b"x\ny");
    }

    #[test]
    fn oversized_line_is_dead_lettered_and_skipped() {
        let long = "x".repeat(300_000);
        let text = format!("ok 1\n{long}\nok 3\n");
        let (cs, dead) = chunks(vec![("f", &text)], 1024, 100_000);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].position, "f:2");
        assert!(dead[0].truncated);
        let joined: String = cs.iter().map(|c| std::str::from_utf8(&c.bytes).unwrap()).collect();
        assert_eq!(joined, "ok 1\nok 3\n");
        let c3 = cs.iter().find(|c| c.bytes.starts_with(b"ok 3")).unwrap();
        assert_eq!(c3.first_line, 3);
    }
}
