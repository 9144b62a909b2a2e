//! Child processes of the tests: short commands (`docker`, `ip`) run to completion, and long-running
//! ones (the agent binary, `autonomy-netmon`) whose output is collected line by line for asserts and
//! failure messages, killed when their guard is dropped.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Runs `program <args>`; `Some(trimmed stdout)` on success.
pub fn run_try(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `program <args>`, panicking with its stderr on failure; returns trimmed stdout.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Collected output lines of a child process, shared with the reader threads.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    /// Appends every line of `stream` from a thread of its own (until EOF or invalid UTF-8).
    pub fn spawn_reader(&self, stream: impl Read + Send + 'static) {
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// How many lines so far.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// No line yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All lines so far, newline-separated.
    pub fn text(&self) -> String {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
    }

    /// Whether a line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.contains(needle))
    }

    /// The first line at index ≥ `from` matching `pred`, waiting up to `timeout` (blocking).
    pub fn wait_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .snapshot()
                .into_iter()
                .enumerate()
                .skip(from)
                .find(|(_, l)| pred(l))
            {
                return Some(found);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn count_from(&self, from: usize, pred: impl Fn(&str) -> bool) -> usize {
        self.snapshot()
            .iter()
            .skip(from)
            .filter(|l| pred(l))
            .count()
    }
}

/// A child process with stdin closed and stdout + stderr collected in `out`; killed on drop.
pub struct Proc {
    child: Child,
    pub out: Lines,
}

impl Proc {
    pub fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {:?}: {e}", cmd.get_program()));
        let out = Lines::default();
        if let Some(s) = child.stdout.take() {
            out.spawn_reader(s);
        }
        if let Some(s) = child.stderr.take() {
            out.spawn_reader(s);
        }
        Proc { child, out }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits up to `timeout` for the exit (blocking); `None` when it did not exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let Ok(pid) = i32::try_from(self.child.id()) else {
            return None;
        };
        let pid = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A copy of an executable that any uid may run, for tests that run a program as another user:
/// the original may sit under a directory only its owner can enter (a clone in a `mktemp -d`
/// directory is 0700). The copy is in a fresh 0755 directory under the temp dir, removed on drop.
#[derive(Debug)]
pub struct SharedExe {
    dir: std::path::PathBuf,
    /// The copy.
    pub path: std::path::PathBuf,
}

impl SharedExe {
    pub fn new(original: &std::path::Path) -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(crate::unique("orch-shared-exe-"));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let path = dir.join(original.file_name().expect("a file name"));
        std::fs::copy(original, &path)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", original.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod exe");
        SharedExe { dir, path }
    }
}

impl Drop for SharedExe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
