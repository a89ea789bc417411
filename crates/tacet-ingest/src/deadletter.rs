//! Bad input: why it was refused and where it came from.

use serde::Serialize;

/// Why an input record could not become an event. Each is counted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum DecodeError {
    #[error("not a JSON object")]
    NotJson,
    #[error("not valid UTF-8")]
    InvalidUtf8,
    #[error("no trace id")]
    MissingTraceId,
    #[error("no event time")]
    MissingTime,
    #[error("no event name")]
    MissingEvent,
    #[error("event time is neither RFC 3339 nor epoch milliseconds")]
    BadTime,
    #[error("status is not ok/error/success/failure or an HTTP-like code")]
    BadStatus,
    #[error("line longer than engine.max_line_bytes")]
    OversizedLine,
    #[error("event time later than the wall clock + engine.max_future_skew")]
    TimeInFuture,
    #[error("trace id longer than 256 bytes")]
    TraceIdTooLong,
}

impl DecodeError {
    /// Every reason, in report order.
    pub const ALL: [DecodeError; 10] = [
        DecodeError::NotJson,
        DecodeError::InvalidUtf8,
        DecodeError::MissingTraceId,
        DecodeError::MissingTime,
        DecodeError::MissingEvent,
        DecodeError::BadTime,
        DecodeError::BadStatus,
        DecodeError::OversizedLine,
        DecodeError::TimeInFuture,
        DecodeError::TraceIdTooLong,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::NotJson => "not_json",
            DecodeError::InvalidUtf8 => "invalid_utf8",
            DecodeError::MissingTraceId => "missing_trace_id",
            DecodeError::MissingTime => "missing_time",
            DecodeError::MissingEvent => "missing_event",
            DecodeError::BadTime => "bad_time",
            DecodeError::BadStatus => "bad_status",
            DecodeError::OversizedLine => "oversized_line",
            DecodeError::TimeInFuture => "time_in_future",
            DecodeError::TraceIdTooLong => "trace_id_too_long",
        }
    }

    /// Index into counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Longest excerpt of a bad record kept in the dead-letter file.
pub const MAX_EXCERPT: usize = 4096;

/// One refused record, as written (one JSON object per line) to the
/// dead-letter file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    /// Source name (file path, or Kafka topic).
    pub source: String,
    /// `file:line` or `topic/partition/offset`.
    pub position: String,
    /// Why it was refused.
    pub reason: DecodeError,
    /// The record, lossily decoded and cut at [`MAX_EXCERPT`] bytes.
    pub record: String,
    /// Whether `record` was cut.
    pub truncated: bool,
}

impl DeadLetter {
    /// A dead letter for `bytes` at `position`.
    pub fn new(source: &str, position: String, reason: DecodeError, bytes: &[u8]) -> Self {
        let cut = bytes.len().min(MAX_EXCERPT);
        Self {
            source: source.to_owned(),
            position,
            reason,
            record: String::from_utf8_lossy(&bytes[..cut]).into_owned(),
            truncated: cut < bytes.len(),
        }
    }
}

/// How large the dead-letter file may grow: past `max_bytes` it is rotated
/// (`dead-letter.ndjson` → `dead-letter.1.ndjson` → …), keeping `keep`
/// rotated files; the oldest beyond them is deleted and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterLimits {
    pub max_bytes: u64,
    pub keep: usize,
}

impl DeadLetterLimits {
    /// The bounds `[output]` sets (`dead_letter_max_bytes`,
    /// `dead_letter_files`), the same for replay and `tacet run`.
    pub fn from_config(output: &tacet_core::config::OutputConfig) -> Self {
        Self {
            max_bytes: output.dead_letter_max_bytes,
            keep: output.dead_letter_files,
        }
    }
}

/// Something the dead-letter file did that an operator should see (the
/// engine counts these on /metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterNotice {
    /// The file reached its size cap and was rotated.
    Rotated,
    /// The oldest rotated file was deleted (its letters are gone).
    FileDropped,
    /// A write found the disk full: writing pauses and retries until there
    /// is room (backpressure), never crashes and never skips a letter.
    DiskFull,
}

impl DeadLetterNotice {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterNotice::Rotated => "rotated",
            DeadLetterNotice::FileDropped => "file_dropped",
            DeadLetterNotice::DiskFull => "disk_full",
        }
    }
}

/// Counts of [`DeadLetterNotice`]s and letters written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DeadLetterStats {
    pub written: u64,
    pub rotations: u64,
    pub files_dropped: u64,
    pub disk_full_pauses: u64,
}

/// Receives each [`DeadLetterNotice`] as it happens.
pub type NoticeHook = Box<dyn Fn(DeadLetterNotice) + Send>;

/// Where the live file's bytes go: a file, or in tests a disk that fills up.
pub trait LetterOut: std::io::Write + Send {
    /// Makes what was written durable.
    fn sync_data(&self) -> std::io::Result<()>;
}

impl LetterOut for std::fs::File {
    fn sync_data(&self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

/// `<dir>/dead-letter.ndjson`, the one writer of refused records for replay
/// and `tacet run`: bounded in size by rotation, and paused (not failed) on
/// a full disk, so that a flood of bad input can neither fill the disk nor
/// turn into a crash loop that loses the input position.
pub struct DeadLetterFile {
    dir: std::path::PathBuf,
    limits: DeadLetterLimits,
    file: Option<Box<dyn LetterOut>>,
    /// Bytes in the current file, written or pending.
    bytes: u64,
    pending: Vec<u8>,
    stats: DeadLetterStats,
    hook: Option<NoticeHook>,
    /// First pause on a full disk; doubles up to [`MAX_DISK_FULL_PAUSE`].
    pause: std::time::Duration,
}

/// Pending bytes written out at once.
const PENDING_FLUSH: usize = 64 << 10;
/// The longest wait between two writes to a full disk.
const MAX_DISK_FULL_PAUSE: std::time::Duration = std::time::Duration::from_secs(30);

impl DeadLetterFile {
    /// The file name of rotated file `n` (0 is the live file).
    pub fn file_name(n: usize) -> String {
        if n == 0 {
            "dead-letter.ndjson".to_owned()
        } else {
            format!("dead-letter.{n}.ndjson")
        }
    }

    /// A writer into `dir`, appending to what an earlier run left (`tacet
    /// run` resumes) or, with `fresh`, starting an empty file (a replay).
    pub fn open(dir: &std::path::Path, limits: DeadLetterLimits, fresh: bool) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(Self::file_name(0));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(!fresh)
            .write(true)
            .truncate(fresh)
            .open(&path)?;
        let bytes = file.metadata()?.len();
        Ok(Self {
            dir: dir.to_owned(),
            limits,
            file: Some(Box::new(file)),
            bytes,
            pending: Vec::new(),
            stats: DeadLetterStats::default(),
            hook: None,
            pause: std::time::Duration::from_millis(100),
        })
    }

    /// Calls `hook` at each notice (metrics).
    pub fn with_hook(mut self, hook: NoticeHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Pauses on a full disk start at `pause` (tests use a short one).
    pub fn with_first_pause(mut self, pause: std::time::Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Writes the live file's bytes to `out` instead (fault injection in
    /// tests: a disk that fills up).
    pub fn with_output(mut self, out: Box<dyn LetterOut>) -> Self {
        self.file = Some(out);
        self
    }

    /// Appends one record as a line.
    pub fn write(&mut self, record: &impl Serialize) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        if self.bytes > 0 && self.bytes + len > self.limits.max_bytes {
            self.rotate()?;
        }
        self.pending.extend_from_slice(&line);
        self.bytes += len;
        self.stats.written += 1;
        if self.pending.len() >= PENDING_FLUSH {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Writes out what is pending and makes it durable.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        match &self.file {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Writes out what is pending (a replay's end; durability is `sync`'s).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()
    }

    /// What was written, rotated and paused on.
    pub fn stats(&self) -> DeadLetterStats {
        self.stats
    }

    fn notice(&mut self, notice: DeadLetterNotice) {
        match notice {
            DeadLetterNotice::Rotated => self.stats.rotations += 1,
            DeadLetterNotice::FileDropped => self.stats.files_dropped += 1,
            DeadLetterNotice::DiskFull => self.stats.disk_full_pauses += 1,
        }
        if let Some(hook) = &self.hook {
            hook(notice);
        }
    }

    /// Writes every pending byte, waiting for room on a full disk.
    fn write_pending(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let mut done = 0;
        let mut paused = false;
        let mut pause = self.pause;
        while done < self.pending.len() {
            let file = self.file.as_mut().expect("the live file is open between rotations");
            match file.write(&self.pending[done..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
                    if !paused {
                        paused = true;
                        self.notice(DeadLetterNotice::DiskFull);
                        tracing::error!(
                            dir = %self.dir.display(),
                            pending_bytes = self.pending.len() - done,
                            "The disk of the dead-letter file is full: input waits until there is room."
                        );
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(MAX_DISK_FULL_PAUSE);
                }
                Err(e) => return Err(e),
            }
        }
        if paused {
            tracing::warn!(dir = %self.dir.display(), "The dead-letter file has room again.");
        }
        self.pending.clear();
        Ok(())
    }

    /// Moves the live file to `.1`, `.1` to `.2`, …, deleting the oldest
    /// beyond `keep`, and starts an empty live file.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        self.file = None;
        let dir = self.dir.clone();
        let path = |n: usize| dir.join(Self::file_name(n));
        let keep = self.limits.keep;
        if keep == 0 {
            std::fs::remove_file(path(0))?;
            self.notice(DeadLetterNotice::FileDropped);
        } else {
            if path(keep).exists() {
                std::fs::remove_file(path(keep))?;
                self.notice(DeadLetterNotice::FileDropped);
            }
            for n in (0..keep).rev() {
                if path(n).exists() {
                    std::fs::rename(path(n), path(n + 1))?;
                }
            }
        }
        self.file = Some(Box::new(
            std::fs::OpenOptions::new().create(true).append(true).open(path(0))?,
        ));
        self.bytes = 0;
        self.notice(DeadLetterNotice::Rotated);
        Ok(())
    }
}

impl Drop for DeadLetterFile {
    fn drop(&mut self) {
        let _ = self.write_pending();
    }
}

/// The one dead-letter sink of a run, shared by every thread that refuses
/// input or evicts a journey (decoders, shards, Kafka partition groups).
/// Refusals are rare, so one lock costs nothing on the hot path; on a full
/// disk the writer holds it, and everyone who refuses input waits:
/// backpressure, not memory.
#[derive(Clone)]
pub struct DeadLetters {
    inner: std::sync::Arc<std::sync::Mutex<LazyFile>>,
}

/// The file, opened at the first letter (or at once, see [`DeadLetters::open_now`]).
struct LazyFile {
    dir: std::path::PathBuf,
    limits: DeadLetterLimits,
    fresh: bool,
    hook: Option<NoticeHook>,
    file: Option<DeadLetterFile>,
}

impl LazyFile {
    fn file(&mut self) -> std::io::Result<&mut DeadLetterFile> {
        if self.file.is_none() {
            let mut file = DeadLetterFile::open(&self.dir, self.limits, self.fresh)?;
            if let Some(hook) = self.hook.take() {
                file = file.with_hook(hook);
            }
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }
}

impl DeadLetters {
    /// `<dir>/dead-letter.ndjson`, opened at the first letter: appended to
    /// (`tacet run` resumes) or, with `fresh`, started empty (a replay).
    pub fn new(dir: &std::path::Path, limits: DeadLetterLimits, fresh: bool, hook: Option<NoticeHook>) -> Self {
        Self {
            inner: std::sync::Arc::new(std::sync::Mutex::new(LazyFile {
                dir: dir.to_owned(),
                limits,
                fresh,
                hook,
                file: None,
            })),
        }
    }

    /// Opens the file now: a replay starts it empty even if it refuses nothing.
    pub fn open_now(self) -> std::io::Result<Self> {
        self.lock().file()?;
        Ok(self)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LazyFile> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live file's path, for error messages.
    pub fn path(&self) -> std::path::PathBuf {
        self.lock().dir.join(DeadLetterFile::file_name(0))
    }

    /// Appends each of `records`, under one lock.
    pub fn write_all<R: Serialize>(&self, records: impl IntoIterator<Item = R>) -> std::io::Result<()> {
        let mut inner = self.lock();
        let file = inner.file()?;
        for r in records {
            file.write(&r)?;
        }
        Ok(())
    }

    /// Appends one record.
    pub fn write(&self, record: &impl Serialize) -> std::io::Result<()> {
        self.write_all(std::iter::once(record))
    }

    /// Makes every letter written so far durable (before a checkpoint).
    pub fn sync(&self) -> std::io::Result<()> {
        match self.lock().file.as_mut() {
            Some(f) => f.sync(),
            None => Ok(()),
        }
    }

    /// Writes out what is pending (the end of a replay).
    pub fn flush(&self) -> std::io::Result<()> {
        match self.lock().file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }

    /// Letters written, rotations and pauses.
    pub fn stats(&self) -> DeadLetterStats {
        self.lock().file.as_ref().map(DeadLetterFile::stats).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(i: usize) -> DeadLetter {
        DeadLetter::new(
            "events.ndjson",
            format!("events.ndjson:{i:03}"),
            DecodeError::NotJson,
            b"{broken",
        )
    }

    fn lines(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_file_rotates_at_its_cap_and_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        let one = serde_json::to_vec(&letter(1)).unwrap().len() as u64 + 1;
        let limits = DeadLetterLimits {
            max_bytes: one * 10,
            keep: 2,
        };
        let mut f = DeadLetterFile::open(dir.path(), limits, true).unwrap();
        for i in 0..45 {
            f.write(&letter(i)).unwrap();
        }
        f.flush().unwrap();
        let s = f.stats();
        assert_eq!((s.written, s.rotations, s.files_dropped), (45, 4, 2));
        // The newest letters survive: 40..45 live, 30..40 in .1, 20..30 in .2.
        let live = lines(&dir.path().join("dead-letter.ndjson"));
        assert_eq!(live.len(), 5, "{live:#?}");
        assert!(live[0].contains("events.ndjson:040"), "{}", live[0]);
        assert_eq!(lines(&dir.path().join("dead-letter.1.ndjson")).len(), 10);
        assert!(lines(&dir.path().join("dead-letter.2.ndjson"))[0].contains("events.ndjson:020"));
        assert!(!dir.path().join("dead-letter.3.ndjson").exists());
        let total: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= limits.max_bytes * 3, "bounded: {total} bytes");
    }

    #[test]
    fn appending_resumes_and_fresh_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let limits = DeadLetterLimits {
            max_bytes: 1 << 20,
            keep: 1,
        };
        for fresh in [true, false] {
            let mut f = DeadLetterFile::open(dir.path(), limits, fresh).unwrap();
            f.write(&letter(1)).unwrap();
            f.sync().unwrap();
        }
        assert_eq!(lines(&dir.path().join("dead-letter.ndjson")).len(), 2);
        drop(DeadLetterFile::open(dir.path(), limits, true).unwrap());
        assert_eq!(lines(&dir.path().join("dead-letter.ndjson")).len(), 0);
    }

    /// A disk that is full for the first `full_writes` writes, then takes
    /// everything into `written`.
    struct FillingDisk {
        full_writes: usize,
        written: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    }

    impl std::io::Write for FillingDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.full_writes > 0 {
                self.full_writes -= 1;
                return Err(std::io::ErrorKind::StorageFull.into());
            }
            // Room for a few bytes at a time: partial writes resume in place.
            let n = buf.len().min(7);
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LetterOut for FillingDisk {
        fn sync_data(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_pauses_writing_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let limits = DeadLetterLimits {
            max_bytes: 1 << 20,
            keep: 1,
        };
        let written = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = notices.clone();
        let mut f = DeadLetterFile::open(dir.path(), limits, true)
            .unwrap()
            .with_first_pause(std::time::Duration::from_millis(1))
            .with_hook(Box::new(move |n| seen.lock().unwrap().push(n)))
            .with_output(Box::new(FillingDisk {
                full_writes: 5,
                written: written.clone(),
            }));
        for i in 0..3 {
            f.write(&letter(i)).unwrap();
        }
        f.sync().unwrap();
        assert_eq!(f.stats().disk_full_pauses, 1, "one pause for one full episode");
        assert_eq!(*notices.lock().unwrap(), [DeadLetterNotice::DiskFull]);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..3)
            .map(|i| format!("{}\n", serde_json::to_string(&letter(i)).unwrap()))
            .collect();
        assert_eq!(text, expected, "every letter, whole and in order");
    }
}
