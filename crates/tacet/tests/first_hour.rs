//! A new user's first hour, literally: every command README.md's tour shows
//! and every example `--help` prints is run as written, by a shell, from a
//! fresh folder holding a copy of the repository's `config/` and `docker/`,
//! with relative paths, and each must succeed.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The README and the help both serve SQL on port 5433: one test at a time
/// under `cargo test` (nextest runs this binary's tests one at a time too,
/// .config/nextest.toml).
static PORT_5433: Mutex<()> = Mutex::new(());

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

/// A fresh working folder with the repository's config and docker folders,
/// and `tacet` on the PATH.
struct Workspace {
    dir: tempfile::TempDir,
    path_var: String,
    background: Vec<Child>,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["config", "docker"] {
            copy_folder(&repo(folder), &dir.path().join(folder));
        }
        let bin = Path::new(env!("CARGO_BIN_EXE_tacet")).parent().unwrap();
        let path_var = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
        Self {
            dir,
            path_var,
            background: Vec::new(),
        }
    }

    fn shell(&self, line: &str) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(line)
            .current_dir(self.dir.path())
            .env("PATH", &self.path_var)
            .env("HOME", self.dir.path());
        command
    }

    /// Runs one line as a user would type it; a line ending in `&` keeps
    /// running (a server) until the workspace is dropped, and is waited for
    /// until its `--listen` address answers.
    fn run(&mut self, line: &str) -> String {
        if let Some(server) = line.strip_suffix('&') {
            let child = self
                .shell(&format!("exec {}", server.trim()))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            self.background.push(child);
            wait_for_listener(listen_address(server));
            return String::new();
        }
        let out = self.shell(line).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`{line}` failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn stop_servers(&mut self) {
        for mut child in self.background.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        self.stop_servers();
    }
}

fn copy_folder(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The address after `--listen`, else serve-sql's default.
fn listen_address(line: &str) -> SocketAddr {
    let words: Vec<&str> = line.split_whitespace().collect();
    let addr = words
        .iter()
        .position(|w| *w == "--listen")
        .and_then(|i| words.get(i + 1))
        .copied()
        .unwrap_or("127.0.0.1:5433");
    addr.parse().unwrap()
}

fn wait_for_listener(addr: SocketAddr) {
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(60), "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The lines of the first ```sh block after `heading` in README.md.
fn readme_block(heading: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let after = &readme[readme.find(heading).expect("README has the heading")..];
    let block = &after[after.find("```sh\n").expect("a sh block") + 6..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// The example lines of `tacet <command> --help`: the text after
/// `Example: `, or the command lines after a paragraph starting `Example,`.
fn help_examples(command: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_tacet"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut examples = Vec::new();
    let mut in_paragraph = false;
    for line in text.lines() {
        if let Some(example) = line.trim().strip_prefix("Example: ") {
            examples.push(example.to_owned());
        } else if line.trim().starts_with("Example,") {
            in_paragraph = true;
        } else if in_paragraph && (line.starts_with("Options:") || line.starts_with("Usage:")) {
            in_paragraph = false;
        } else if in_paragraph && (line.trim().starts_with("tacet ") || line.trim().starts_with("cat ")) {
            examples.push(line.trim().to_owned());
        }
    }
    assert!(!examples.is_empty(), "`tacet {command} --help` shows no example");
    examples
}

#[test]
fn readme_tour_runs_as_written() {
    let _port = PORT_5433.lock().unwrap_or_else(|e| e.into_inner());
    let mut ws = Workspace::new();
    let lines = readme_block("## A tour");
    assert!(lines.len() >= 8, "{lines:?}");
    let mut outputs = Vec::new();
    for line in &lines {
        outputs.push((line.clone(), ws.run(line)));
    }
    let find = |prefix: &str| {
        outputs
            .iter()
            .find(|(l, _)| l.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .unwrap()
    };
    assert!(find("tacet demo").contains("funds_transfer"));
    assert!(find("tacet sql").contains("funds_transfer"));
    assert!(
        find("psql").contains("funds_transfer"),
        "psql answered through serve-sql"
    );
    assert!(find("tacet check").contains("6 journeys"));
    assert!(find("tacet verify").contains("completed"));
}

#[test]
fn every_help_example_runs_as_written() {
    let _port = PORT_5433.lock().unwrap_or_else(|e| e.into_inner());
    let mut ws = Workspace::new();
    // In the order a user would follow them: each one's output is the next one's input.
    for command in ["demo", "sql", "serve-sql", "check", "gen", "replay", "verify"] {
        for example in help_examples(command) {
            if command == "serve-sql" {
                // A server: started in the background and asked by psql.
                ws.run(&format!("{example} &"));
                let answer = ws.run(&format!(
                    "psql -h 127.0.0.1 -p {} -c 'SELECT journey, sli FROM journey_sli'",
                    listen_address(&example).port()
                ));
                assert!(answer.contains("funds_transfer"), "{answer}");
                ws.stop_servers();
            } else {
                ws.run(&example);
            }
        }
    }
    // `tacet run` needs a broker (crates/tacet/tests/kafka.rs has those
    // tests); its example's config is built as shown and must be valid.
    let run = help_examples("run");
    let cat = run
        .iter()
        .find(|l| l.starts_with("cat "))
        .expect("run shows how to build its config");
    ws.run(cat);
    let config = run
        .iter()
        .find(|l| l.starts_with("tacet run"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "--config").nth(1))
        .expect("run's example names its config")
        .to_owned();
    let checked = ws.run(&format!("tacet check --config {config}"));
    assert!(checked.contains("Kafka: group"), "{checked}");
}

#[test]
fn demo_ends_with_the_next_things_to_do() {
    let mut ws = Workspace::new();
    let out = ws.run("tacet demo --journeys 3000");
    let next = &out[out.find("Next:").expect("the demo says what to do next")..];
    for expected in [
        "tacet sql --data tacet-out",
        "tacet serve-sql",
        "psql",
        "incidents.ndjson",
    ] {
        assert!(next.contains(expected), "{expected} missing from:\n{next}");
    }
    // The demo's SQL line works as printed.
    let sql = next
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tacet sql"))
        .unwrap();
    let sql = sql[..sql.find("  #").unwrap_or(sql.len())].trim();
    assert!(ws.run(sql).contains("funds_transfer"));
}

#[test]
fn readme_config_examples_are_valid() {
    let ws = Workspace::new();
    let readme = std::fs::read_to_string(repo("README.md")).unwrap();
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .collect();
    assert!(blocks.len() >= 2);
    let journeys = std::fs::read_to_string(repo("config/tacet.toml")).unwrap();
    for (i, block) in blocks.iter().enumerate() {
        // A block without journeys is shown as an addition to the default config.
        let text = if block.contains("[[journey]]") {
            block.to_string()
        } else {
            format!("{journeys}\n{block}")
        };
        let path = ws.dir.path().join(format!("readme-{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = ws
            .shell(&format!("tacet check --config {}", path.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README's config block {i} is refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
