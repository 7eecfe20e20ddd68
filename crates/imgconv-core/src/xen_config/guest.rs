//! A domain config's disks as the sources of one conversion: which disk holds the guest's
//! root (found by content; the config's `root=` only decides the order disks are tried
//! in), which are the guest's other disks, and, for each, the image used and how it was
//! found. Every image is opened read-only.

use super::{DiskFormat, Found, XenConfig, XenConfigError, XenDevice};
use crate::formats::OpenOptions;
use crate::source::SourceDisk;
use crate::vm::VmFacts;
use std::path::PathBuf;

/// One disk of the guest, as the conversion uses it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestDisk {
    /// The device the guest saw it as (`xvda2`, `xvdb1`, `xvdc`).
    pub vdev: String,
    /// The target as the config names it (a dom0 path).
    pub target: String,
    /// The image read.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub path: PathBuf,
    /// Which lookup found it.
    pub found: Found,
    /// The format the config names (a hint: images are read by their content).
    pub config_format: DiskFormat,
    /// The container read by content (`raw`, `block-device`, `qcow2`, `vhd-dynamic`, …).
    pub read_as: String,
    /// This disk holds the guest's root filesystem: the conversion's main source.
    pub holds_root: bool,
    /// One line: the device, the image used, how it was found, and how it is read when
    /// that is not what the config says.
    pub note: String,
}

/// What a conversion takes from a domain config: the guest's disks, the CD-ROM drives
/// left out, and the machine's facts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XenGuest {
    /// The config file.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub config: PathBuf,
    /// The guest's disks, in config order.
    pub disks: Vec<GuestDisk>,
    /// CD-ROM drives, one line each: not part of the guest's system, not converted.
    pub cdroms: Vec<String>,
    /// Notes on the whole (the config's `root=` naming another device than the one
    /// holding the root filesystem).
    pub notes: Vec<String>,
    /// Name, memory, vCPUs, MACs and the kernel command line Xen gave the guest.
    pub vm: VmFacts,
}

impl XenGuest {
    /// The disk holding the guest's root filesystem.
    pub fn main(&self) -> &GuestDisk {
        self.disks
            .iter()
            .find(|d| d.holds_root)
            .expect("a XenGuest always has its root disk")
    }

    /// For people, one line each: the config and the machine's facts, then every disk
    /// with the image used, how it was found and what it is to the conversion, the CD-ROM
    /// drives left out, and the notes.
    pub fn lines(&self) -> Vec<String> {
        let vm = &self.vm;
        let mut facts = Vec::new();
        if let Some(n) = &vm.name {
            facts.push(format!("name {n}"));
        }
        if let Some(m) = vm.memory_bytes {
            facts.push(format!("memory {} MiB", m >> 20));
        }
        if let Some(v) = vm.vcpus {
            facts.push(format!("{v} vCPU{}", if v == 1 { "" } else { "s" }));
        }
        for n in &vm.nics {
            facts.push(format!("MAC {}", n.mac));
        }
        let mut out = vec![format!(
            "Xen config {}{}",
            self.config.display(),
            if facts.is_empty() {
                String::new()
            } else {
                format!(": {}", facts.join(", "))
            }
        )];
        if let Some(c) = &vm.kernel_cmdline {
            out.push(format!(
                "  Xen kernel command line (recorded, not applied): {c}"
            ));
        }
        for d in &self.disks {
            let role = if d.holds_root {
                "root disk "
            } else {
                "other disk"
            };
            out.push(format!("  {role}  {}", d.note));
        }
        out.extend(self.cdroms.iter().map(|c| format!("  {c}")));
        out.extend(self.notes.iter().map(|n| format!("  note: {n}")));
        out
    }

    /// The other disks, with their Xen device names, in config order.
    pub fn other_disks(&self) -> Vec<SourceDisk> {
        self.disks
            .iter()
            .filter(|d| !d.holds_root)
            .map(|d| SourceDisk::new(&d.path, &d.vdev))
            .collect()
    }
}

/// The device the config's `root=` names (`/dev/xvda2 ro` → `xvda2`), when it names one.
fn root_hint(root: Option<&str>) -> Option<XenDevice> {
    let first = root?.split_whitespace().next()?;
    XenDevice::parse(first.strip_prefix("/dev/").unwrap_or(first)).ok()
}

impl XenConfig {
    /// The guest's disks as the sources of a conversion ([`XenConfig::resolve_disks`]
    /// finds the images): the disk holding the root filesystem, found by inspecting each
    /// disk's content (the disk `root=` names is tried first), and the others. A disk
    /// whose config names a format imgconv does not read (`qcow`, `qed`) and whose content
    /// is none it reads is refused; any other mismatch between `format=` and the content
    /// is noted, the content wins. `opts` says where a compressed image is decompressed.
    pub fn guest(&self, opts: &OpenOptions) -> Result<XenGuest, crate::Error> {
        let resolved = self.resolve_disks()?;
        let hint = root_hint(self.root.as_deref());
        // The disk root= names, then the disk holding that partition, then config order.
        let mut order: Vec<usize> = (0..resolved.len()).collect();
        order.sort_by_key(|&i| {
            let v = resolved[i].disk.vdev;
            match hint {
                Some(h) if h == v => 0,
                Some(h) if h.whole_disk() == v => 1,
                _ => 2,
            }
        });
        let mut root = None;
        let mut findings = Vec::new();
        let mut kinds: Vec<Option<&'static str>> = vec![None; resolved.len()];
        for &i in &order {
            let d = &resolved[i];
            match crate::source::inspect_with(&d.path, opts) {
                Ok(inspection) => {
                    kinds[i] = Some(inspection.format.kind);
                    root = Some(i);
                    break;
                }
                Err(e) => findings.push(format!("{} ({}): {e}", d.disk.vdev, d.path.display())),
            }
        }
        let Some(root) = root else {
            // A disk in a format imgconv cannot read says so rather than "no root".
            for d in &resolved {
                let kind = crate::formats::open(&d.path, opts)
                    .map(|o| o.region.format().kind)
                    .ok();
                if matches!(d.disk.format, DiskFormat::Qcow | DiskFormat::Qed)
                    && kind.is_none_or(|k| matches!(k, "raw" | "block-device"))
                {
                    return Err(XenConfigError::UnreadFormat {
                        vdev: d.disk.vdev,
                        path: d.path.clone(),
                        format: d.disk.format.name(),
                    }
                    .into());
                }
            }
            return Err(XenConfigError::NoRootDisk {
                path: self.path.clone(),
                findings,
            }
            .into());
        };
        let mut disks = Vec::with_capacity(resolved.len());
        for (i, d) in resolved.iter().enumerate() {
            let kind = match kinds[i] {
                Some(k) => k,
                None => {
                    crate::formats::open(&d.path, opts)
                        .map_err(crate::source::InspectError::from)?
                        .region
                        .format()
                        .kind
                }
            };
            if matches!(d.disk.format, DiskFormat::Qcow | DiskFormat::Qed)
                && matches!(kind, "raw" | "block-device")
            {
                return Err(XenConfigError::UnreadFormat {
                    vdev: d.disk.vdev,
                    path: d.path.clone(),
                    format: d.disk.format.name(),
                }
                .into());
            }
            let mut note = d.note();
            if !d.disk.format.matches_kind(kind) {
                note.push_str(&format!(
                    " (read as {kind} by its content; the config says {})",
                    d.disk.format.name()
                ));
            }
            disks.push(GuestDisk {
                vdev: d.disk.vdev.to_string(),
                target: d.disk.target.clone(),
                path: d.path.clone(),
                found: d.found.clone(),
                config_format: d.disk.format,
                read_as: kind.to_string(),
                holds_root: i == root,
                note,
            });
        }
        let mut notes = Vec::new();
        let main = resolved[root].disk.vdev;
        if let Some(h) = hint {
            if h != main && h.whole_disk() != main {
                notes.push(format!(
                    "the config's root= names {h}; the root filesystem is on {main} (found by its content)"
                ));
            }
        }
        let cdroms = self
            .cdroms
            .iter()
            .map(|c| match c.target.as_str() {
                "" => format!("{}: CD-ROM drive, empty, not converted", c.vdev),
                t => format!("{}: CD-ROM '{t}', not converted", c.vdev),
            })
            .collect();
        Ok(XenGuest {
            config: self.path.clone(),
            disks,
            cdroms,
            notes,
            vm: self.vm_facts(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    /// A config in `dir` naming `disk` entries, parsed.
    fn config(dir: &std::path::Path, text: &str) -> XenConfig {
        let path = dir.join("g.cfg");
        std::fs::write(&path, text).unwrap();
        XenConfig::from_file(&path).unwrap()
    }

    #[test]
    fn a_format_imgconv_does_not_read_is_refused_by_name() {
        let t = tempfile::tempdir().unwrap();
        // QEMU's qcow v1 magic: not a container imgconv reads.
        let mut qcow = b"QFI\xfb\0\0\0\x01".to_vec();
        qcow.resize(1 << 20, 0);
        std::fs::write(t.path().join("old.qcow"), &qcow).unwrap();
        let c = config(
            t.path(),
            "disk = [ 'format=qcow, vdev=xvda, target=old.qcow', 'file:/srv/iso/debian.iso,hdc:cdrom,r' ]\n",
        );
        match c.guest(&OpenOptions::default()) {
            Err(Error::XenConfig(e)) => {
                let msg = e.to_string();
                assert!(
                    matches!(*e, XenConfigError::UnreadFormat { format: "qcow", .. }),
                    "{msg}"
                );
                assert!(msg.contains("old.qcow") && msg.contains("xvda"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_root_names_what_each_disk_holds() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.img"), vec![0u8; 1 << 20]).unwrap();
        std::fs::write(t.path().join("b.img"), vec![0x5au8; 1 << 20]).unwrap();
        let c = config(
            t.path(),
            "root = '/dev/xvdb1 ro'\ndisk = [ 'a.img,,xvda1', 'file:/absent/dir/b.img,xvdb1,w' ]\n",
        );
        let err = c.guest(&OpenOptions::default()).unwrap_err();
        let msg = err.to_string();
        // root= names xvdb1: it is tried first.
        let (a, b) = (msg.find("xvda1 (").unwrap(), msg.find("xvdb1 (").unwrap());
        assert!(b < a, "{msg}");
        assert!(
            msg.contains("no disk of the guest holds its root filesystem"),
            "{msg}"
        );
        assert_eq!(err.kind(), crate::ErrorKind::Input);
    }
}
