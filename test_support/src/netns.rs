//! Network namespaces for tests against the real kernel: created with `lo` up, removed on drop.
//! What a test builds inside one (veth pairs, addresses, routes) never reaches the host's links.

use std::fs::File;
use std::future::Future;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::process::run;

/// A network namespace (`lo` up), removed on drop.
#[derive(Debug)]
pub struct Netns {
    /// Its name (`ip netns`).
    pub name: String,
}

impl Netns {
    /// A new namespace named `<prefix><pid>x<n>` (see [`crate::unique`]).
    pub fn new(prefix: &str) -> Self {
        let name = crate::unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// A process held in this namespace (`sleep 600`, killed on drop), returned once it is in
    /// it: what a test hands code that enters a runtime's namespace through its PID.
    pub fn holder(&self) -> crate::Proc {
        use std::os::unix::fs::MetadataExt;
        use std::time::{Duration, Instant};
        let inode = |path: &str| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let mut sleep = Command::new("ip");
        sleep.args(["netns", "exec", &self.name, "sleep", "600"]);
        let proc = crate::Proc::spawn(sleep);
        // `ip netns exec` enters the namespace, then execs sleep: wait for the first.
        let want = inode(&format!("/run/netns/{}", self.name));
        let deadline = Instant::now() + Duration::from_secs(10);
        while inode(&format!("/proc/{}/ns/net", proc.id())) != want {
            assert!(
                Instant::now() < deadline,
                "the holder of {} never entered it",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        proc
    }

    /// `ip -n <ns> <args>`, asserting success.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full);
    }

    /// `ip -n <ns> -j <args>`, parsed.
    pub fn ip_json(&self, args: &[&str]) -> Value {
        let mut full = vec!["-n", self.name.as_str(), "-j"];
        full.extend_from_slice(args);
        let out = run("ip", &full);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ip {args:?} printed no JSON ({e}): {out}"))
    }

    /// `address/prefix` of every IPv4 address on `dev`.
    pub fn ipv4_addresses(&self, dev: &str) -> Vec<String> {
        self.ip_json(&["-4", "addr", "show", "dev", dev])
            .as_array()
            .expect("array")
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect()
    }

    /// Every IPv4 default route, as `ip -j` prints it (`gateway`, `dev`, `metric`…).
    pub fn default_routes(&self) -> Vec<Value> {
        self.ip_json(&["-4", "route", "show", "default"])
            .as_array()
            .cloned()
            .expect("array")
    }

    /// `<ip> <dev>` of every proxy neighbour entry.
    pub fn proxy_entries(&self) -> Vec<String> {
        self.ip_json(&["-4", "neigh", "show", "proxy"])
            .as_array()
            .expect("array")
            .iter()
            .map(|n| {
                format!(
                    "{} {}",
                    n["dst"].as_str().unwrap_or("-"),
                    n["dev"].as_str().unwrap_or("-")
                )
            })
            .collect()
    }

    /// A veth pair `a`/`b`, both up.
    pub fn veth(&self, a: &str, b: &str) {
        self.ip(&["link", "add", a, "type", "veth", "peer", "name", b]);
        self.ip(&["link", "set", a, "up"]);
        self.ip(&["link", "set", b, "up"]);
    }

    /// Runs many `ip` commands in one process (`ip -batch`), i.e. within a few milliseconds.
    pub fn ip_batch(&self, commands: &[String]) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn ip -batch: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(commands.join("\n").as_bytes())
                .unwrap_or_else(|e| panic!("cannot write the batch: {e}"));
        }
        let status = child
            .wait()
            .unwrap_or_else(|e| panic!("ip -batch did not run: {e}"));
        assert!(status.success(), "ip -batch failed");
    }

    /// Runs `f` on a thread that entered this namespace, with its own current-thread runtime.
    pub fn run_in<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .unwrap_or_else(|e| panic!("cannot enter {path}: {e}"));
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot build a runtime: {e}"))
                .block_on(f())
        });
        match thread.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
