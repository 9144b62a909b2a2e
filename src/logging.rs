//! Logging set-up: a `RUST_LOG`-style filter whose default is `--log-level`, a console layer on
//! stderr and a file layer writing `<state-dir>/logs/orchestrator-logs-YYYY-MM-DD.log`.
//!
//! Files roll over at midnight UTC, files older than [`KEEP_DAYS`] days are pruned, and no ANSI
//! codes are written to them. The file writer runs on its own thread behind a lossy queue
//! (`tracing_appender::non_blocking`), so a slow SD card never blocks the async runtime; lines are
//! dropped rather than waited for when the queue is full. tracing-appender's own rolling appender
//! names files `prefix.YYYY-MM-DD.suffix`, not the `orchestrator-logs-YYYY-MM-DD.log` the spec
//! (and the Python agent) use, hence the small [`DailyFile`] writer here.
//!
//! This module never panics on a file-system problem: if the log directory cannot be created the
//! agent logs to stderr only and says so.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use time::{Date, OffsetDateTime};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// File name prefix of the log files.
pub const FILE_PREFIX: &str = "orchestrator-logs-";
/// File name suffix of the log files.
pub const FILE_SUFFIX: &str = ".log";
/// Log files older than this many days are deleted.
pub const KEEP_DAYS: i64 = 7;

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

/// Builds the filter: `level` (default `info`) followed by the directives of `RUST_LOG`, so
/// `RUST_LOG` can refine per module. Python-style names (`WARNING`, `CRITICAL`) are accepted.
pub fn filter(level: Option<&str>, rust_log: Option<&str>) -> Result<EnvFilter, LevelError> {
    let level = level
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .unwrap_or("info");
    let base = match level.to_ascii_lowercase().as_str() {
        "warning" => "warn".to_owned(),
        "critical" | "fatal" => "error".to_owned(),
        _ => level.to_owned(),
    };
    let spec = match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(extra) => format!("{base},{extra}"),
        None => base.clone(),
    };
    // Validate the level on its own first, so a typo in --log-level is reported as such.
    EnvFilter::builder().parse(&base).map_err(|e| LevelError {
        level: level.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(EnvFilter::builder().parse_lossy(spec))
}

/// Log lines queued for the file writer thread.
const QUEUE_LINES: usize = 1024;

/// Installs the global subscriber. Returns the guard to keep and, when file logging could not be
/// set up, the reason (already logged as a warning).
pub fn init(level: Option<&str>, log_dir: &Path) -> Result<LogGuard, LevelError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = filter(level, rust_log.as_deref())?;
    let console = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    match DailyFile::open(log_dir, KEEP_DAYS) {
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
    format!(
        "{FILE_PREFIX}{:04}-{:02}-{:02}{FILE_SUFFIX}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The date in a log file name, if it is one of ours.
pub fn date_of(name: &str) -> Option<Date> {
    let stamp = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(stamp, &format).ok()
}

/// Whether a file dated `file` is past retention on `today` (keeping `keep_days` days, today
/// included).
pub fn expired(file: Date, today: Date, keep_days: i64) -> bool {
    (today - file).whole_days() >= keep_days
}

/// A `Write` that appends to the current day's file (UTC) and switches files at midnight,
/// pruning expired ones. Runs on the non-blocking writer's thread, so plain `std::fs` is right.
pub struct DailyFile {
    dir: PathBuf,
    keep_days: i64,
    date: Date,
    file: File,
}

impl DailyFile {
    /// Creates the directory if needed, opens today's file for appending and prunes old files.
    pub fn open(dir: &Path, keep_days: i64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let today = OffsetDateTime::now_utc().date();
        let file = Self::open_file(dir, today)?;
        prune(dir, today, keep_days);
        Ok(Self {
            dir: dir.to_owned(),
            keep_days,
            date: today,
            file,
        })
    }

    fn open_file(dir: &Path, date: Date) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(file_name(date)))
    }

    fn roll_if_needed(&mut self) {
        self.roll_to(OffsetDateTime::now_utc().date());
    }

    /// Switches to `today`'s file when the date changed (separate from the clock for tests).
    fn roll_to(&mut self, today: Date) {
        if today == self.date {
            return;
        }
        // Keep writing to the old file if the new one cannot be opened; try again next line.
        if let Ok(file) = Self::open_file(&self.dir, today) {
            let _ = self.file.flush();
            self.file = file;
            self.date = today;
            prune(&self.dir, today, self.keep_days);
        }
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.roll_if_needed();
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Deletes our log files past retention; other files in the directory are left alone.
fn prune(dir: &Path, today: Date, keep_days: i64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(date) = name.to_str().and_then(date_of) else {
            continue;
        };
        if expired(date, today, keep_days) {
            let _ = std::fs::remove_file(entry.path());
        }
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
        let mut f = DailyFile::open(&logs, 7).expect("open");
        f.write_all(b"hello\n").expect("write");
        f.flush().expect("flush");
        let mut f2 = DailyFile::open(&logs, 7).expect("reopen");
        f2.write_all(b"again\n").expect("write");
        let text = std::fs::read_to_string(logs.join(file_name(today))).expect("read");
        assert_eq!(text, "hello\nagain\n", "appends, never truncates");
        assert!(!old.exists() && recent.exists() && foreign.exists());
    }

    #[test]
    fn a_new_day_opens_a_new_file_and_prunes_by_the_new_date() {
        let dir = tempfile::tempdir().expect("tempdir");
        let today = OffsetDateTime::now_utc().date();
        let mut f = DailyFile::open(dir.path(), 7).expect("open");
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
    fn an_unwritable_log_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "x").expect("write");
        assert!(DailyFile::open(&blocker.join("logs"), 7).is_err());
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
    }
}
