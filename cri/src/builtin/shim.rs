//! The container monitor ("shim"): one small process per container that outlives the
//! runtime, so containers keep running — and keep logging — while the runtime restarts.
//!
//! The runtime starts it detached (its own session) as `bosun-cri-shim` (or `bosun cri-shim`)
//! with the [`ShimArgs`]. It then:
//! 1. becomes a child subreaper, so the container's init process — whose parent, `runc
//!    create`, exits at once — is reparented to it and it can collect the exit status;
//! 2. runs `runc create` with pipes as the container's stdout and stderr, and answers the
//!    runtime with one JSON line on its stdout: `{"created": PID}` or `{"error": "…"}`;
//! 3. copies the pipes into the log file in the CRI format
//!    (`2016-10-06T00:17:09.669794202Z stdout F text`, `P` for a partial line of 16 KiB);
//! 4. serves a control socket (`reopen` reopens the log file after the kubelet rotated it);
//! 5. when init exits, writes the exit file (code, time, whether the OOM killer struck in the
//!    container's memory cgroup) atomically and exits.
//!
//! The runtime reads everything from files (pid, exit), so it needs no connection to the shim
//! to learn a container's state after a restart.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// What the shim is told, as `--name value` arguments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShimArgs {
    /// The OCI runtime binary (runc).
    pub runc: PathBuf,
    /// runc's state directory (`--root`).
    pub runc_root: PathBuf,
    /// The bundle (config.json and rootfs).
    pub bundle: PathBuf,
    /// The container ID.
    pub id: String,
    /// The CRI log file; empty for none.
    pub log: PathBuf,
    /// Where the container init's PID is written.
    pub pid_file: PathBuf,
    /// Where the exit record is written.
    pub exit_file: PathBuf,
    /// The control socket.
    pub socket: PathBuf,
    /// The container's memory cgroup directory (for OOM detection); empty if unknown.
    pub memory_cgroup: PathBuf,
    /// Whether the container gets a stdin (written by attach sessions).
    pub stdin: bool,
    /// Whether stdin closes after the first attach session ends.
    pub stdin_once: bool,
}

impl ShimArgs {
    /// The arguments as a command line.
    pub fn to_args(&self) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        vec![
            "--runc".into(),
            p(&self.runc),
            "--runc-root".into(),
            p(&self.runc_root),
            "--bundle".into(),
            p(&self.bundle),
            "--id".into(),
            self.id.clone(),
            "--log".into(),
            p(&self.log),
            "--pid-file".into(),
            p(&self.pid_file),
            "--exit-file".into(),
            p(&self.exit_file),
            "--socket".into(),
            p(&self.socket),
            "--memory-cgroup".into(),
            p(&self.memory_cgroup),
            "--stdin".into(),
            self.stdin.to_string(),
            "--stdin-once".into(),
            self.stdin_once.to_string(),
        ]
    }

    /// Parses the command line (without the program name).
    pub fn parse(args: &[String]) -> Result<Self, String> {
        let mut a = ShimArgs::default();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
            match k.as_str() {
                "--runc" => a.runc = v.into(),
                "--runc-root" => a.runc_root = v.into(),
                "--bundle" => a.bundle = v.into(),
                "--id" => a.id = v.clone(),
                "--log" => a.log = v.into(),
                "--pid-file" => a.pid_file = v.into(),
                "--exit-file" => a.exit_file = v.into(),
                "--socket" => a.socket = v.into(),
                "--memory-cgroup" => a.memory_cgroup = v.into(),
                "--stdin" => a.stdin = v == "true",
                "--stdin-once" => a.stdin_once = v == "true",
                _ => return Err(format!("unknown argument {k}")),
            }
        }
        if a.id.is_empty() || a.bundle.as_os_str().is_empty() || a.exit_file.as_os_str().is_empty()
        {
            return Err("--id, --bundle and --exit-file are required".into());
        }
        Ok(a)
    }
}

/// How a container ended, as the shim records it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExitRecord {
    /// The exit code (128 + signal for a killed process).
    pub exit_code: i32,
    /// When, in nanoseconds since the epoch.
    pub finished_at: i64,
    /// Whether the OOM killer acted in the container's cgroup.
    pub oom_killed: bool,
}

/// The runtime-facing answer on the shim's stdout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShimReply {
    /// The container exists (runc create succeeded); its init's PID.
    Created(i32),
    /// It could not be created.
    Error(String),
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

/// The line limit after which a line is written as partial (`P`), as in containerd.
const MAX_LINE: usize = 16 * 1024;

/// A CRI log file that can be reopened after rotation, and the attach sessions that also
/// get the output.
struct LogFile {
    path: PathBuf,
    file: Option<File>,
    attached: Vec<UnixStream>,
}

/// Attach frames: one byte for the stream (1 stdout, 2 stderr), four for the length
/// (big-endian), then the bytes.
fn frame(stream: u8, data: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(data.len() + 5);
    f.push(stream);
    f.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    f.extend_from_slice(data);
    f
}

impl LogFile {
    fn open(path: &Path) -> Option<File> {
        if path.as_os_str().is_empty() {
            return None;
        }
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
    }

    fn write(&mut self, stream: &str, partial: bool, text: &[u8]) {
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(jiff::Timestamp::now().to_string().as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(text);
        line.push(b'\n');
        // A full disk loses log lines, never the container.
        let _ = f.write_all(&line);
    }
}

/// Copies one stream into the log, line by line, and as it comes to attach sessions.
fn copy_stream(mut from: impl Read, stream: &'static str, log: Arc<Mutex<LogFile>>) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let id = if stream == "stdout" { 1 } else { 2 };
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Ok(mut l) = log.lock() {
            if !l.attached.is_empty() {
                let f = frame(id, &chunk[..n]);
                l.attached.retain_mut(|c| c.write_all(&f).is_ok());
            }
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
        while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
            if i > MAX_LINE {
                // A long line is cut into partials of the limit, its end a full line.
                out.push((true, buf[start..start + MAX_LINE].to_vec()));
                start += MAX_LINE;
                continue;
            }
            out.push((false, buf[start..start + i].to_vec()));
            start += i + 1;
        }
        while buf.len() - start >= MAX_LINE {
            out.push((true, buf[start..start + MAX_LINE].to_vec()));
            start += MAX_LINE;
        }
        buf.drain(..start);
        if !out.is_empty() {
            if let Ok(mut l) = log.lock() {
                for (partial, text) in out {
                    l.write(stream, partial, &text);
                }
            }
        }
    }
    if !buf.is_empty() {
        if let Ok(mut l) = log.lock() {
            l.write(stream, false, &buf);
        }
    }
}

fn reply(r: &ShimReply) {
    let mut out = std::io::stdout();
    if let Ok(line) = serde_json::to_string(r) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The last error runc logged (its JSON log lines), or the whole log.
fn runc_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["level"] == "error")
        .and_then(|v| v["msg"].as_str().map(String::from))
        .unwrap_or_else(|| text.trim().to_string())
}

fn oom_killed(memory_cgroup: &Path) -> bool {
    if memory_cgroup.as_os_str().is_empty() {
        return false;
    }
    // cgroup v1: "oom_kill N"; cgroup v2: memory.events "oom_kill N".
    ["memory.oom_control", "memory.events"].iter().any(|f| {
        std::fs::read_to_string(memory_cgroup.join(f))
            .unwrap_or_default()
            .lines()
            .any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

type Stdin = Arc<Mutex<Option<File>>>;

fn serve_control(listener: UnixListener, log: Arc<Mutex<LogFile>>, stdin: Stdin, stdin_once: bool) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut line = String::new();
        let mut reader = BufReader::new(&conn);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        if line.trim() == "attach" {
            let _ = writeln!(conn, "ok");
            let (Ok(out), Ok(input)) = (conn.try_clone(), conn.try_clone()) else {
                continue;
            };
            // A session that stops reading is dropped rather than stalling the container's
            // output (and its log).
            let _ = out.set_write_timeout(Some(std::time::Duration::from_secs(5)));
            if let Ok(mut l) = log.lock() {
                l.attached.push(out);
            }
            // What the session sends is the container's stdin.
            let stdin = stdin.clone();
            std::thread::spawn(move || {
                let mut input = input;
                let mut chunk = [0u8; 8192];
                loop {
                    match input.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let Ok(mut g) = stdin.lock() else { break };
                            if let Some(w) = g.as_mut() {
                                if w.write_all(&chunk[..n]).is_err() {
                                    *g = None;
                                }
                            }
                        }
                    }
                }
                if stdin_once {
                    if let Ok(mut g) = stdin.lock() {
                        *g = None;
                    }
                }
            });
            continue;
        }
        let answer = match line.trim() {
            "reopen" => match log.lock() {
                Ok(mut l) => {
                    l.file = LogFile::open(&l.path);
                    if l.file.is_some() || l.path.as_os_str().is_empty() {
                        "ok".to_string()
                    } else {
                        format!("error: cannot open {}", l.path.display())
                    }
                }
                Err(_) => "error: log writer failed".into(),
            },
            "ping" => "ok".into(),
            other => format!("error: unknown command {other:?}"),
        };
        let _ = writeln!(conn, "{answer}");
    }
}

/// Runs the shim with `args` (without the program name); returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let a = match ShimArgs::parse(args) {
        Ok(a) => a,
        Err(e) => {
            reply(&ShimReply::Error(e));
            return 2;
        }
    };
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        reply(&ShimReply::Error(format!("becoming a subreaper: {e}")));
        return 1;
    }
    let pipes = std::io::pipe().and_then(|o| Ok((o, std::io::pipe()?)));
    let Ok(((out_r, out_w), (err_r, err_w))) = pipes else {
        reply(&ShimReply::Error("creating pipes".into()));
        return 1;
    };
    let (stdin_r, stdin_w) = if a.stdin {
        match std::io::pipe() {
            Ok((r, w)) => (Some(r), Some(w)),
            Err(e) => {
                reply(&ShimReply::Error(format!("creating the stdin pipe: {e}")));
                return 1;
            }
        }
    } else {
        (None, None)
    };
    let runc_log = a.bundle.join("runc.log");
    let mut cmd = Command::new(&a.runc);
    cmd.arg("--root")
        .arg(&a.runc_root)
        .arg("--log")
        .arg(&runc_log)
        .args(["--log-format", "json", "create", "--bundle"])
        .arg(&a.bundle)
        .arg("--pid-file")
        .arg(&a.pid_file)
        .arg(&a.id)
        .stdin(stdin_r.map(Stdio::from).unwrap_or_else(Stdio::null))
        .stdout(out_w)
        .stderr(err_w);
    let status = cmd.status();
    // Drop our copies of the write ends, so the copiers see EOF when the container exits.
    drop(cmd);
    match status {
        Ok(s) if s.success() => {}
        Ok(_) => {
            reply(&ShimReply::Error(runc_error(&runc_log)));
            return 1;
        }
        Err(e) => {
            reply(&ShimReply::Error(format!(
                "running {}: {e}",
                a.runc.display()
            )));
            return 1;
        }
    }
    let pid = std::fs::read_to_string(&a.pid_file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    let Some(pid) = pid else {
        reply(&ShimReply::Error("runc wrote no pid file".into()));
        return 1;
    };
    let log = Arc::new(Mutex::new(LogFile {
        file: LogFile::open(&a.log),
        path: a.log.clone(),
        attached: Vec::new(),
    }));
    let stdin: Stdin = Arc::new(Mutex::new(
        stdin_w.map(|w| File::from(std::os::fd::OwnedFd::from(w))),
    ));
    let _ = std::fs::remove_file(&a.socket);
    match UnixListener::bind(&a.socket) {
        Ok(l) => {
            let log = log.clone();
            let once = a.stdin_once;
            std::thread::spawn(move || serve_control(l, log, stdin, once));
        }
        Err(e) => {
            reply(&ShimReply::Error(format!(
                "binding {}: {e}",
                a.socket.display()
            )));
            return 1;
        }
    }
    let copiers = [
        {
            let log = log.clone();
            std::thread::spawn(move || copy_stream(out_r, "stdout", log))
        },
        {
            let log = log.clone();
            std::thread::spawn(move || copy_stream(err_r, "stderr", log))
        },
    ];
    reply(&ShimReply::Created(pid));
    // Nothing more goes to the runtime; it may be gone already.
    if let Ok(null) = File::open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let exit_code = wait_for(pid);
    for c in copiers {
        let _ = c.join();
    }
    // Attach sessions end with the container.
    if let Ok(mut l) = log.lock() {
        for c in l.attached.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
    let rec = ExitRecord {
        exit_code,
        finished_at: now_nanos(),
        oom_killed: oom_killed(&a.memory_cgroup),
    };
    match serde_json::to_vec(&rec) {
        Ok(bytes) if write_atomic(&a.exit_file, &bytes).is_ok() => 0,
        _ => 1,
    }
}

/// Reaps children until `pid` exits; returns its exit code (128 + signal when killed).
fn wait_for(pid: i32) -> i32 {
    loop {
        // __WALL: also children whose exit signal is not SIGCHLD (runc's init may be one).
        let all = rustix::process::WaitOptions::from_bits_retain(0x4000_0000);
        // `wait` is wait4(-1): any child. (`waitpid(None)` is wait4(0): only children in
        // our process group, which the container's init, in its own session, is not.)
        match rustix::process::wait(all) {
            Ok(Some((p, st))) if p.as_raw_nonzero().get() == pid => {
                if let Some(code) = st.exit_status() {
                    return code;
                }
                if let Some(sig) = st.terminating_signal() {
                    return 128 + sig;
                }
            }
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            // No children: init was never ours (or is gone); poll for it.
            Err(_) => {
                while Path::new(&format!("/proc/{pid}")).exists() {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                return 255;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_round_trip() {
        let a = ShimArgs {
            runc: "/usr/sbin/runc".into(),
            runc_root: "/run/r".into(),
            bundle: "/b".into(),
            id: "c1".into(),
            log: "/var/log/pods/x/0.log".into(),
            pid_file: "/b/pid".into(),
            exit_file: "/b/exit".into(),
            socket: "/b/sock".into(),
            memory_cgroup: "".into(),
            stdin: true,
            stdin_once: false,
        };
        assert_eq!(ShimArgs::parse(&a.to_args()).unwrap(), a);
        assert!(ShimArgs::parse(&["--id".into()]).is_err());
        assert!(ShimArgs::parse(&["--what".into(), "x".into()]).is_err());
    }

    #[test]
    fn copies_lines_in_the_cri_format_with_partials() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("0.log");
        let log = Arc::new(Mutex::new(LogFile {
            file: LogFile::open(&path),
            path: path.clone(),
            attached: Vec::new(),
        }));
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("hello\n\nworld\n{long}\ntail");
        copy_stream(input.as_bytes(), "stdout", log);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|l| {
                let mut p = l.splitn(4, ' ');
                let ts = p.next().unwrap();
                assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{ts}");
                (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""))
            })
            .collect();
        assert_eq!(lines[0], ("stdout", "F", "hello"));
        assert_eq!(lines[1], ("stdout", "F", ""));
        assert_eq!(lines[2], ("stdout", "F", "world"));
        assert_eq!(lines[3].1, "P");
        assert_eq!(lines[3].2.len(), MAX_LINE);
        assert_eq!(lines[4], ("stdout", "F", "xxxxxxxxxx"));
        assert_eq!(lines[5], ("stdout", "F", "tail"));
    }
}
