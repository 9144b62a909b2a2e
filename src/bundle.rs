//! `orchestrator-agent support-bundle`: one `tar.gz` an operator attaches to a ticket, so nobody has
//! to walk them through a dozen commands on a device they may reach only once.
//!
//! What goes in: `doctor.json` (every check of `doctor`), `config.json` (the effective
//! configuration and the `ORCHESTRATOR_*` environment, with the server URL's credentials and any
//! secret-looking variable redacted), `certificate.json` (what `certs status` shows: CN, issuer,
//! validity, file modes; never the key), the agent's log files (newest first, up to
//! [`LOG_BUDGET`]), the state files, the engine's own inspect of every container and network this
//! agent instance owns plus the tail of each runtime's log, a few `/proc` files, and `manifest.json`
//! saying what is in it and what could not be read.
//!
//! Never key material: nothing is read from the mTLS dir but the certificate's details, and every
//! file is scanned for PEM private-key blocks, which are replaced by a marker (a key pasted into a
//! log line by a person would otherwise leave the device in a ticket).
//!
//! The bundle is written to a temporary file next to its destination and renamed into place (never
//! a half-written bundle under the final name), mode 0600. Without `--output` it goes to
//! `<state-dir>/support/`, where only the newest [`KEEP_BUNDLES`] are kept (SD cards); `-` writes
//! it to stdout (`docker exec <agent> orchestrator-agent support-bundle -o - > bundle.tar.gz`).

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::{certs, doctor, logging, state};

/// Log bytes a bundle carries at most (newest files first).
pub const LOG_BUDGET: u64 = 16 << 20;
/// Bundles kept in `<state-dir>/support/`.
pub const KEEP_BUNDLES: usize = 3;
/// Lines of each runtime's own log.
const RUNTIME_LOG_LINES: u32 = 200;
/// Each engine call's limit: a hung engine must not hang the bundle.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);
/// File name prefix of bundles.
pub const PREFIX: &str = "orchestrator-support-";

/// What the bundle is made from.
#[derive(Debug, Clone)]
pub struct Input {
    /// The doctor's view (server, trust, mTLS dir, state dir, engine).
    pub doctor: doctor::Input,
    /// The effective configuration, already redacted ([`crate::config::Config::redacted`]).
    pub config: Value,
    /// `--output`: a path, `-` for stdout, or `None` for `<state-dir>/support/`.
    pub output: Option<PathBuf>,
}

/// One bundle being assembled in memory: entries and the manifest's notes.
struct Bundle {
    entries: Vec<(String, Vec<u8>)>,
    problems: Vec<String>,
}

impl Bundle {
    fn add(&mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        let bytes = match redact_private_keys(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(redacted) => redacted,
        };
        let bytes = match redact_url_credentials(&bytes) {
            Cow::Borrowed(_) => bytes,
            Cow::Owned(redacted) => redacted,
        };
        self.entries.push((name.into(), bytes));
    }

    fn add_json(&mut self, name: &str, value: &Value) {
        let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
        text.push(b'\n');
        self.add(name, text);
    }

    fn problem(&mut self, what: impl Into<String>) {
        self.problems.push(what.into());
    }
}

/// `orchestrator-agent support-bundle`: builds the bundle and prints where it went (to stderr when
/// the bundle itself goes to stdout). Exit code 0 when written, 2 when it could not be.
pub fn support_bundle_command(input: &Input) -> u8 {
    let bundle = collect(input);
    let to_stdout = input.output.as_deref() == Some(Path::new("-"));
    let result = if to_stdout {
        write_tar_gz(&bundle, io::stdout().lock()).map(|()| None)
    } else {
        let path = match &input.output {
            Some(p) => p.clone(),
            None => default_path(&input.doctor.state_dir),
        };
        write_file(&bundle, &path).map(Some)
    };
    match result {
        Ok(path) => {
            let summary = format!(
                "support bundle: {} files{}",
                bundle.entries.len(),
                if bundle.problems.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", {} parts unreadable (see manifest.json)",
                        bundle.problems.len()
                    )
                }
            );
            match path {
                Some(p) => println!("{}\n{summary}", p.display()),
                None => eprintln!("{summary}"),
            }
            if input.output.is_none() {
                prune(&input.doctor.state_dir.join("support"));
            }
            0
        }
        Err(e) => {
            eprintln!("support bundle: cannot write it: {e}");
            2
        }
    }
}

/// `<state-dir>/support/orchestrator-support-<UTC time>.tar.gz`.
fn default_path(state_dir: &Path) -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    state_dir
        .join("support")
        .join(format!("{PREFIX}{stamp}.tar.gz"))
}

/// Everything the bundle holds; what cannot be read is noted, never fatal.
fn collect(input: &Input) -> Bundle {
    let mut b = Bundle {
        entries: Vec::new(),
        problems: Vec::new(),
    };
    let state_dir = &input.doctor.state_dir;
    let checks = doctor::run_checks(&input.doctor);
    b.add_json("doctor.json", &doctor::to_json(&checks));
    b.add_json("config.json", &input.config);
    let now = crate::timefmt::now_unix();
    b.add_json(
        "certificate.json",
        &certs::inspect(&input.doctor.mtls_dir).to_json(now),
    );
    add_logs(&mut b, &state_dir.join("logs"));
    for file in [
        state::VNICS_FILE,
        state::CLIENTS_FILE,
        state::STOPPED_FILE,
        state::PENDING_FILE,
    ] {
        match std::fs::read(state_dir.join(file)) {
            Ok(bytes) => b.add(format!("state/{file}"), bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => b.problem(format!("state/{file}: {e}")),
        }
    }
    add_engine(&mut b, &input.doctor.docker_host, state_dir);
    for proc_file in [
        "version",
        "uptime",
        "loadavg",
        "meminfo",
        "net/route",
        "net/dev",
    ] {
        match std::fs::read(Path::new("/proc").join(proc_file)) {
            Ok(bytes) => b.add(
                format!("system/proc-{}", proc_file.replace('/', "-")),
                bytes,
            ),
            Err(e) => b.problem(format!("/proc/{proc_file}: {e}")),
        }
    }
    let manifest = json!({
        "tool": "orchestrator-agent support-bundle",
        "version": env!("CARGO_PKG_VERSION"),
        "created_at": crate::timefmt::now_utc_micros(),
        "state_dir": state_dir,
        "files": b.entries.iter().map(|(n, d)| json!({"name": n, "bytes": d.len()})).collect::<Vec<_>>(),
        "unreadable": b.problems,
        "never_included": "private keys: nothing is read from the mTLS dir but the certificate's details, and PEM private-key blocks in any file are replaced by a marker",
    });
    b.add_json("manifest.json", &manifest);
    b
}

/// The agent's own log files, newest first, until [`LOG_BUDGET`]; the newest file that does not fit
/// whole goes in as its last bytes.
fn add_logs(b: &mut Bundle, dir: &Path) {
    let mut files: Vec<(String, u64)> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let ours =
                    name.starts_with(logging::FILE_PREFIX) && name.ends_with(logging::FILE_SUFFIX);
                let meta = e.metadata().ok().filter(std::fs::Metadata::is_file)?;
                ours.then_some((name, meta.len()))
            })
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => return b.problem(format!("logs: {e}")),
    };
    // Names sort by date, then part number: newest last. Parts (`.N.log`) sort after the day's first.
    files.sort_by_key(|f| log_order(&f.0));
    let mut left = LOG_BUDGET;
    for (name, len) in files.into_iter().rev() {
        if left == 0 {
            b.problem(format!(
                "logs/{name}: left out (log budget of {LOG_BUDGET} bytes)"
            ));
            continue;
        }
        match std::fs::read(dir.join(&name)) {
            Ok(bytes) => {
                let start = bytes
                    .len()
                    .saturating_sub(usize::try_from(left).unwrap_or(usize::MAX));
                if start > 0 {
                    b.problem(format!("logs/{name}: only its last {left} bytes"));
                }
                left = left.saturating_sub(len);
                b.add(format!("logs/{name}"), bytes[start..].to_vec());
            }
            Err(e) => b.problem(format!("logs/{name}: {e}")),
        }
    }
}

/// Sort key of a log file name: its date, then its part (the day's first file is part 0).
fn log_order(name: &str) -> (String, u32) {
    let stem = name
        .strip_prefix(logging::FILE_PREFIX)
        .and_then(|s| s.strip_suffix(logging::FILE_SUFFIX))
        .unwrap_or(name);
    match stem.split_once('.') {
        Some((date, part)) => (date.to_owned(), part.parse().unwrap_or(0)),
        None => (stem.to_owned(), 0),
    }
}

/// The engine's inspect of this instance's containers and networks, and each runtime's log tail.
fn add_engine(b: &mut Bundle, docker_host: &str, state_dir: &Path) {
    let config = match docker_api::DockerConfig::from_host(docker_host) {
        Ok(c) => c,
        Err(e) => return b.problem(format!("engine: {docker_host}: {e}")),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return b.problem(format!("engine: no async runtime: {e}")),
    };
    let instance = state_dir.to_string_lossy().into_owned();
    rt.block_on(async {
        let docker = docker_api::Docker::new(config);
        let timed = |what: String| move |e: String| format!("engine: {what}: {e}");
        match call(docker.version()).await {
            Ok(v) => b.add_json(
                "engine/version.json",
                &json!({"version": v.version, "api_version": v.api_version}),
            ),
            Err(e) => return b.problem(timed("version".into())(e)),
        }
        let label = format!("{}={instance}", crate::runtime::naming::LABEL_INSTANCE);
        let filters = docker_api::Filters::new().label(label);
        match call(docker.list_containers(true, &filters)).await {
            Ok(list) => {
                let mut inspects = Vec::new();
                for c in list {
                    match call(docker.inspect_container_raw(&c.id)).await {
                        Ok(v) => inspects.push(v),
                        Err(e) => b.problem(timed(format!("inspect {}", c.id))(e)),
                    }
                    let name = c
                        .labels
                        .get(crate::runtime::naming::LABEL_RUNTIME)
                        .cloned()
                        .unwrap_or_else(|| c.id.clone());
                    match call(docker.container_logs_tail(&c.id, RUNTIME_LOG_LINES)).await {
                        Ok(text) => b.add(format!("engine/logs/{}.log", safe_name(&name)), text),
                        Err(e) => b.problem(timed(format!("logs of {name}"))(e)),
                    }
                }
                b.add_json("engine/containers.json", &Value::Array(inspects));
            }
            Err(e) => b.problem(timed("containers".into())(e)),
        }
        match call(docker.list_networks(&filters)).await {
            Ok(list) => {
                let mut inspects = Vec::new();
                for n in list {
                    match call(docker.inspect_network_raw(&n.id)).await {
                        Ok(v) => inspects.push(v),
                        Err(e) => b.problem(timed(format!("network {}", n.name))(e)),
                    }
                }
                b.add_json("engine/networks.json", &Value::Array(inspects));
            }
            Err(e) => b.problem(timed("networks".into())(e)),
        }
    });
}

/// One engine call under [`ENGINE_TIMEOUT`], its error as text.
async fn call<T>(
    f: impl std::future::Future<Output = Result<T, docker_api::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(ENGINE_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {ENGINE_TIMEOUT:?}")),
    }
}

/// A name usable as one path component inside the archive.
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Every PEM private-key block (`-----BEGIN … PRIVATE KEY-----` to its END line) replaced by a
/// marker; the input unchanged (borrowed) when it holds none.
pub fn redact_private_keys(bytes: &[u8]) -> Cow<'_, [u8]> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const MARK: &[u8] = b"[private key redacted by support-bundle]";
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut at = 0;
    while let Some(begin) = find(bytes, BEGIN, at) {
        let line_end = find(bytes, b"-----", begin + BEGIN.len()).map(|e| e + 5);
        let Some(line_end) = line_end else { break };
        let label = &bytes[begin + BEGIN.len()..line_end - 5];
        if !label.ends_with(b"PRIVATE KEY") {
            at = line_end;
            continue;
        }
        let mut end_marker = b"-----END ".to_vec();
        end_marker.extend_from_slice(label);
        end_marker.extend_from_slice(b"-----");
        // An unterminated block is redacted to the end: better too much than a key.
        let end = find(bytes, &end_marker, line_end).map_or(bytes.len(), |e| e + end_marker.len());
        let o = out.get_or_insert_with(Vec::new);
        o.extend_from_slice(&bytes[copied..begin]);
        o.extend_from_slice(MARK);
        copied = end;
        at = end;
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut o) => {
            o.extend_from_slice(&bytes[copied..]);
            Cow::Owned(o)
        }
    }
}

/// Every `scheme://user:password@host` with its credentials replaced by `[redacted]` (a URL the
/// agent or an error message printed); the input unchanged (borrowed) when it holds none.
pub fn redact_url_credentials(bytes: &[u8]) -> Cow<'_, [u8]> {
    let mut out: Option<Vec<u8>> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(3).position(|w| w == b"://") {
        let start = i + p + 3;
        let len = bytes[start..]
            .iter()
            .position(|&c| {
                matches!(c, b'/' | b'?' | b'#' | b'"' | b'\'' | b'<' | b'>' | b'`')
                    || c.is_ascii_whitespace()
            })
            .unwrap_or(bytes.len() - start);
        let authority = &bytes[start..start + len];
        if let Some(at) = authority.iter().rposition(|&c| c == b'@') {
            let o = out.get_or_insert_with(Vec::new);
            o.extend_from_slice(&bytes[copied..start]);
            o.extend_from_slice(b"[redacted]");
            copied = start + at;
        }
        i = start + len;
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut o) => {
            o.extend_from_slice(&bytes[copied..]);
            Cow::Owned(o)
        }
    }
}

/// The tar.gz of the bundle into `w`. Entries are regular files, mode 0600, dated now.
fn write_tar_gz(b: &Bundle, w: impl Write) -> io::Result<()> {
    let gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mtime = u64::try_from(crate::timefmt::now_unix()).unwrap_or(0);
    let root = "orchestrator-support";
    for (name, data) in &b.entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{root}/{name}"), data.as_slice())?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Writes the bundle to `path` through a temporary file in the same directory, mode 0600.
fn write_file(b: &Bundle, path: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map_or_else(|| "bundle".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let result = (|| {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut w = io::BufWriter::new(file);
        write_tar_gz(b, &mut w)?;
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path.to_path_buf())
}

/// Keeps the newest [`KEEP_BUNDLES`] bundles in `dir` (names sort by time); deletes only files
/// named like its own.
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(PREFIX) && n.ends_with(".tar.gz"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(KEEP_BUNDLES);
    for name in names.into_iter().take(excess) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The `ORCHESTRATOR_*` environment, secret-looking names' values redacted.
pub fn redacted_environment() -> Map<String, Value> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("ORCHESTRATOR_") || k == "RUST_LOG" || k == "DOCKER_HOST")
        .map(|(k, v)| {
            let upper = k.to_ascii_uppercase();
            let secret = ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASS"]
                .iter()
                .any(|s| upper.contains(s));
            let v = if secret { "[redacted]".to_owned() } else { v };
            (k, Value::String(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_key_blocks_are_redacted_and_the_rest_kept() {
        let text = b"before\n-----BEGIN PRIVATE KEY-----\nMIIEv\nabc\n-----END PRIVATE KEY-----\nmiddle \
-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nxyz\n-----END EC PRIVATE KEY-----after";
        let out = redact_private_keys(text);
        let out = String::from_utf8(out.into_owned()).unwrap();
        assert_eq!(
            out,
            "before\n[private key redacted by support-bundle]\nmiddle -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n[private key redacted by support-bundle]after"
        );
        // Unterminated: redacted to the end.
        let out = redact_private_keys(b"x -----BEGIN RSA PRIVATE KEY-----\nMIIE");
        assert_eq!(&*out, b"x [private key redacted by support-bundle]");
        // Nothing to redact: borrowed, unchanged.
        assert!(matches!(
            redact_private_keys(b"plain log line"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn url_credentials_are_redacted() {
        let out = redact_url_credentials(
            b"connect wss://op:hunter2@cloud:443/socket.io/?x=1 failed; see https://docs/a@b and \"https://u@h\"",
        );
        assert_eq!(
            String::from_utf8(out.into_owned()).unwrap(),
            "connect wss://[redacted]@cloud:443/socket.io/?x=1 failed; see https://docs/a@b and \"https://[redacted]@h\""
        );
        assert!(matches!(
            redact_url_credentials(b"https://cloud/x"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn log_files_sort_by_day_then_part() {
        let mut names = vec![
            "orchestrator-logs-2026-12-02.log",
            "orchestrator-logs-2026-12-01.2.log",
            "orchestrator-logs-2026-12-01.log",
            "orchestrator-logs-2026-12-01.10.log",
        ];
        names.sort_by_key(|n| log_order(n));
        assert_eq!(
            names,
            [
                "orchestrator-logs-2026-12-01.log",
                "orchestrator-logs-2026-12-01.2.log",
                "orchestrator-logs-2026-12-01.10.log",
                "orchestrator-logs-2026-12-02.log",
            ]
        );
    }

    #[test]
    fn newest_logs_first_within_the_budget_and_old_bundles_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("orchestrator-logs-2026-12-01.log"), b"old").unwrap();
        std::fs::write(logs.join("orchestrator-logs-2026-12-02.log"), b"new").unwrap();
        std::fs::write(logs.join("notes.txt"), b"not ours").unwrap();
        let mut b = Bundle {
            entries: Vec::new(),
            problems: Vec::new(),
        };
        add_logs(&mut b, &logs);
        let names: Vec<&str> = b.entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "logs/orchestrator-logs-2026-12-02.log",
                "logs/orchestrator-logs-2026-12-01.log"
            ]
        );
        let support = dir.path().join("support");
        std::fs::create_dir_all(&support).unwrap();
        for i in 0..5 {
            std::fs::write(
                support.join(format!("{PREFIX}2026120{i}T000000Z.tar.gz")),
                b"x",
            )
            .unwrap();
        }
        std::fs::write(support.join("keep-me.tar.gz"), b"x").unwrap();
        prune(&support);
        let mut left: Vec<String> = std::fs::read_dir(&support)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "keep-me.tar.gz".to_owned(),
                format!("{PREFIX}20261202T000000Z.tar.gz"),
                format!("{PREFIX}20261203T000000Z.tar.gz"),
                format!("{PREFIX}20261204T000000Z.tar.gz"),
            ]
        );
    }
}
