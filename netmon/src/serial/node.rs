//! Device nodes in a runtime container (`provision_serial_node`, `remove_serial_node`, ours; the
//! original ran `rm`/`mknod`/`chmod` through Docker exec, upstream-head §7.5): validation of the
//! request (pure) and the work itself, done by a dedicated OS thread inside the container's mount
//! namespace. Blocking: callers run these off the event loop. Touches nothing but the one path.
//!
//! The thread calls `unshare(CLONE_FS)` (setns into a mount namespace fails for a thread that
//! shares its root/cwd with others) and then `setns` into `/proc/<pid>/ns/mnt`; it is discarded
//! afterwards, so no other work ever runs in the container's mount namespace. Inside, `/` is the
//! container's root, so paths (and symlinks in them) resolve as the container sees them.
//! Needs `CAP_SYS_ADMIN` + `CAP_SYS_CHROOT` (setns), `CAP_MKNOD`, and `CAP_SYS_PTRACE` to open
//! the namespace of a runtime that holds capabilities netmon lacks.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::{Mode, SFlag, makedev, mknod, umask};

use super::uevent::SERIAL_MAJORS;

/// Longest `container_path` accepted (bytes).
pub const MAX_PATH: usize = 255;

/// A `container_path` netmon will create a node at: absolute, under `/dev/`, no `.`/`..`
/// components, no `//`, not ending in `/`, at most [`MAX_PATH`] bytes, no NUL. The error is
/// the whole answer text.
pub fn validate_path(path: &str) -> Result<(), String> {
    let refuse = |why: &str| Err(format!("Invalid container_path {path:?}: {why}"));
    if path.len() > MAX_PATH {
        return refuse(&format!("longer than {MAX_PATH} bytes"));
    }
    if !path.starts_with("/dev/") {
        return refuse("must be an absolute path under /dev/");
    }
    if path.ends_with('/') {
        return refuse("must name a file, not end in /");
    }
    if path.contains("//") {
        return refuse("must not contain //");
    }
    if path.contains('\0') {
        return refuse("must not contain NUL");
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return refuse("must not contain . or .. components");
    }
    Ok(())
}

/// Majors a runtime may use (its device-cgroup rules allow only these).
pub fn validate_major(major: u32) -> Result<(), String> {
    if SERIAL_MAJORS.contains(&major) {
        Ok(())
    } else {
        Err(format!(
            "Invalid major {major}: only serial majors 188 (ttyUSB), 166 (ttyACM) and 4 (ttyS) \
             are allowed in runtime containers"
        ))
    }
}

/// Creates the character device `major:minor` at `path` in the mount namespace of `pid`, mode
/// 0666, owner root, replacing a character device already there. `Ok` says what was done.
/// Validates again, so no caller can skip it.
pub fn provision(pid: u32, path: &str, major: u32, minor: u32) -> Result<String, String> {
    validate_path(path)?;
    validate_major(major)?;
    let dev = makedev(u64::from(major), u64::from(minor));
    in_mount_ns(pid, path, move |path| {
        let parent = path.parent().unwrap_or(Path::new("/"));
        match fs::metadata(parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("{} is not a directory", parent.display())),
            Err(e) => return Err(format!("parent directory {}: {e}", parent.display())),
        }
        let replaced = remove_char_device(path)?;
        mknod(path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), dev)
            .map_err(|e| format!("mknod {}: {e}", path.display()))?;
        // Without following a symlink: the container may swap the node for one meanwhile.
        std::os::unix::fs::lchown(path, Some(0), Some(0))
            .map_err(|e| format!("chown root {}: {e}", path.display()))?;
        let m = fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !m.file_type().is_char_device() || m.rdev() != dev || m.mode() & 0o7777 != 0o666 {
            return Err(format!(
                "{} is not the node just created (mode {:o})",
                path.display(),
                m.mode()
            ));
        }
        Ok(format!(
            "{} {} (c {major}:{minor}) in the container of process {pid}",
            if replaced { "Replaced" } else { "Created" },
            path.display()
        ))
    })
}

/// Removes the character device at `path` in the mount namespace of `pid`; nothing there is
/// success, anything else there is refused.
pub fn remove(pid: u32, path: &str) -> Result<String, String> {
    validate_path(path)?;
    in_mount_ns(pid, path, move |path| {
        Ok(if remove_char_device(path)? {
            format!(
                "Removed {} in the container of process {pid}",
                path.display()
            )
        } else {
            format!("{} was not there", path.display())
        })
    })
}

/// Unlinks `path` if it is a character device (true); false if nothing is there; an error if
/// something else is.
fn remove_char_device(path: &Path) -> Result<bool, String> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_char_device() => match fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("removing {}: {e}", path.display())),
        },
        Ok(_) => Err(format!(
            "{} exists and is not a character device; refusing to replace it",
            path.display()
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Runs `work(path)` (`path` as the container sees it) on a new thread inside the mount namespace of `pid`, with umask 0 (so
/// `mknod` gives exactly the mode asked for; the umask is the thread's own after
/// `unshare(CLONE_FS)`), and waits for it.
fn in_mount_ns<F>(pid: u32, path: &str, work: F) -> Result<String, String>
where
    F: FnOnce(&Path) -> Result<String, String> + Send + 'static,
{
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = File::open(&ns_path).map_err(|e| format!("cannot open {ns_path}: {e}"))?;
    let own = fs::metadata("/proc/self/ns/mnt").map_err(|e| format!("/proc/self/ns/mnt: {e}"))?;
    let theirs = ns.metadata().map_err(|e| format!("{ns_path}: {e}"))?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        // Its /dev would be netmon's own (on a host install, the host's).
        return Err(format!("process {pid} is in netmon's own mount namespace"));
    }
    let path = path.to_owned();
    std::thread::Builder::new()
        .name(format!("mntns-{pid}"))
        .spawn(move || {
            unshare(CloneFlags::CLONE_FS).map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
            setns(&ns, CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("setns into {ns_path}: {e}"))?;
            umask(Mode::empty());
            work(Path::new(&path))
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?
        .join()
        .unwrap_or_else(|_| Err("the namespace thread panicked".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_must_be_plain_paths_under_dev() {
        for ok in ["/dev/modbus0", "/dev/serial/port-1", "/dev/ttyUSB0"] {
            assert_eq!(validate_path(ok), Ok(()), "{ok}");
        }
        assert_eq!(validate_path(&format!("/dev/{}", "a".repeat(250))), Ok(()));
        for (bad, why) in [
            ("", "under /dev/"),
            ("dev/modbus0", "under /dev/"),
            ("/dev", "under /dev/"),
            ("/dev/", "not end in /"),
            ("/devx/modbus0", "under /dev/"),
            ("/etc/passwd", "under /dev/"),
            ("/dev/serial/", "not end in /"),
            ("/dev//modbus0", "//"),
            ("/dev/../etc/shadow", ". or .."),
            ("/dev/./modbus0", ". or .."),
            ("/dev/serial/..", ". or .."),
            ("/dev/a\0b", "NUL"),
        ] {
            let e = validate_path(bad).unwrap_err();
            assert!(e.starts_with("Invalid container_path"), "{bad:?}: {e}");
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let long = format!("/dev/{}", "a".repeat(251));
        assert!(
            validate_path(&long)
                .unwrap_err()
                .contains("longer than 255")
        );
    }

    #[test]
    fn only_the_serial_majors_are_allowed() {
        for major in [188, 166, 4] {
            assert_eq!(validate_major(major), Ok(()));
        }
        for major in [0, 1, 5, 204, 189] {
            assert!(
                validate_major(major)
                    .unwrap_err()
                    .contains("only serial majors")
            );
        }
    }
}
