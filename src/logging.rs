//! Logging set-up: a `RUST_LOG`-style filter whose default is `--log-level` (`level` and
//! `target=level` directives: tracing-subscriber's `Targets`, not `EnvFilter`, whose regex engine
//! for span and field filters would cost ~170 KiB of a binary with a 3 MiB budget on armv7), a console layer on
//! stderr and a file layer writing `<state-dir>/logs/orchestrator-logs-YYYY-MM-DD.log`; plus
//! [`Throttle`], which collapses a repeating warning into one line per minute with a count.
//!
//! Log files are bounded so they never fill an SD card ([`Retention`], set by the `--log-*`
//! flags): files roll over at midnight UTC and when one reaches its size cap (the parts of a day
//! are `orchestrator-logs-YYYY-MM-DD.1.log`, `.2.log`, ...); files older than the retention
//! period are pruned, and the oldest files go whenever the number of files or their total size
//! (counting the current file at its cap) would pass its limit. No ANSI codes are written to them.
//! The file writer runs on its own thread behind a lossy queue (`tracing_appender::non_blocking`),
//! so a slow SD card never blocks the async runtime; lines are dropped rather than waited for when
//! the queue is full. tracing-appender's own rolling appender names files
//! `prefix.YYYY-MM-DD.suffix`, not the `orchestrator-logs-YYYY-MM-DD.log` the spec (and the Python
//! agent) use, and has no size cap, hence the small [`DailyFile`] writer here.
//!
//! This module never panics on a file-system problem: if the log directory cannot be created the
//! agent logs to stderr only and says so. It deletes only files named like its own.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime};
use tokio::time::{Duration, Instant};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// File name prefix of the log files.
pub const FILE_PREFIX: &str = "orchestrator-logs-";
/// File name suffix of the log files.
pub const FILE_SUFFIX: &str = ".log";
/// Log files older than this many days are deleted (default of `--log-keep-days`).
pub const KEEP_DAYS: i64 = 7;
/// Default cap of one log file (`--log-max-file-size`): 10 MiB.
pub const MAX_FILE_BYTES: u64 = 10 << 20;
/// Default cap of the number of log files (`--log-max-files`).
pub const MAX_FILES: usize = 10;
/// Default cap of the log files' total size (`--log-max-total`): 50 MiB.
pub const MAX_TOTAL_BYTES: u64 = 50 << 20;
/// The smallest file cap accepted (a line or two must fit).
pub const MIN_FILE_BYTES: u64 = 4 << 10;

/// How much log the agent keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Files dated this many days ago or earlier are deleted (today counts as one).
    pub keep_days: i64,
    /// A file that reached this size is closed and the next part of the day begins.
    pub max_file_bytes: u64,
    /// At most this many log files, the current one included.
    pub max_files: usize,
    /// At most this many bytes in all log files together, the current one counted at its cap.
    pub max_total_bytes: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_days: KEEP_DAYS,
            max_file_bytes: MAX_FILE_BYTES,
            max_files: MAX_FILES,
            max_total_bytes: MAX_TOTAL_BYTES,
        }
    }
}

impl Retention {
    /// The caps made consistent: at least one day, one file and [`MIN_FILE_BYTES`]; a file cap
    /// above the total cap is lowered to it.
    pub fn normalized(self) -> Self {
        let max_total_bytes = self.max_total_bytes.max(MIN_FILE_BYTES);
        Self {
            keep_days: self.keep_days.max(1),
            max_file_bytes: self.max_file_bytes.clamp(MIN_FILE_BYTES, max_total_bytes),
            max_files: self.max_files.max(1),
            max_total_bytes,
        }
    }
}

/// Keeps the file writer's thread alive; dropping it flushes pending lines. Hold it in `main`.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("invalid log level {level:?}: {reason}")]
pub struct LevelError {
    pub level: String,
    pub reason: String,
}

/// Builds the filter: `level` (default `info`) followed by the directives of `RUST_LOG`
/// (`level` or `target=level`, comma-separated), so `RUST_LOG` can refine per module; a later
/// directive for the same target wins. Python-style names (`WARNING`, `CRITICAL`) are accepted.
/// A bad `--log-level` is an error; a bad `RUST_LOG` directive is skipped (as `EnvFilter` does).
pub fn filter(level: Option<&str>, rust_log: Option<&str>) -> Result<Targets, LevelError> {
    let level = level
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("info");
    let base = level
        .split(',')
        .map(python_level)
        .collect::<Vec<_>>()
        .join(",");
    // A bare word is a target to `Targets` (all its levels on, everything else off): as
    // `--log-level` it is a typo of a level (`inf`), refused rather than silencing the agent.
    if let Some(bad) = base
        .split(',')
        .find(|d| !d.contains('=') && d.parse::<LevelFilter>().is_err())
    {
        return Err(LevelError {
            level: level.to_owned(),
            reason: format!("{bad:?} is not a level (error, warn, info, debug, trace, off)"),
        });
    }
    let mut targets: Targets = base.parse().map_err(|e| LevelError {
        level: level.to_owned(),
        reason: format!("{e}"),
    })?;
    // (An empty directive would parse as a default of `error`.)
    for directive in rust_log
        .unwrap_or_default()
        .split(',')
        .filter(|d| !d.trim().is_empty())
    {
        let Ok(d) = python_level(directive).parse::<Targets>() else {
            continue;
        };
        if let Some(default) = d.default_level() {
            targets = targets.with_default(default);
        }
        targets = targets.with_targets(d);
    }
    Ok(targets)
}

/// `WARNING` → `warn`, `CRITICAL`/`FATAL` → `error` in a directive's level; the rest as is.
fn python_level(directive: &str) -> String {
    let directive = directive.trim();
    let (target, level) = match directive.rsplit_once('=') {
        Some((t, l)) => (Some(t), l),
        None => (None, directive),
    };
    let level = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn",
        "critical" | "fatal" => "error",
        _ => level,
    };
    match target {
        Some(t) => format!("{t}={level}"),
        None => level.to_owned(),
    }
}

/// Log lines queued for the file writer thread.
const QUEUE_LINES: usize = 1024;

/// Installs the global subscriber. Returns the guard to keep; when file logging cannot be set up
/// the agent logs to stderr only, with a warning saying why.
pub fn init(
    level: Option<&str>,
    log_dir: &Path,
    retention: Retention,
) -> Result<LogGuard, LevelError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(level, rust_log.as_deref())?;
    let console = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match DailyFile::open(log_dir, retention) {
        Ok(file) => {
            // The default queue is 128,000 lines preallocated (~4 MiB resident for the life of the
            // process, most of the agent's idle RSS). Lines beyond this bound are dropped and counted
            // by tracing-appender rather than blocking the async runtime on a slow SD card.
            let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
                .buffered_lines_limit(QUEUE_LINES)
                .finish(file);
            let file_layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false);
            tracing_subscriber::registry()
                .with(filter)
                .with(console)
                .with(file_layer)
                .init();
            Ok(LogGuard { _file: Some(guard) })
        }
        Err(e) => {
            tracing_subscriber::registry()
                .with(filter)
                .with(console)
                .init();
            tracing::warn!(
                "cannot write log files in {}: {e}; logging to stderr only",
                log_dir.display()
            );
            Ok(LogGuard { _file: None })
        }
    }
}

/// The file name for `date`: `orchestrator-logs-YYYY-MM-DD.log`.
pub fn file_name(date: Date) -> String {
    part_file_name(date, 0)
}

/// The file name of part `part` of `date`: part 0 is [`file_name`], part N ≥ 1
/// `orchestrator-logs-YYYY-MM-DD.N.log`.
pub fn part_file_name(date: Date, part: u32) -> String {
    let day = format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    );
    if part == 0 {
        format!("{FILE_PREFIX}{day}{FILE_SUFFIX}")
    } else {
        format!("{FILE_PREFIX}{day}.{part}{FILE_SUFFIX}")
    }
}

/// The date and part of a log file name, if it is one of ours.
pub fn parse_name(name: &str) -> Option<(Date, u32)> {
    let stamp = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let (day, part) = match stamp.split_once('.') {
        Some((day, part)) => {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || part.starts_with('0')
            {
                return None;
            }
            (day, part.parse().ok()?)
        }
        None => (stamp, 0),
    };
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Some((Date::parse(day, &format).ok()?, part))
}

/// The date in a log file name, if it is one of ours.
pub fn date_of(name: &str) -> Option<Date> {
    parse_name(name).map(|(date, _)| date)
}

/// Whether a file dated `file` is past retention on `today` (keeping `keep_days` days, today
/// included).
pub fn expired(file: Date, today: Date, keep_days: i64) -> bool {
    (today - file).whole_days() >= keep_days
}

/// A `Write` that appends to the current day's file (UTC), starts a new part when the file
/// reaches its cap and a new file at midnight, pruning as [`Retention`] says at each switch. Runs
/// on the non-blocking writer's thread, so plain `std::fs` is right.
pub struct DailyFile {
    dir: PathBuf,
    retention: Retention,
    date: Date,
    part: u32,
    file: File,
    /// Bytes in the current file.
    size: u64,
}

impl DailyFile {
    /// Creates the directory if needed, opens today's latest part for appending (a new part when
    /// it is full) and prunes.
    pub fn open(dir: &Path, retention: Retention) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Self::open_on(
            dir,
            retention.normalized(),
            OffsetDateTime::now_utc().date(),
        )
    }

    fn open_on(dir: &Path, retention: Retention, today: Date) -> io::Result<Self> {
        let part = latest_part(dir, today);
        let (file, size) = open_file(dir, today, part)?;
        let mut this = Self {
            dir: dir.to_owned(),
            retention,
            date: today,
            part,
            file,
            size,
        };
        if size >= retention.max_file_bytes {
            this.switch_to(today, part + 1);
        } else {
            this.prune();
        }
        Ok(this)
    }

    /// Switches to `today`'s file when the date changed (separate from the clock for tests).
    fn roll_to(&mut self, today: Date) {
        if today != self.date {
            let part = latest_part(&self.dir, today);
            self.switch_to(today, part);
        }
    }

    /// Continues in `date`'s part `part` and prunes. Keeps writing to the old file if the new one
    /// cannot be opened; the next line tries again.
    fn switch_to(&mut self, date: Date, part: u32) {
        if let Ok((file, size)) = open_file(&self.dir, date, part) {
            let _ = self.file.flush();
            self.file = file;
            self.size = size;
            self.date = date;
            self.part = part;
            self.prune();
        }
    }

    fn current_name(&self) -> String {
        part_file_name(self.date, self.part)
    }

    fn prune(&self) {
        prune(&self.dir, self.date, &self.current_name(), &self.retention);
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll_to(OffsetDateTime::now_utc().date());
        let cap = self.retention.max_file_bytes;
        if self.size > 0 && self.size.saturating_add(buf.len() as u64) > cap {
            self.switch_to(self.date, self.part + 1);
        }
        let n = self.file.write(buf)?;
        self.size = self.size.saturating_add(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn open_file(dir: &Path, date: Date, part: u32) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(part_file_name(date, part)))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok((file, size))
}

/// The highest part of `date` already on disk (0 when there is none).
fn latest_part(dir: &Path, date: Date) -> u32 {
    our_files(dir)
        .into_iter()
        .filter(|f| f.date == date)
        .map(|f| f.part)
        .max()
        .unwrap_or(0)
}

/// One of our log files on disk.
struct LogFile {
    path: PathBuf,
    name: String,
    date: Date,
    part: u32,
    bytes: u64,
}

fn our_files(dir: &Path) -> Vec<LogFile> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (date, part) = parse_name(&name)?;
            let meta = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some(LogFile {
                path: entry.path(),
                name,
                date,
                part,
                bytes: meta.len(),
            })
        })
        .collect()
}

/// Deletes our log files past retention, then the oldest ones until the others leave room for
/// `current` to reach its cap within the file and byte totals. `current` itself is never deleted;
/// other files in the directory are left alone.
fn prune(dir: &Path, today: Date, current: &str, r: &Retention) {
    let mut files = our_files(dir);
    files.retain(|f| {
        if f.name != current && expired(f.date, today, r.keep_days) {
            let _ = std::fs::remove_file(&f.path);
            return false;
        }
        f.name != current
    });
    files.sort_by_key(|f| (f.date, f.part));
    let mut count = files.len();
    let mut bytes: u64 = files.iter().map(|f| f.bytes).sum();
    for f in &files {
        let over_count = count + 1 > r.max_files;
        let over_bytes = bytes.saturating_add(r.max_file_bytes) > r.max_total_bytes;
        if !over_count && !over_bytes {
            break;
        }
        if std::fs::remove_file(&f.path).is_ok() {
            count -= 1;
            bytes = bytes.saturating_sub(f.bytes);
        }
    }
}

/// Collapses a repeating event into one log line per window (a minute by default) with a count.
///
/// [`Throttle::hit`] at each occurrence says whether to log it now, and how many earlier ones were
/// kept quiet since the last line; [`Throttle::flush`], called now and then (and when the source
/// goes away), reports a quiet count whose window has ended even if nothing happens afterwards.
/// Pure over tokio's clock, so it is tested with a paused one.
#[derive(Debug, Clone)]
pub struct Throttle {
    window: Duration,
    /// When the last line was logged.
    last_line: Option<Instant>,
    /// Occurrences not logged since then.
    quiet: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

impl Throttle {
    /// A throttle allowing one line per `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last_line: None,
            quiet: 0,
        }
    }

    /// One occurrence now: `Some(n)` when it should be logged, `n` being the occurrences kept
    /// quiet since the last line; `None` when it should not (it is counted).
    pub fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last_line {
            Some(at) if now.saturating_duration_since(at) < self.window => {
                self.quiet += 1;
                None
            }
            _ => {
                self.last_line = Some(now);
                Some(std::mem::take(&mut self.quiet))
            }
        }
    }

    /// The occurrences kept quiet in a window that has ended (then a line is due for them), or
    /// with `force`, in any window (the source is going away).
    pub fn flush(&mut self, force: bool) -> Option<u64> {
        let now = Instant::now();
        let ended = self
            .last_line
            .is_none_or(|at| now.saturating_duration_since(at) >= self.window);
        if self.quiet == 0 || !(ended || force) {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// Log capture for tests: a thread-local subscriber writing formatted lines into a buffer.
#[cfg(test)]
pub(crate) mod capture {
    use std::sync::{Arc, Mutex};

    /// The captured text.
    #[derive(Clone, Default)]
    pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        pub(crate) fn text(&self) -> String {
            let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Captures what this thread logs at `level` and above (as the agent formats it) until the
    /// guard is dropped. Use a current-thread runtime so spawned tasks log here too.
    pub(crate) fn at(level: tracing::Level) -> (tracing::subscriber::DefaultGuard, Captured) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_max_level(level)
            .with_ansi(false)
            .finish();
        (tracing::subscriber::set_default(subscriber), captured)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn file_names_follow_the_spec() {
        assert_eq!(
            file_name(date!(2026 - 11 - 02)),
            "orchestrator-logs-2026-11-02.log"
        );
        assert_eq!(
            date_of("orchestrator-logs-2026-11-02.log"),
            Some(date!(2026 - 11 - 02))
        );
        assert_eq!(date_of("orchestrator-logs.2026-11-02.log"), None);
        assert_eq!(date_of("orchestrator-logs-2026-13-02.log"), None);
        assert_eq!(date_of("other.log"), None);
    }

    #[test]
    fn retention_keeps_seven_days_including_today() {
        let today = date!(2026 - 11 - 22);
        assert!(!expired(today, today, 7));
        assert!(!expired(date!(2026 - 11 - 16), today, 7));
        assert!(expired(date!(2026 - 11 - 15), today, 7));
        assert!(!expired(date!(2026 - 11 - 23), today, 7));
    }

    #[test]
    fn daily_file_appends_to_todays_file_and_prunes_old_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("mkdir");
        let today = OffsetDateTime::now_utc().date();
        let old = logs.join(file_name(today - time::Duration::days(10)));
        let recent = logs.join(file_name(today - time::Duration::days(2)));
        let foreign = logs.join("keep-me.txt");
        for p in [&old, &recent, &foreign] {
            std::fs::write(p, "x").expect("write");
        }
        let mut f = DailyFile::open(&logs, Retention::default()).expect("open");
        f.write_all(b"hello\n").expect("write");
        f.flush().expect("flush");
        let mut f2 = DailyFile::open(&logs, Retention::default()).expect("reopen");
        f2.write_all(b"again\n").expect("write");
        let text = std::fs::read_to_string(logs.join(file_name(today))).expect("read");
        assert_eq!(text, "hello\nagain\n", "appends, never truncates");
        assert!(!old.exists() && recent.exists() && foreign.exists());
    }

    #[test]
    fn a_new_day_opens_a_new_file_and_prunes_by_the_new_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let today = OffsetDateTime::now_utc().date();
        let mut f = DailyFile::open(dir.path(), Retention::default()).expect("open");
        f.write_all(b"day one\n").expect("write");
        let later = today + time::Duration::days(7);
        f.roll_to(later);
        // Straight to the file: `write` would roll back to the real date.
        f.file.write_all(b"day eight\n").expect("write");
        assert!(
            !dir.path().join(file_name(today)).exists(),
            "a 7-day-old file is pruned"
        );
        let text = std::fs::read_to_string(dir.path().join(file_name(later))).expect("read");
        assert_eq!(text, "day eight\n");
    }

    #[test]
    fn parts_of_a_day_are_named_and_recognised() {
        let d = date!(2026 - 11 - 02);
        assert_eq!(part_file_name(d, 0), "orchestrator-logs-2026-11-02.log");
        assert_eq!(part_file_name(d, 3), "orchestrator-logs-2026-11-02.3.log");
        assert_eq!(
            parse_name("orchestrator-logs-2026-11-02.3.log"),
            Some((d, 3))
        );
        assert_eq!(parse_name("orchestrator-logs-2026-11-02.log"), Some((d, 0)));
        for bad in [
            "orchestrator-logs-2026-11-02..log",
            "orchestrator-logs-2026-11-02.03.log",
            "orchestrator-logs-2026-11-02.x.log",
            "orchestrator-logs-2026-11-02.1.2.log",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    fn small(max_file_bytes: u64, max_files: usize, max_total_bytes: u64) -> Retention {
        Retention {
            keep_days: 7,
            max_file_bytes,
            max_files,
            max_total_bytes,
        }
    }

    /// (name, size) of our files in `dir`, oldest first.
    fn listing(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<_> = our_files(dir)
            .into_iter()
            .map(|f| ((f.date, f.part), f.name, f.bytes))
            .collect();
        files.sort();
        files.into_iter().map(|(_, n, b)| (n, b)).collect()
    }

    #[test]
    fn a_full_file_continues_in_the_next_part_and_never_passes_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let today = OffsetDateTime::now_utc().date();
        let mut f = DailyFile::open(dir.path(), small(4096, 100, 1 << 20)).expect("open");
        let line = [b'a'; 99];
        for _ in 0..200 {
            f.write_all(&line).expect("write");
            f.write_all(b"\n").expect("write");
        }
        let files = listing(dir.path());
        assert_eq!(files.len(), 5, "{files:?}"); // 20,000 bytes in 4 KiB parts
        assert_eq!(files[0].0, file_name(today));
        assert_eq!(files[4].0, part_file_name(today, 4));
        assert!(files.iter().all(|(_, b)| *b <= 4096), "{files:?}");
        let total: u64 = files.iter().map(|(_, b)| b).sum();
        assert_eq!(total, 20_000, "nothing lost");
        // A restart continues in the latest part rather than the first.
        drop(f);
        let mut f = DailyFile::open(dir.path(), small(4096, 100, 1 << 20)).expect("reopen");
        f.write_all(b"after restart\n").expect("write");
        let last =
            std::fs::read_to_string(dir.path().join(part_file_name(today, 4))).expect("read");
        assert!(last.ends_with("after restart\n"));
        assert_eq!(listing(dir.path()).len(), 5);
    }

    #[test]
    fn a_flood_stays_within_the_file_count_and_total_size_caps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let foreign = dir.path().join("not-ours.log");
        std::fs::write(&foreign, vec![b'x'; 100_000]).expect("write");
        let r = small(8192, 4, 20_000);
        let mut f = DailyFile::open(dir.path(), r).expect("open");
        for i in 0..20_000u32 {
            writeln!(f, "line {i:08} of a flood of warnings").expect("write");
            let files = listing(dir.path());
            let total: u64 = files.iter().map(|(_, b)| b).sum();
            assert!(files.len() <= 4, "{files:?}");
            assert!(total <= 20_000, "{total} bytes: {files:?}");
        }
        let files = listing(dir.path());
        let newest =
            std::fs::read_to_string(dir.path().join(&files[files.len() - 1].0)).expect("read");
        assert!(
            newest.contains("line 00019999"),
            "the newest lines are kept"
        );
        assert!(foreign.exists(), "other files are never touched");
    }

    #[test]
    fn the_oldest_files_go_first_when_a_cap_is_reached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let today = OffsetDateTime::now_utc().date();
        let day = |n: i64| today - time::Duration::days(n);
        for (date, part) in [
            (day(4), 0),
            (day(3), 0),
            (day(3), 1),
            (day(2), 0),
            (day(1), 0),
        ] {
            std::fs::write(
                dir.path().join(part_file_name(date, part)),
                vec![b'x'; 5000],
            )
            .expect("write");
        }
        // Three files at most: the two newest old ones stay beside today's.
        let _f = DailyFile::open(dir.path(), small(5000, 3, 1 << 20)).expect("open");
        let names: Vec<String> = listing(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [file_name(day(2)), file_name(day(1)), file_name(today)]
        );
        // 12,000 bytes in all: one old file (5,000) plus today's at its cap (5,000) fit, two do not.
        drop(_f);
        let _f = DailyFile::open(dir.path(), small(5000, 10, 12_000)).expect("open");
        let names: Vec<String> = listing(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [file_name(day(1)), file_name(today)]);
    }

    #[test]
    fn inconsistent_caps_are_normalized() {
        let r = Retention {
            keep_days: 0,
            max_file_bytes: 1 << 30,
            max_files: 0,
            max_total_bytes: 1 << 20,
        }
        .normalized();
        assert_eq!(r.keep_days, 1);
        assert_eq!(r.max_files, 1);
        assert_eq!(r.max_file_bytes, 1 << 20, "a file cannot exceed the total");
        assert_eq!(small(1, 1, 1).normalized().max_file_bytes, MIN_FILE_BYTES);
    }

    #[tokio::test(start_paused = true)]
    async fn a_repeating_warning_is_one_line_per_minute_with_a_count() {
        let mut t = Throttle::default();
        assert_eq!(t.hit(), Some(0), "the first one is logged");
        for _ in 0..500 {
            tokio::time::advance(Duration::from_millis(100)).await;
            assert_eq!(t.hit(), None, "quiet within the minute");
        }
        assert_eq!(t.flush(false), None, "the minute is not over");
        tokio::time::advance(Duration::from_secs(10)).await;
        // 60 s after the first line: the next one says how many were kept quiet.
        assert_eq!(t.hit(), Some(500));
        assert_eq!(t.hit(), None);
        assert_eq!(t.hit(), None);
        // The flood stops: a later flush reports the rest even though nothing else happens.
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(t.flush(false), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(t.flush(false), Some(2));
        assert_eq!(t.flush(false), None, "reported once");
        // Quiet occurrences are reported when the source goes away, whatever the window.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.hit(), Some(0));
        assert_eq!(t.hit(), None);
        assert_eq!(t.flush(true), Some(1));
        assert_eq!(t.flush(true), None);
    }

    #[test]
    fn an_unwritable_log_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").expect("write");
        assert!(DailyFile::open(&blocker.join("logs"), Retention::default()).is_err());
    }

    #[test]
    fn levels_accept_python_names_and_reject_garbage() {
        for ok in [
            "info",
            "DEBUG",
            "WARNING",
            "critical",
            "warn",
            "orchestrator_agent=debug",
        ] {
            assert!(filter(Some(ok), None).is_ok(), "{ok}");
        }
        assert!(filter(None, Some("orchestrator_agent::cloud=trace")).is_ok());
        assert!(filter(Some("loud=="), None).is_err());
        assert!(filter(Some("nonsense"), None).is_err());
    }

    #[test]
    fn rust_log_refines_the_level_per_target_and_skips_bad_directives() {
        use tracing::Level;
        let f = filter(
            Some("warning"),
            Some("orchestrator_agent::cloud=trace, bogus==x ,docker_api=CRITICAL"),
        )
        .unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::WARN));
        assert!(f.would_enable("orchestrator_agent::cloud::session", &Level::TRACE));
        assert!(!f.would_enable("orchestrator_agent::runtime", &Level::INFO));
        assert!(f.would_enable("orchestrator_agent::runtime", &Level::WARN));
        assert!(!f.would_enable("docker_api::client", &Level::WARN));
        assert!(f.would_enable("docker_api::client", &Level::ERROR));
        // A bare level in RUST_LOG replaces the default; an empty or absent RUST_LOG keeps it.
        let f = filter(Some("info"), Some("debug")).unwrap();
        assert_eq!(f.default_level(), Some(LevelFilter::DEBUG));
        for rust_log in [None, Some(""), Some(" , ")] {
            let f = filter(Some("debug"), rust_log).unwrap();
            assert_eq!(f.default_level(), Some(LevelFilter::DEBUG), "{rust_log:?}");
            assert!(f.would_enable("orchestrator_agent::runtime", &Level::DEBUG));
        }
    }
}
