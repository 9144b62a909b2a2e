//! Host metrics for the heartbeat and `get_consumption_orchestrator`: CPU, memory and disk from
//! `/proc` and `statvfs`, plus the static system info (upstream §4.1, §4.2, §4.4).
//!
//! The formulas are pure functions over parsed `/proc` data ([`CpuTimes::from_stats`],
//! [`memory_used_bytes`], [`physical_fs_types`], [`disk_mountpoints`]) so they are tested
//! against fixture files. The `read_*` functions do the I/O and are **blocking**: call them from
//! `spawn_blocking` (statvfs on a hung network filesystem can block indefinitely).
//! This module never emits, logs routine values or keeps history (see `usage`).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use procfs::prelude::*;
use procfs::{ExplicitSystemInfo, KernelStats, Meminfo, MountEntry};

/// 1024³: the original calls it "GB".
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Reading a metrics source failed.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: &'static str,
        #[source]
        source: procfs::ProcError,
    },
}

/// Cumulative CPU ticks over all CPUs, split into busy and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

impl CpuTimes {
    /// From `/proc/stat`'s `cpu` line, as psutil counts it: total is the sum of user, nice,
    /// system, idle, iowait, irq, softirq and steal (guest time is already inside user/nice);
    /// busy is total minus idle and iowait.
    pub fn from_stats(stats: &KernelStats) -> Self {
        let t = &stats.total;
        let idle = t.idle + t.iowait.unwrap_or(0);
        let total = t.user
            + t.nice
            + t.system
            + idle
            + t.irq.unwrap_or(0)
            + t.softirq.unwrap_or(0)
            + t.steal.unwrap_or(0);
        Self {
            busy: total.saturating_sub(idle),
            total,
        }
    }
}

/// System-wide CPU utilisation between two samples, percent 0–100. No elapsed ticks (or a
/// counter that went backwards) reads as 0.
pub fn cpu_percent(prev: CpuTimes, cur: CpuTimes) -> f64 {
    let total = cur.total.saturating_sub(prev.total);
    if total == 0 {
        return 0.0;
    }
    let busy = cur.busy.saturating_sub(prev.busy).min(total);
    busy as f64 * 100.0 / total as f64
}

/// psutil's Linux "used" memory: total − free − buffers − cached − SReclaimable, or
/// total − free when that goes negative (bytes).
pub fn memory_used_bytes(m: &Meminfo) -> u64 {
    let reclaimable = m.buffers + m.cached + m.s_reclaimable.unwrap_or(0);
    let used = i128::from(m.mem_total) - i128::from(m.mem_free) - i128::from(reclaimable);
    if used < 0 {
        m.mem_total.saturating_sub(m.mem_free)
    } else {
        u64::try_from(used).unwrap_or(0)
    }
}

/// Filesystem types backed by a device: `/proc/filesystems` entries without `nodev`, plus `zfs`.
pub fn physical_fs_types(filesystems: &str) -> HashSet<String> {
    let mut types: HashSet<String> = filesystems
        .lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            match (cols.next(), cols.next()) {
                (Some("nodev"), _) => None,
                (Some(fs), None) => Some(fs.to_owned()),
                _ => None,
            }
        })
        .collect();
    types.insert("zfs".to_owned());
    types
}

/// Types never counted even when listed as physical (upstream §4.2 step 2).
const SKIPPED_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "ramfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "debugfs",
    "tracefs",
    "pstore",
    "autofs",
    "devpts",
    "mqueue",
    "hugetlbfs",
    "fusectl",
    "none",
];

/// The mountpoints whose space counts (upstream §4.2): a non-empty device, a physical, not
/// skipped fs type, first mount of each device only.
pub fn disk_mountpoints(mounts: &[MountEntry], physical: &HashSet<String>) -> Vec<String> {
    let mut seen = HashSet::new();
    mounts
        .iter()
        .filter(|m| !m.fs_spec.is_empty() && physical.contains(&m.fs_vfstype))
        .filter(|m| {
            !SKIPPED_FS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(&m.fs_vfstype))
        })
        .filter(|m| seen.insert(m.fs_spec.clone()))
        .map(|m| m.fs_file.clone())
        .collect()
}

/// Summed disk space, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskTotals {
    pub total: u64,
    pub used: u64,
}

/// Rounds to one decimal (the heartbeat's GiB and percent values).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Bytes → GiB rounded to one decimal.
pub fn gib1(bytes: u64) -> f64 {
    round1(bytes as f64 / GIB)
}

// ---------------------------------------------------------------------------------------------
// Blocking readers
// ---------------------------------------------------------------------------------------------

fn open(path: &'static str) -> Result<BufReader<File>, MetricsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| MetricsError::Io { path, source })
}

/// Parses `/proc/stat` text. Tick values are kept raw (the ticks-per-second factor only matters
/// for durations, not for ratios).
pub fn parse_stat(reader: impl std::io::BufRead) -> Result<KernelStats, procfs::ProcError> {
    let info = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: cfg!(target_endian = "little"),
    };
    KernelStats::from_buf_read(reader, &info)
}

/// Reads the current CPU counters. Blocking.
pub fn read_cpu() -> Result<(CpuTimes, usize), MetricsError> {
    const PATH: &str = "/proc/stat";
    let stats =
        parse_stat(open(PATH)?).map_err(|source| MetricsError::Parse { path: PATH, source })?;
    Ok((CpuTimes::from_stats(&stats), stats.cpu_time.len()))
}

/// Reads `/proc/meminfo`. Blocking.
pub fn read_meminfo() -> Result<Meminfo, MetricsError> {
    const PATH: &str = "/proc/meminfo";
    Meminfo::from_buf_read(open(PATH)?).map_err(|source| MetricsError::Parse { path: PATH, source })
}

/// Sums statvfs over the mountpoints; ones that fail are skipped. Blocking (and may hang on a
/// dead network filesystem).
pub fn statvfs_totals(mountpoints: &[String]) -> DiskTotals {
    let mut sum = DiskTotals::default();
    // The statvfs field types are target-specific (u32 on 32-bit ARM), hence the casts.
    #[allow(clippy::unnecessary_cast)]
    for mp in mountpoints {
        let Ok(st) = nix::sys::statvfs::statvfs(Path::new(mp)) else {
            continue;
        };
        let frsize = st.fragment_size() as u64;
        let total = (st.blocks() as u64).saturating_mul(frsize);
        let free = (st.blocks_free() as u64).saturating_mul(frsize);
        sum.total = sum.total.saturating_add(total);
        sum.used = sum.used.saturating_add(total.saturating_sub(free));
    }
    sum
}

/// Disk totals over the physical filesystems of this process's mount table. Blocking.
pub fn read_disk() -> Result<DiskTotals, MetricsError> {
    const MOUNTS: &str = "/proc/self/mounts";
    const FILESYSTEMS: &str = "/proc/filesystems";
    let filesystems = std::fs::read_to_string(FILESYSTEMS).map_err(|source| MetricsError::Io {
        path: FILESYSTEMS,
        source,
    })?;
    let mounts =
        Vec::<MountEntry>::from_buf_read(open(MOUNTS)?).map_err(|source| MetricsError::Parse {
            path: MOUNTS,
            source,
        })?;
    Ok(statvfs_totals(&disk_mountpoints(
        &mounts,
        &physical_fs_types(&filesystems),
    )))
}

/// The snapshot taken once (upstream §4.4), minus `ip_addresses` (those come from netmon) and
/// the disk total (statvfs may hang, so it is sampled apart, see [`read_disk`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StaticInfo {
    /// Total RAM, MiB, truncated.
    pub memory_mib: u64,
    /// Total RAM, bytes.
    pub memory_total_bytes: u64,
    /// Online logical CPUs of the host (not cgroup-limited).
    pub cpu: Option<usize>,
    /// `Linux <kernel release>`.
    pub os: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

/// Reads the static info. Blocking.
pub fn read_static_info() -> StaticInfo {
    let memory_total_bytes = read_meminfo().map(|m| m.mem_total).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "total memory unknown");
        0
    });
    let cpu = read_cpu().ok().map(|(_, n)| n).filter(|n| *n > 0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    StaticInfo {
        memory_mib: memory_total_bytes / (1024 * 1024),
        memory_total_bytes,
        cpu,
        os: format!("Linux {kernel}"),
        kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/proc/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
    }

    #[test]
    fn cpu_percent_from_two_stat_fixtures() {
        let a = parse_stat(fixture("stat").as_bytes()).unwrap();
        let b = parse_stat(fixture("stat.later").as_bytes()).unwrap();
        let (a, b) = (CpuTimes::from_stats(&a), CpuTimes::from_stats(&b));
        // Fixture deltas: user+nice+system+irq+softirq+steal = 300, idle+iowait = 700.
        assert_eq!(b.total - a.total, 1000);
        assert_eq!(b.busy - a.busy, 300);
        assert_eq!(round1(cpu_percent(a, b)), 30.0);
        assert_eq!(
            cpu_percent(b, a),
            0.0,
            "counters going backwards read as idle"
        );
        assert_eq!(cpu_percent(a, a), 0.0);
    }

    #[test]
    fn stat_fixture_counts_online_cpus() {
        let s = parse_stat(fixture("stat").as_bytes()).unwrap();
        assert_eq!(s.cpu_time.len(), 4);
    }

    #[test]
    fn memory_used_subtracts_free_buffers_cached_and_sreclaimable() {
        let m = Meminfo::from_buf_read(fixture("meminfo").as_bytes()).unwrap();
        // (16_000_000 - 4_000_000 - 500_000 - 3_000_000 - 500_000) kB
        assert_eq!(memory_used_bytes(&m), 8_000_000 * 1024);
        assert_eq!(gib1(m.mem_total), 15.3);
    }

    #[test]
    fn memory_used_falls_back_to_total_minus_free_when_negative() {
        let m = Meminfo::from_buf_read(fixture("meminfo.negative").as_bytes()).unwrap();
        assert_eq!(memory_used_bytes(&m), (1_000_000 - 100_000) * 1024);
    }

    #[test]
    fn physical_types_exclude_nodev_and_include_zfs() {
        let types = physical_fs_types(&fixture("filesystems"));
        for t in ["ext4", "vfat", "btrfs", "zfs"] {
            assert!(types.contains(t), "{t}");
        }
        for t in ["tmpfs", "proc", "overlay", "nfs4"] {
            assert!(!types.contains(t), "{t}");
        }
    }

    #[test]
    fn disk_mountpoints_keep_physical_filesystems_first_mount_per_device() {
        let physical = physical_fs_types(&fixture("filesystems"));
        let mounts = Vec::<MountEntry>::from_buf_read(fixture("mounts").as_bytes()).unwrap();
        assert_eq!(
            disk_mountpoints(&mounts, &physical),
            vec!["/etc/resolv.conf", "/boot/efi", "/data"]
        );
    }

    #[test]
    fn statvfs_skips_failing_mountpoints_and_sums_real_ones() {
        let none = statvfs_totals(&["/definitely/not/a/mountpoint".to_owned()]);
        assert_eq!(none, DiskTotals::default());
        let root = statvfs_totals(&["/".to_owned()]);
        assert!(root.total > 0 && root.used <= root.total);
    }

    #[test]
    fn rounding_matches_one_decimal() {
        assert_eq!(round1(3.44), 3.4);
        assert_eq!(round1(3.45001), 3.5);
        assert_eq!(gib1(0), 0.0);
        assert_eq!(gib1(5 * 1024 * 1024 * 1024 / 2), 2.5);
    }
}
