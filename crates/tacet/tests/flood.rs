//! A flood of bad input on a disk that fills up: generated traffic with
//! 1,000,000 garbage lines, 10 MB lines and 1 KB trace ids mixed in,
//! replayed by the binary onto a small filesystem of the test's own (a
//! tmpfs; mounting needs root, as CI has) that a ballast file fills. When
//! the dead-letter file finds the disk full, the engine pauses and says so;
//! the test then frees the ballast, and the replay goes on. Nothing panics,
//! memory stays within a bound of a clean replay's, every refusal is
//! counted by reason, and the outcomes equal the generator's truth.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn tacet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tacet"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

const GARBAGE: u64 = 1_000_000;
const HUGE_LINES: u64 = 3;
const LONG_TRACE_IDS: u64 = 500;

/// A tmpfs of `mb` MiB at `dir`, unmounted on drop; `None` without root.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mb: u64) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The generated events with the flood mixed in, as one file; how many
/// huge lines and long trace ids went in.
fn flood_file(events: &Path, out: &Path) -> (u64, u64) {
    // Bytes, not text: the generator's malformed lines include invalid UTF-8.
    let input = std::fs::read(events).unwrap();
    let mut w = BufWriter::new(std::fs::File::create(out).unwrap());
    let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let n = lines.len() as u64;
    let per_line = GARBAGE.div_ceil(n);
    let (mut garbage, mut huge_lines, mut long_ids) = (0, 0, 0);
    let huge = format!("{{\"pad\":\"{}\"}}", "z".repeat(10 << 20));
    for (i, line) in lines.iter().enumerate() {
        let i = i as u64;
        w.write_all(line).unwrap();
        w.write_all(b"\n").unwrap();
        for _ in 0..per_line.min(GARBAGE - garbage) {
            writeln!(w, "garbage {garbage} {{not json").unwrap();
            garbage += 1;
        }
        if i % (n / HUGE_LINES) == 7 && huge_lines < HUGE_LINES {
            writeln!(w, "{huge}").unwrap();
            huge_lines += 1;
        }
        if i % (n / LONG_TRACE_IDS) == 3 && long_ids < LONG_TRACE_IDS {
            long_ids += 1;
            writeln!(
                w,
                r#"{{"ts":"2026-11-22T08:00:00Z","trace_id":"{}","event":"ledger.posted"}}"#,
                "k".repeat(1024)
            )
            .unwrap();
        }
    }
    assert_eq!(garbage, GARBAGE);
    assert_eq!((huge_lines, long_ids), (HUGE_LINES, LONG_TRACE_IDS));
    w.flush().unwrap();
    (huge_lines, long_ids)
}

/// Replays `events` into `out`; the summary, the peak resident memory, and
/// whether the disk-full pause was reported (then `on_full` ran).
fn replay(
    config: &Path,
    events: &Path,
    out: &Path,
    on_full: impl Fn() + Send + 'static,
) -> (serde_json::Value, u64, bool) {
    let mut child = tacet()
        .args(["replay", "--json", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg(events)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let paused = Arc::new(AtomicBool::new(false));
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let reader = {
        let (paused, text) = (paused.clone(), stderr_text.clone());
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("dead-letter file is full") && !paused.swap(true, Ordering::SeqCst) {
                    on_full();
                }
                text.lock().unwrap().push_str(&line);
                text.lock().unwrap().push('\n');
            }
        })
    };
    let mut stdout = child.stdout.take().unwrap();
    let collect = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let started = Instant::now();
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        {
            peak = peak.max(kb * 1024);
        }
        if started.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            panic!(
                "the replay is still running after 4 minutes:\n{}",
                stderr_text.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let text = stderr_text.lock().unwrap().clone();
    assert!(status.success(), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    let summary = serde_json::from_str(&collect.join().unwrap()).unwrap();
    (summary, peak, paused.load(Ordering::SeqCst))
}

#[test]
fn a_flood_of_bad_input_on_a_filling_disk_loses_nothing_and_counts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let generated = tacet()
        .args(["gen", "--journeys", "20000", "--seed", "11", "--out"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(generated.status.success());
    let flood = dir.path().join("flood.ndjson");
    flood_file(&data.join("events.ndjson"), &flood);
    let config = dir.path().join("flood.toml");
    let text = std::fs::read_to_string(repo("config/tacet.toml")).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[output]\ndead_letter_max_bytes = 4194304\ndead_letter_files = 2\n"),
    )
    .unwrap();

    // A clean replay of the same traffic: the memory baseline.
    let (clean, clean_peak, _) = replay(&config, &data.join("events.ndjson"), &dir.path().join("clean"), || {});
    let generator_malformed = clean["dead_letters"].as_u64().unwrap();

    let disk = SmallDisk::mount(&dir.path().join("disk"), 40);
    let out = match &disk {
        Some(d) => d.0.join("out"),
        None => {
            eprintln!("cannot mount a tmpfs here (not root): the flood runs on the ordinary disk");
            dir.path().join("out")
        }
    };
    let ballast = out.parent().unwrap().join("ballast");
    if disk.is_some() {
        // Leaves too little room for the dead letters' 12 MiB.
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(&ballast, vec![0u8; 30 << 20]).unwrap();
    }
    let freed = ballast.clone();
    let (summary, peak, paused) = replay(&config, &flood, &out, move || {
        std::fs::remove_file(&freed).unwrap();
    });

    let errors = &summary["decode_errors"];
    assert_eq!(errors["oversized_line"], HUGE_LINES, "{summary:#}");
    assert_eq!(errors["trace_id_too_long"], LONG_TRACE_IDS, "{summary:#}");
    let not_json = errors["not_json"].as_u64().unwrap();
    assert!(not_json >= GARBAGE, "{summary:#}");
    let refused: u64 = errors.as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(
        refused,
        GARBAGE + HUGE_LINES + LONG_TRACE_IDS + generator_malformed,
        "every refusal counted"
    );
    assert_eq!(summary["dead_letters"], refused);
    assert!(summary["dead_letter_file"]["rotations"].as_u64().unwrap() > 0);
    if disk.is_some() {
        assert!(paused, "the full disk was reported");
        assert_eq!(summary["dead_letter_file"]["disk_full_pauses"], 1, "{summary:#}");
    }
    eprintln!(
        "peak resident memory: flood {} MiB, clean {} MiB",
        peak >> 20,
        clean_peak >> 20
    );
    assert!(
        peak < clean_peak + (256 << 20),
        "memory stays bounded: flood {} MiB against clean {} MiB",
        peak >> 20,
        clean_peak >> 20
    );
    // Nothing decided is lost: exactly the generator's truth.
    let verify = tacet()
        .args(["verify", "--truth"])
        .arg(data.join("truth.ndjson"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    drop(disk);
}
