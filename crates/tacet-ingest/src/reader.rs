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
    /// A pipe or socket (stdin): its lines are handed on as soon as a read
    /// comes back short, so a pause in the input does not hold back the
    /// lines before it until a whole chunk has arrived.
    streaming: bool,
    /// What a streaming input's reads land in (allocated on its first read).
    scratch: Vec<u8>,
}

/// The most one read of a streaming input asks for: a pipe's buffer.
const STREAM_READ: usize = 64 * 1024;

impl Input {
    fn new(name: &str, reader: Box<dyn Read + Send>, streaming: bool) -> Self {
        Self {
            name: Arc::from(name),
            reader,
            carry: Vec::new(),
            next_line: 1,
            done: false,
            skipping: false,
            streaming,
            scratch: Vec::new(),
        }
    }

    /// Reads what a streaming input has now onto `buf`: until `max` bytes
    /// or a read that comes back short (0 bytes: the end).
    fn read_available(&mut self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let mut got = 0;
        while got < max {
            if self.scratch.is_empty() {
                self.scratch = vec![0; STREAM_READ];
            }
            let ask = (max - got).min(STREAM_READ);
            let n = match self.reader.read(&mut self.scratch[..ask]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            buf.extend_from_slice(&self.scratch[..n]);
            got += n;
            if n < ask {
                break;
            }
        }
        Ok(got)
    }
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
            inputs.push(Input::new(path, reader, path == "-"));
        }
        Ok(Self::from_inputs(inputs, chunk_bytes, max_line, total))
    }

    /// Reads from in-memory readers (read whole chunks at a time, as files
    /// are), named for dead letters.
    pub fn from_readers(readers: Vec<(String, Box<dyn Read + Send>)>, chunk_bytes: usize, max_line: usize) -> Self {
        Self::from_named(readers, false, chunk_bytes, max_line)
    }

    /// Reads from pipes or sockets, as stdin is read: the lines a read
    /// brings are handed on when the input pauses, not when a chunk is full.
    pub fn from_streams(readers: Vec<(String, Box<dyn Read + Send>)>, chunk_bytes: usize, max_line: usize) -> Self {
        Self::from_named(readers, true, chunk_bytes, max_line)
    }

    fn from_named(
        readers: Vec<(String, Box<dyn Read + Send>)>,
        streaming: bool,
        chunk_bytes: usize,
        max_line: usize,
    ) -> Self {
        let inputs = readers
            .into_iter()
            .map(|(name, reader)| Input::new(&name, reader, streaming))
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

    /// Whether an input is live (stdin, a pipe): it may pause, so idleness applies.
    pub fn is_streaming(&self) -> bool {
        self.inputs.iter().any(|i| i.streaming)
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
        let mut eof: bool;
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
            let got = if input.streaming {
                // What the stream has now: when that holds whole lines the
                // chunk ends below, so a pause hands them on.
                input.read_available(&mut buf, want - filled)
            } else {
                // read_to_end reads into spare capacity (no zero-filling for
                // files) and retries on EINTR.
                (&mut input.reader).take((want - filled) as u64).read_to_end(&mut buf)
            }
            .map_err(|source| ReadError {
                path: input.name.to_string(),
                source,
            })?;
            // A stream's end is a read that brings nothing; a file's, one
            // that falls short.
            eof = if input.streaming { got == 0 } else { filled + got < want };
            self.bytes_read.fetch_add(got as u64, Ordering::Relaxed);
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

    /// A pipe: each `read` brings one message, and waits for the next.
    struct Pipe {
        rx: std::sync::mpsc::Receiver<Vec<u8>>,
        pending: Vec<u8>,
    }

    impl Read for Pipe {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pending.is_empty() {
                match self.rx.recv() {
                    Ok(bytes) => self.pending = bytes,
                    Err(_) => return Ok(0), // the writer closed it
                }
            }
            let n = out.len().min(self.pending.len());
            out[..n].copy_from_slice(&self.pending[..n]);
            self.pending.drain(..n);
            Ok(n)
        }
    }

    /// Lines read from stdin (or any stream) are handed on while the input
    /// pauses, not held until a whole chunk has arrived; a line cut by the
    /// pause waits for its end; numbering and the last chunk are as for a
    /// file.
    #[test]
    fn a_paused_stream_hands_on_the_lines_it_has() {
        use std::sync::mpsc::{channel, sync_channel};
        use std::time::Duration;
        let (write, rx) = sync_channel::<Vec<u8>>(0);
        let pipe = Box::new(Pipe {
            rx,
            pending: Vec::new(),
        }) as Box<dyn Read + Send>;
        let (chunks_tx, chunks) = channel();
        let reader = std::thread::spawn(move || {
            let mut r = ChunkReader::from_streams(vec![("-".into(), pipe)], 1 << 20, 1 << 20);
            let (mut dead, mut stats) = (Vec::new(), DecodeStats::default());
            while let Some(c) = r.next_chunk(&mut dead, &mut stats).unwrap() {
                chunks_tx.send(c).unwrap();
            }
        });
        let next = || {
            chunks
                .recv_timeout(Duration::from_secs(10))
                .expect("a chunk while the input pauses")
        };
        write.send(b"a\nb\n".to_vec()).unwrap();
        let c = next();
        assert_eq!((&c.bytes[..], c.first_line, c.last), (&b"a\nb\n"[..], 1, false));
        write.send(b"c\nd".to_vec()).unwrap();
        let c = next();
        assert_eq!((&c.bytes[..], c.first_line, c.last), (&b"c\n"[..], 3, false));
        write.send(b"e\n".to_vec()).unwrap();
        let c = next();
        assert_eq!((&c.bytes[..], c.first_line, c.last), (&b"de\n"[..], 4, false));
        drop(write);
        let c = next();
        assert_eq!((&c.bytes[..], c.last), (&b""[..], true));
        reader.join().unwrap();
        assert!(chunks.try_recv().is_err(), "nothing after the last chunk");
    }

    /// A stream that never pauses is cut as a file is: whole lines, all of
    /// them, in order.
    #[test]
    fn a_stream_read_at_once_gives_every_line() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let reader = Box::new(io::Cursor::new(text.clone().into_bytes())) as Box<dyn Read + Send>;
        let mut r = ChunkReader::from_streams(vec![("-".into(), reader)], 4096, 1 << 20);
        let (mut dead, mut stats, mut joined, mut n) = (Vec::new(), DecodeStats::default(), Vec::new(), 0);
        while let Some(c) = r.next_chunk(&mut dead, &mut stats).unwrap() {
            assert!(c.bytes.is_empty() || c.bytes.ends_with(b"\n"));
            assert_eq!(c.first_line, 1 + joined.iter().filter(|&&b| b == b'\n').count() as u64);
            joined.extend_from_slice(&c.bytes);
            n += 1;
        }
        assert_eq!(joined, text.as_bytes());
        assert!(n > 10, "{n} chunks");
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
