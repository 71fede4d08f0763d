//! The static mirror of Ironic's HTTP root in `[deploy] http_root`, for operators who serve
//! it with their own web server:
//!
//! ```text
//! http_root/boot.ipxe
//! http_root/<node uuid>/config
//! http_root/pxelinux.cfg/<aa-bb-cc-dd-ee-ff> -> ../<node uuid>/config
//! ```
//!
//! Every file and link is written to a temporary name in the same directory and renamed
//! into place, so a web server never serves a half-written script. The mirror's TempURLs are
//! signed when the file is written, so the conductor rewrites it before they expire.

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

/// Writes `contents` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = tmp_name(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
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
        write_atomic(&self.root.join("boot.ipxe"), script.as_bytes())
    }

    fn link_target(uuid: Uuid) -> PathBuf {
        Path::new("..").join(uuid.to_string()).join("config")
    }

    /// Writes a node's config and points its MACs at it; links of other MACs that pointed
    /// at this node are removed.
    pub fn write_node(&self, uuid: Uuid, macs: &[Mac], script: &str) -> io::Result<()> {
        let dir = self.root.join(uuid.to_string());
        fs::create_dir_all(&dir)?;
        fs::create_dir_all(self.root.join(CONFIG_SUBDIR))?;
        write_atomic(&dir.join("config"), script.as_bytes())?;
        let target = Self::link_target(uuid);
        let wanted: Vec<String> = macs.iter().map(Mac::hexhyp).collect();
        for name in &wanted {
            symlink_atomic(&target, &self.root.join(CONFIG_SUBDIR).join(name))?;
        }
        self.remove_links(uuid, &wanted)
    }

    /// Removes a node's config and every link to it.
    pub fn remove_node(&self, uuid: Uuid) -> io::Result<()> {
        self.remove_links(uuid, &[])?;
        match fs::remove_dir_all(self.root.join(uuid.to_string())) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes links to `uuid`'s config except `keep`.
    fn remove_links(&self, uuid: Uuid, keep: &[String]) -> io::Result<()> {
        let target = Self::link_target(uuid);
        let entries = match fs::read_dir(self.root.join(CONFIG_SUBDIR)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep.contains(&name) {
                continue;
            }
            if fs::read_link(entry.path()).is_ok_and(|t| t == target) {
                fs::remove_file(entry.path())?;
            }
        }
        Ok(())
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
    }
}
