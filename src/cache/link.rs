//! Putting a master file where nodes fetch it (`http_root/<node uuid>/<label>`): a hardlink,
//! so the node's file is the master's inode and stays intact when the master is replaced
//! or evicted; a copy when the two directories are on different filesystems. Either way the
//! destination is replaced atomically: the link or copy is made under a temporary name in
//! the destination's directory and renamed over it.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How [`link`] put the file in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// The destination already was the master's inode.
    Already,
    /// A hardlink to the master.
    Hardlink,
    /// A copy (the destination is on another filesystem, or hardlinks are refused).
    Copy,
}

/// A temporary name next to `dest`: `.<name>.tmp-<random>` (a hidden name, as the mirror's).
fn tmp_name(dest: &Path) -> PathBuf {
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dest.with_file_name(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()))
}

/// Makes `dest` the master file: a hardlink, or an atomic copy across filesystems
/// (`EXDEV`) or where the kernel refuses the link (`EPERM`, e.g.
/// `fs.protected_hardlinks`). An existing `dest` is replaced atomically. The destination's
/// directory must exist. Blocking: call from a blocking thread.
pub fn link(master: &Path, dest: &Path) -> io::Result<Linked> {
    let m = fs::metadata(master)?;
    if let Ok(d) = fs::symlink_metadata(dest)
        && (d.dev(), d.ino()) == (m.dev(), m.ino())
    {
        return Ok(Linked::Already);
    }
    let tmp = tmp_name(dest);
    match fs::hard_link(master, &tmp) {
        Ok(()) => {
            fs::rename(&tmp, dest).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })?;
            Ok(Linked::Hardlink)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::CrossesDevices | io::ErrorKind::PermissionDenied
            ) =>
        {
            copy_atomic(master, dest)?;
            Ok(Linked::Copy)
        }
        Err(e) => Err(e),
    }
}

/// Copies `src` to `dest` atomically: to a temporary name in `dest`'s directory, fsync'd,
/// then renamed over `dest`. The temporary file is removed on failure.
pub fn copy_atomic(src: &Path, dest: &Path) -> io::Result<()> {
    let tmp = tmp_name(dest);
    let result = (|| {
        fs::copy(src, &tmp)?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, dest)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn links_replace_atomically_and_share_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("m");
        fs::write(&master, b"one").unwrap();
        let node = dir.path().join("node");
        fs::create_dir(&node).unwrap();
        let dest = node.join("deploy_kernel");
        fs::write(&dest, b"old file").unwrap();
        assert_eq!(link(&master, &dest).unwrap(), Linked::Hardlink);
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        assert_eq!(fs::metadata(&master).unwrap().nlink(), 2);
        assert_eq!(link(&master, &dest).unwrap(), Linked::Already);
        assert_eq!(names(&node), ["deploy_kernel"], "no temporary file left");
    }

    /// The copy path that a cross-filesystem link takes (tmpfs and the disk are not always
    /// both available to a test, so the function is tested directly).
    #[test]
    fn copy_fallback_replaces_atomically_and_is_independent() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("m");
        fs::write(&master, b"master bytes").unwrap();
        let node = dir.path().join("node");
        fs::create_dir(&node).unwrap();
        let dest = node.join("deploy_ramdisk");
        fs::write(&dest, b"previous").unwrap();
        copy_atomic(&master, &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"master bytes");
        assert_eq!(
            fs::metadata(&master).unwrap().nlink(),
            1,
            "a copy, not a link"
        );
        assert_ne!(
            fs::metadata(&master).unwrap().ino(),
            fs::metadata(&dest).unwrap().ino()
        );
        assert_eq!(names(&node), ["deploy_ramdisk"]);
        // A failing copy leaves the old destination and no temporary file.
        let err = copy_atomic(&dir.path().join("missing"), &dest).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read(&dest).unwrap(), b"master bytes");
        assert_eq!(names(&node), ["deploy_ramdisk"]);
    }
}
