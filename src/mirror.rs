//! The static mirror of Ironic's HTTP root in `[deploy] http_root`, for operators who serve
//! it with their own web server:
//!
//! ```text
//! http_root/boot.ipxe
//! http_root/<node uuid>/config
//! http_root/<node uuid>/macs          the links this node owns (ironboot's bookkeeping)
//! http_root/pxelinux.cfg/<aa-bb-cc-dd-ee-ff> -> ../<node uuid>/config
//! ```
//!
//! The `macs` manifest lets a rewrite drop the links of MACs a node no longer has without
//! scanning `pxelinux.cfg`, which would make a refresh of N nodes cost N² syscalls.
//!
//! Every file and link is written to a temporary name in the same directory and renamed
//! into place, so a web server never serves a half-written script. The mirror's TempURLs are
//! signed when the file is written, so the conductor rewrites it before they expire.
//!
//! Mirror files are not fsync'd: `serve` rewrites the whole mirror when it starts, so a
//! file lost in a crash is back before anything could miss it, and with 10,000 nodes the
//! fsyncs took most of a two-minute refresh. [`write_atomic`] itself can be durable for
//! files that are not regenerated.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::node::Mac;

/// Ironic's `[pxe] pxe_config_subdir`.
pub const CONFIG_SUBDIR: &str = "pxelinux.cfg";

#[derive(Debug, Clone)]
pub struct Mirror {
    root: PathBuf,
}

fn tmp_name(path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp-{}", Uuid::new_v4().simple()))
}

/// Writes `contents` to `path` atomically (temporary file, rename), with an fsync before
/// the rename when `durable`.
pub fn write_atomic(path: &Path, contents: &[u8], durable: bool) -> io::Result<()> {
    let tmp = tmp_name(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        if durable {
            f.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn symlink_atomic(target: &Path, link: &Path) -> io::Result<()> {
    let tmp = tmp_name(link);
    std::os::unix::fs::symlink(target, &tmp)?;
    fs::rename(&tmp, link).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

impl Mirror {
    pub fn new(root: impl Into<PathBuf>) -> Mirror {
        Mirror { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `boot.ipxe`, creating the root if needed.
    pub fn write_master(&self, script: &str) -> io::Result<()> {
        fs::create_dir_all(self.root.join(CONFIG_SUBDIR))?;
        write_atomic(&self.root.join("boot.ipxe"), script.as_bytes(), false)
    }

    fn link_target(uuid: Uuid) -> PathBuf {
        Path::new("..").join(uuid.to_string()).join("config")
    }

    /// Writes a node's config and points its MACs at it; links of MACs the node had
    /// before (per its manifest) but no longer has are removed.
    ///
    /// A node new to the mirror (its directory did not exist) takes four file-system
    /// operations: the directory, the config, one link per MAC and the manifest. Nothing
    /// names its config before its links exist, so the config needs no temporary name.
    pub fn write_node(&self, uuid: Uuid, macs: &[Mac], script: &str) -> io::Result<()> {
        let dir = self.root.join(uuid.to_string());
        let fresh = match fs::create_dir(&dir) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dir)?;
                true
            }
            Err(e) => return Err(e),
        };
        let target = Self::link_target(uuid);
        if fresh {
            fs::write(dir.join("config"), script.as_bytes())?;
            let wanted: Vec<String> = macs.iter().map(Mac::hexhyp).collect();
            for name in &wanted {
                let link = self.root.join(CONFIG_SUBDIR).join(name);
                match std::os::unix::fs::symlink(&target, &link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        fs::create_dir_all(self.root.join(CONFIG_SUBDIR))?;
                        symlink_atomic(&target, &link)?;
                    }
                    // a link left by a crash, or of a MAC another node had: replaced
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        symlink_atomic(&target, &link)?
                    }
                    Err(e) => return Err(e),
                }
            }
            return fs::write(dir.join("macs"), wanted.join("\n").as_bytes());
        }
        fs::create_dir_all(self.root.join(CONFIG_SUBDIR))?;
        write_atomic(&dir.join("config"), script.as_bytes(), false)?;
        let wanted: Vec<String> = macs.iter().map(Mac::hexhyp).collect();
        let before = self.manifest(uuid)?;
        if before != wanted {
            for name in &wanted {
                symlink_atomic(&target, &self.root.join(CONFIG_SUBDIR).join(name))?;
            }
            self.remove_links(uuid, before.iter().filter(|m| !wanted.contains(m)))?;
            write_atomic(&dir.join("macs"), wanted.join("\n").as_bytes(), false)?;
        } else {
            // Same MACs: make sure each link still exists and points here.
            for name in &wanted {
                let link = self.root.join(CONFIG_SUBDIR).join(name);
                if fs::read_link(&link).ok().as_deref() != Some(target.as_path()) {
                    symlink_atomic(&target, &link)?;
                }
            }
        }
        Ok(())
    }

    /// Removes a node's config, manifest and links, and its directory once nothing else is
    /// in it: the image cache links the node's kernel and ramdisk there too, and removes
    /// them itself.
    pub fn remove_node(&self, uuid: Uuid) -> io::Result<()> {
        let owned = self.manifest(uuid)?;
        self.remove_links(uuid, owned.iter())?;
        let dir = self.root.join(uuid.to_string());
        for name in ["config", "macs"] {
            match fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::remove_dir(&dir) {
            Err(e)
                if e.kind() != io::ErrorKind::NotFound
                    && e.kind() != io::ErrorKind::DirectoryNotEmpty =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// The MACs (as link names) a node's manifest lists.
    fn manifest(&self, uuid: Uuid) -> io::Result<Vec<String>> {
        match fs::read_to_string(self.root.join(uuid.to_string()).join("macs")) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Removes the named links if they still point at `uuid`'s config (a MAC may have moved
    /// to another node since).
    fn remove_links<'a>(
        &self,
        uuid: Uuid,
        names: impl Iterator<Item = &'a String>,
    ) -> io::Result<()> {
        let target = Self::link_target(uuid);
        for name in names {
            let link = self.root.join(CONFIG_SUBDIR).join(name);
            if fs::read_link(&link).is_ok_and(|t| t == target) {
                fs::remove_file(&link)?;
            }
        }
        Ok(())
    }

    /// Removes links whose config no longer exists (left by a crash or by a node directory
    /// removed by hand). One scan of `pxelinux.cfg`; returns how many were removed.
    pub fn sweep_dangling_links(&self) -> io::Result<usize> {
        let dir = self.root.join(CONFIG_SUBDIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in entries {
            let path = entry?.path();
            let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
            if is_link && fs::metadata(&path).is_err() {
                fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// UUIDs of the node directories present, to find leftovers of deleted nodes.
    pub fn node_dirs(&self) -> io::Result<Vec<Uuid>> {
        let mut out = Vec::new();
        match fs::read_dir(&self.root) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry?;
                    if let Ok(uuid) = Uuid::try_parse(&entry.file_name().to_string_lossy()) {
                        out.push(uuid);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_ironic_layout_with_relative_links_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::new(dir.path().join("httpboot"));
        m.write_master("#!ipxe\n").unwrap();
        let uuid = Uuid::new_v4();
        let a = Mac::parse("52:54:00:00:00:01").unwrap();
        let b = Mac::parse("52:54:00:00:00:02").unwrap();
        m.write_node(uuid, &[a, b], "#!ipxe\necho one\n").unwrap();
        let root = dir.path().join("httpboot");
        assert_eq!(
            fs::read_to_string(root.join("boot.ipxe")).unwrap(),
            "#!ipxe\n"
        );
        let link = root.join("pxelinux.cfg/52-54-00-00-00-01");
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("..").join(uuid.to_string()).join("config")
        );
        assert_eq!(fs::read_to_string(&link).unwrap(), "#!ipxe\necho one\n");

        // MAC b removed from the node: its link goes, a's stays; the config is replaced
        m.write_node(uuid, &[a], "#!ipxe\necho two\n").unwrap();
        assert!(fs::symlink_metadata(root.join("pxelinux.cfg/52-54-00-00-00-02")).is_err());
        assert_eq!(fs::read_to_string(&link).unwrap(), "#!ipxe\necho two\n");
        assert_eq!(m.node_dirs().unwrap(), vec![uuid]);

        // another node's link is left alone
        let other = Uuid::new_v4();
        m.write_node(other, &[b], "#!ipxe\n").unwrap();
        m.remove_node(uuid).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(!root.join(uuid.to_string()).exists());
        assert!(root.join("pxelinux.cfg/52-54-00-00-00-02").exists());
        // no temporary files are left behind
        let leftovers: Vec<_> = fs::read_dir(root.join("pxelinux.cfg"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .collect();
        assert!(leftovers.is_empty());
        m.remove_node(uuid).unwrap(); // idempotent

        // a link whose config vanished is swept; live links stay
        fs::remove_dir_all(root.join(other.to_string())).unwrap();
        std::os::unix::fs::symlink(
            "../nowhere/config",
            root.join("pxelinux.cfg/52-54-00-00-00-09"),
        )
        .unwrap();
        assert_eq!(m.sweep_dangling_links().unwrap(), 2);
        assert!(
            fs::read_dir(root.join("pxelinux.cfg"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    /// Regression: every node rewrite scanned and readlink'ed all of pxelinux.cfg to find
    /// stale links, so refreshing 10,000 nodes cost 10^8 syscalls (two minutes of system
    /// time in the boot-path benchmark). A rewrite now touches only the links in the node's
    /// manifest: a link it did not create is left alone, which the scan would have removed.
    #[test]
    fn regression_mirror_refresh_scanned_every_link_for_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::new(dir.path());
        let uuid = Uuid::new_v4();
        let mac = Mac::parse("52:54:00:00:00:01").unwrap();
        m.write_node(uuid, &[mac], "v1").unwrap();
        let foreign = dir.path().join("pxelinux.cfg/operator-alias");
        std::os::unix::fs::symlink(Mirror::link_target(uuid), &foreign).unwrap();
        m.write_node(uuid, &[mac], "v2").unwrap();
        m.write_node(uuid, &[], "v3").unwrap();
        assert!(
            fs::symlink_metadata(&foreign).is_ok(),
            "a link outside the manifest is not touched"
        );
        assert!(fs::symlink_metadata(dir.path().join("pxelinux.cfg/52-54-00-00-00-01")).is_err());
    }

    #[test]
    fn a_mac_moved_to_another_node_keeps_its_new_link() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::new(dir.path());
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mac = Mac::parse("52:54:00:00:00:01").unwrap();
        m.write_node(a, &[mac], "a").unwrap();
        m.write_node(b, &[mac], "b").unwrap(); // the MAC now belongs to b
        m.write_node(a, &[], "a").unwrap(); // a drops it: b's link must survive
        m.remove_node(a).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("pxelinux.cfg/52-54-00-00-00-01")).unwrap(),
            "b"
        );
    }

    #[test]
    fn regression_removing_a_nodes_mirror_deletes_its_cached_images() {
        // remove_node deleted http_root/<uuid> whole, so a refresh of a node still
        // preparing (target none) removed the kernel the cache had just linked there
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::new(dir.path());
        let uuid = Uuid::new_v4();
        let a = Mac::parse("52:54:00:00:00:0a").unwrap();
        m.write_node(uuid, &[a], "#!ipxe\n").unwrap();
        let kernel = dir.path().join(uuid.to_string()).join("deploy_kernel");
        fs::write(&kernel, b"linked by the cache").unwrap();
        m.remove_node(uuid).unwrap();
        assert_eq!(fs::read(&kernel).unwrap(), b"linked by the cache");
        assert!(!dir.path().join(uuid.to_string()).join("config").exists());
        assert!(!dir.path().join(uuid.to_string()).join("macs").exists());
        fs::remove_file(&kernel).unwrap();
        m.remove_node(uuid).unwrap();
        assert!(
            !dir.path().join(uuid.to_string()).exists(),
            "an empty directory goes"
        );
    }
}
