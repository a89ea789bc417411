//! `tacet serve-sql` against clients that ask for too much (issue: untrusted
//! input and bounded resources): a client's `SET` reconfigures nothing, an
//! endless result is stopped by the statement timeout while the server's
//! memory stays flat and others are served, a query past its memory pool
//! fails, idle sockets lock nobody out, and nothing listens beyond loopback
//! without a password.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tacet() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tacet"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A running `tacet serve-sql` over the retries scenario's outcomes.
struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(sql_settings: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), sql_settings)
    }

    /// As [`Server::start`], with the config written into `dir`.
    fn start_in(dir: tempfile::TempDir, sql_settings: &str) -> Self {
        let config = dir.path().join("config.toml");
        let text = std::fs::read_to_string(repo("testdata/scenarios/config.toml")).unwrap();
        std::fs::write(&config, format!("{text}\n[sql]\n{sql_settings}\n")).unwrap();
        replay_scenario(&config, dir.path());
        let port = free_port();
        let child = tacet()
            .args(["serve-sql", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "serve-sql did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, port, _dir: dir }
    }

    fn psql(&self, sql: &str) -> Output {
        psql(self.port, sql)
    }

    /// The server's peak resident memory so far, in bytes (VmHWM).
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The retries scenario's outcomes under `out`, replayed with `config`.
fn replay_scenario(config: &Path, out: &Path) {
    let status = tacet()
        .args(["replay", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out)
        .arg(repo("testdata/scenarios/retries_and_errors/events.ndjson"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn psql(port: u16, sql: &str) -> Output {
    psql_with(port, "prefer", sql)
}

fn psql_with(port: u16, sslmode: &str, sql: &str) -> Output {
    Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=analyst dbname=tacet sslmode={sslmode}"
        ))
        .args(["-w", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env_remove("PGPASSWORD")
        .output()
        .expect("psql is installed (postgresql-client)")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn set_is_refused_and_changes_nothing_for_other_clients() {
    let server = Server::start("");
    let before = server.psql("SHOW datafusion.execution.batch_size");
    assert!(before.status.success(), "{}", stderr(&before));
    let set = server.psql("SET datafusion.execution.batch_size = 1");
    assert!(!set.status.success(), "SET must be refused");
    assert!(stderr(&set).contains("not supported"), "{}", stderr(&set));
    let after = server.psql("SHOW datafusion.execution.batch_size");
    assert_eq!(stdout(&after), stdout(&before));
    for statement in [
        "BEGIN",
        "SET TIME ZONE 'UTC'",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW journey_sli",
    ] {
        assert!(!server.psql(statement).status.success(), "{statement} must be refused");
    }
    assert!(server.psql("SELECT COUNT(*) FROM journey_sli").status.success());
}

#[test]
fn an_endless_result_is_stopped_by_the_timeout_with_memory_flat_and_others_served() {
    let server = Server::start("statement_timeout = \"4s\"\nquery_memory_bytes = 67108864");
    let baseline = server.peak_rss();
    let port = server.port;
    let started = Instant::now();
    let endless = std::thread::spawn(move || psql(port, "SELECT * FROM range(10000000000)"));
    // Other clients are answered while it runs.
    std::thread::sleep(Duration::from_millis(500));
    let other = server.psql("SELECT journey FROM journey_sli ORDER BY journey LIMIT 1");
    assert!(other.status.success(), "{}", stderr(&other));
    assert_eq!(stdout(&other), "funds_transfer");
    let out = endless.join().unwrap();
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("statement timeout"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(30), "stopped at its timeout, took {took:?}");
    let growth = server.peak_rss().saturating_sub(baseline);
    assert!(
        growth < 64 << 20,
        "results stream: the server grew {} MB for an endless result",
        growth >> 20
    );

    // A query that needs more memory than its pool fails at once.
    let sort = server.psql("SELECT value FROM range(50000000) ORDER BY value DESC LIMIT 10000000");
    assert!(!sort.status.success());
    let err = stderr(&sort);
    assert!(err.to_lowercase().contains("resources exhausted"), "{err}");
    assert!(server.psql("SELECT 1").status.success(), "the server goes on");
}

#[test]
fn idle_connections_lock_nobody_out_and_are_closed() {
    let server = Server::start("idle_timeout = \"3s\"");
    // 64 sockets that connect and say nothing.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let out = server.psql("SELECT COUNT(*) FROM outcomes");
    assert!(out.status.success(), "the 65th connection is served: {}", stderr(&out));
    // The idle ones are closed after the idle timeout.
    let mut first = idle.into_iter().next().unwrap();
    first.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = first.read(&mut buf);
    assert!(matches!(read, Ok(0)) || read.is_err(), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "closed after the idle timeout"
    );
}

#[test]
fn connections_past_the_cap_are_closed_and_the_rest_served() {
    let server = Server::start("max_connections = 2");
    // The start-up probe's connection must be gone before the cap is filled.
    std::thread::sleep(Duration::from_millis(500));
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let refused = server.psql("SELECT 1");
    assert!(!refused.status.success(), "a third connection is refused");
    drop(_held);
    std::thread::sleep(Duration::from_millis(500));
    let out = server.psql("SELECT 1");
    assert!(out.status.success(), "served once the others left: {}", stderr(&out));
}

/// A `Parse` message shorter than its fields makes pgwire 0.42.1 panic while
/// decoding it (found by `fuzz/`'s pgwire target). Sent on 40 connections
/// to a server that allows 4, it ends only those connections: every slot
/// comes back, and a real client is served after.
#[test]
fn a_message_that_panics_the_protocol_library_ends_only_its_connection() {
    use std::io::Write;
    let server = Server::start("max_connections = 4");
    std::thread::sleep(Duration::from_millis(500));
    let user = b"\x00\x03\x00\x00user\x00analyst\x00database\x00tacet\x00\x00";
    let mut startup = ((user.len() + 4) as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(user);
    for _ in 0..40 {
        let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(&startup).unwrap();
        let _ = s.write_all(b"P\x00\x00\x00\x00C\xff\n");
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let out = server.psql("SELECT COUNT(*) FROM outcomes");
    assert!(out.status.success(), "the server still serves: {}", stderr(&out));
}

/// With a certificate and key (paths relative to the config's folder)
/// clients can ask for TLS: psql with `sslmode=require` is served, and is
/// refused by a server without them.
#[test]
fn tls_is_offered_with_a_certificate_from_the_config() {
    let plain = Server::start("");
    let refused = psql_with(plain.port, "require", "SELECT 1");
    assert!(!refused.status.success(), "no TLS without a certificate");
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-keyout", "key.pem", "-out", "cert.pem"])
        .current_dir(dir.path())
        .output()
        .expect("the openssl command (Debian's openssl)");
    assert!(made.status.success(), "{}", stderr(&made));
    let server = Server::start_in(dir, "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"");
    let out = psql_with(server.port, "require", "SELECT COUNT(*) FROM outcomes");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2");
    assert!(server.psql("SELECT 1").status.success(), "plain clients too");
}

#[test]
fn beyond_loopback_a_password_is_required() {
    let dir = tempfile::tempdir().unwrap();
    replay_scenario(&repo("testdata/scenarios/config.toml"), dir.path());
    let out = tacet()
        .args(["serve-sql", "--data"])
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("needs a password"), "{}", stderr(&out));
}
