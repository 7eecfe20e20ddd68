//! One `disk` entry of a domU config, the guest device names Xen uses, and the
//! `PATH=XENDEV` form that names a disk image without a config.
//!
//! Disk entries follow xl-disk-configuration(5): comma-separated `key=value` pairs, flags
//! and positional parameters `target, format, vdev, access`, where `target=` takes the
//! rest of the string (commas included). The deprecated xm forms put a prefix on the
//! target (`file:`, `phy:`, `tap:aio:`, `tap2:tapdisk:aio:`, `raw:`, `qcow2:`, ...); with
//! a prefix the positional order is `target, vdev, access` (no format). Device names
//! follow Xen's vbd-interface: `xvd` + disk letters (`a`..`z`, `aa`..), `sd`/`hd` +
//! letters, each with an optional partition number.

use super::XenConfigError;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The family of a guest device name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DevFamily {
    /// `xvd*`: Xen's paravirtual block devices.
    Xvd,
    /// `sd*`: emulated SCSI names.
    Sd,
    /// `hd*`: emulated IDE names.
    Hd,
}

impl DevFamily {
    fn prefix(self) -> &'static str {
        match self {
            DevFamily::Xvd => "xvd",
            DevFamily::Sd => "sd",
            DevFamily::Hd => "hd",
        }
    }
}

/// A guest device name: a whole disk (`xvda`, `sdb`, `hda`) or one partition of it
/// (`xvda2`): xen-tools exports each filesystem image as a partition device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct XenDevice {
    /// `xvd`, `sd` or `hd`.
    pub family: DevFamily,
    /// The disk's index: `a` is 0, `z` 25, `aa` 26.
    pub disk: u32,
    /// The partition number (1-based), `None` for the whole disk.
    pub partition: Option<u32>,
}

/// Longest disk-letter run accepted for each family (xvd: up to `xvdzzz`; sd: `sdzz`; hd:
/// one letter, `hda`..`hdt`).
const MAX_LETTERS: [(DevFamily, usize); 3] =
    [(DevFamily::Xvd, 3), (DevFamily::Sd, 2), (DevFamily::Hd, 1)];
/// Highest partition number accepted (Xen's extended vbd numbering reaches 255).
const MAX_PARTITION: u32 = 255;

impl XenDevice {
    /// Parse `xvda`, `xvdb1`, `sdc3`, `hda` (also with a `/dev/` prefix).
    pub fn parse(name: &str) -> Result<XenDevice, &'static str> {
        let name = name.trim();
        let name = name.strip_prefix("/dev/").unwrap_or(name);
        let (family, rest) = if let Some(r) = name.strip_prefix("xvd") {
            (DevFamily::Xvd, r)
        } else if let Some(r) = name.strip_prefix("sd") {
            (DevFamily::Sd, r)
        } else if let Some(r) = name.strip_prefix("hd") {
            (DevFamily::Hd, r)
        } else {
            return Err(
                "not a Xen device name (xvdX, sdX or hdX, with an optional partition number)",
            );
        };
        let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let max = MAX_LETTERS
            .iter()
            .find(|(f, _)| *f == family)
            .map_or(1, |(_, m)| *m);
        if letters == 0 || letters > max {
            return Err("the disk letters are missing or too many");
        }
        // Bijective base 26: a..z, aa..zz, aaa..
        let disk = rest.as_bytes()[..letters]
            .iter()
            .fold(0u32, |n, b| n * 26 + u32::from(b - b'a') + 1)
            - 1;
        if family == DevFamily::Hd && disk > 19 {
            return Err("IDE names go from hda to hdt");
        }
        let digits = &rest[letters..];
        let partition = if digits.is_empty() {
            None
        } else {
            if !digits.bytes().all(|b| b.is_ascii_digit())
                || digits.starts_with('0')
                || digits.len() > 3
            {
                return Err("the partition number is not 1 to 255");
            }
            let n: u32 = digits
                .parse()
                .map_err(|_| "the partition number is not 1 to 255")?;
            if n > MAX_PARTITION {
                return Err("the partition number is not 1 to 255");
            }
            Some(n)
        };
        Ok(XenDevice {
            family,
            disk,
            partition,
        })
    }

    /// The whole disk this device is or is a partition of (`xvda` for `xvda2`).
    pub fn whole_disk(self) -> XenDevice {
        XenDevice {
            partition: None,
            ..self
        }
    }

    /// The disk's letters (`a`, `z`, `aa`).
    pub fn letters(self) -> String {
        let mut n = self.disk + 1;
        let mut out = Vec::new();
        while n > 0 {
            n -= 1;
            out.push(b'a' + (n % 26) as u8);
            n /= 26;
        }
        out.reverse();
        String::from_utf8(out).unwrap_or_default()
    }
}

impl fmt::Display for XenDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.family.prefix(), self.letters())?;
        if let Some(p) = self.partition {
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl FromStr for XenDevice {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        XenDevice::parse(s)
    }
}

/// How dom0 attached the disk (from the deprecated prefix or `backendtype=`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBackend {
    /// Not said: an image file or a block device, whichever the target is.
    Unspecified,
    /// `file:` (a loop-mounted image file).
    File,
    /// `phy:` or `backendtype=phy`: a dom0 block device (`/dev/vg/lv`).
    Phy,
    /// `tap:`, `tap2:`, `aio:` or `backendtype=tap`: blktap.
    Tap,
    /// `backendtype=qdisk`: QEMU in dom0.
    Qdisk,
    /// A hotplug script prefix (`drbd:`, `iscsi:`) or `script=`: the target is not a
    /// path but what the script understands.
    Script(String),
}

/// The image format the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// Raw data (the default).
    Raw,
    /// QEMU copy-on-write v1.
    Qcow,
    /// QEMU copy-on-write v2/v3.
    Qcow2,
    /// Microsoft VHD.
    Vhd,
    /// QEMU enhanced disk.
    Qed,
}

impl DiskFormat {
    /// The name the config uses for it (`raw`, `qcow2`, …).
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow => "qcow",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vhd => "vhd",
            DiskFormat::Qed => "qed",
        }
    }

    /// Whether the container read by content (`SourceFormat::kind`) is this format.
    pub fn matches_kind(self, kind: &str) -> bool {
        match self {
            DiskFormat::Raw => matches!(kind, "raw" | "block-device"),
            DiskFormat::Qcow2 => kind == "qcow2",
            DiskFormat::Vhd => kind.starts_with("vhd"),
            DiskFormat::Qcow | DiskFormat::Qed => false,
        }
    }

    fn parse(s: &str) -> Option<DiskFormat> {
        Some(match s {
            "raw" | "aio" => DiskFormat::Raw,
            "qcow" => DiskFormat::Qcow,
            "qcow2" => DiskFormat::Qcow2,
            "vhd" => DiskFormat::Vhd,
            "qed" => DiskFormat::Qed,
            _ => return None,
        })
    }
}

/// One entry of `disk = [ ... ]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpec {
    /// The entry as written.
    pub spec: String,
    /// The line of the config it is on.
    pub line: usize,
    /// The dom0 path (or script argument), prefixes removed; empty for an empty CD drive.
    pub target: String,
    /// How dom0 attached it.
    pub backend: DiskBackend,
    /// The image format.
    pub format: DiskFormat,
    /// The device the guest sees.
    pub vdev: XenDevice,
    /// Attached read-only (`r`, `ro`).
    pub read_only: bool,
    /// A CD-ROM drive (`devtype=cdrom`, the `cdrom` flag, `hdc:cdrom`): not a disk of the
    /// guest's system.
    pub cdrom: bool,
}

/// Prefixes of the deprecated target syntax, with what each says.
const PREFIXES: &[(&str, Option<DiskBackend>, Option<DiskFormat>)] = &[
    ("file", Some(DiskBackend::File), None),
    ("phy", Some(DiskBackend::Phy), None),
    ("tap", Some(DiskBackend::Tap), None),
    ("tap2", Some(DiskBackend::Tap), None),
    ("tapdisk", Some(DiskBackend::Tap), None),
    ("aio", Some(DiskBackend::Tap), Some(DiskFormat::Raw)),
    ("raw", None, Some(DiskFormat::Raw)),
    ("qcow", None, Some(DiskFormat::Qcow)),
    ("qcow2", None, Some(DiskFormat::Qcow2)),
    ("vhd", None, Some(DiskFormat::Vhd)),
    ("qed", None, Some(DiskFormat::Qed)),
];

/// Flags xl accepts without a value.
const FLAGS: &[&str] = &[
    "cdrom",
    "direct-io-safe",
    "discard",
    "no-discard",
    "trusted",
    "untrusted",
    "colo",
];

impl DiskSpec {
    /// Parse one disk entry found on `line`.
    pub fn parse(spec: &str, line: usize) -> Result<DiskSpec, XenConfigError> {
        let bad = |reason: &'static str| XenConfigError::BadDisk {
            line,
            spec: spec.to_string(),
            reason,
        };
        let mut target: Option<String> = None;
        let mut format: Option<String> = None;
        let mut vdev: Option<String> = None;
        let mut access: Option<String> = None;
        let mut devtype: Option<String> = None;
        let mut backendtype: Option<String> = None;
        let mut script: Option<String> = None;
        let mut cdrom_flag = false;
        let mut positional = 0usize;
        let mut deprecated = false;
        let mut rest = spec;
        loop {
            // `target=` swallows the rest of the entry, commas and all.
            let trimmed = rest.trim_start();
            if let Some(t) = trimmed.strip_prefix("target=") {
                if target.is_some() {
                    return Err(bad("the target is given twice"));
                }
                target = Some(t.trim().to_string());
                break;
            }
            let (item, next) = match rest.split_once(',') {
                Some((a, b)) => (a.trim(), Some(b)),
                None => (rest.trim(), None),
            };
            if let Some((k, v)) = item.split_once('=') {
                let slot = match k.trim() {
                    "format" => Some(&mut format),
                    "vdev" => Some(&mut vdev),
                    "access" => Some(&mut access),
                    "devtype" => Some(&mut devtype),
                    "backendtype" => Some(&mut backendtype),
                    "script" => Some(&mut script),
                    // Other settings (backend domain, COLO, specification) do not change
                    // which image the guest sees as which device.
                    _ => None,
                };
                if let Some(slot) = slot {
                    if slot.is_some() {
                        return Err(bad("a parameter is given twice"));
                    }
                    *slot = Some(v.trim().to_string());
                }
            } else if FLAGS.contains(&item) {
                cdrom_flag |= item == "cdrom";
            } else {
                // Positional: target, [format,] vdev, access; empty ones keep their slot.
                let order: &[u8] = if deprecated { b"tva" } else { b"tfva" };
                loop {
                    let Some(&slot) = order.get(positional) else {
                        return Err(bad(
                            "more positional parameters than target, format, vdev, access",
                        ));
                    };
                    positional += 1;
                    let slot = match slot {
                        b't' => &mut target,
                        b'f' => &mut format,
                        b'v' => &mut vdev,
                        _ => &mut access,
                    };
                    if slot.is_some() {
                        continue;
                    }
                    if !item.is_empty() {
                        *slot = Some(item.to_string());
                    }
                    break;
                }
                if positional == 1 {
                    deprecated = target.as_deref().is_some_and(has_prefix);
                }
                // xm wrote `path,xvda,w` without a prefix too: a device name where the
                // format goes means the format was left out.
                if !deprecated && positional == 2 {
                    if let Some(f) = format
                        .as_deref()
                        .filter(|f| looks_like_vdev(f) && DiskFormat::parse(f).is_none())
                    {
                        let f = f.to_string();
                        format = None;
                        vdev = Some(f);
                        positional = 2;
                        deprecated = true;
                    }
                }
            }
            match next {
                Some(n) => rest = n,
                None => break,
            }
        }

        let mut backend = DiskBackend::Unspecified;
        let mut target = target.unwrap_or_default();
        let mut prefix_format = None;
        // Deprecated prefixes, possibly several (`tap2:tapdisk:aio:/path`).
        while let Some((p, r)) = target.split_once(':') {
            if let Some((_, b, f)) = PREFIXES.iter().find(|(name, _, _)| *name == p) {
                if let Some(b) = b {
                    if backend == DiskBackend::Unspecified {
                        backend = b.clone();
                    }
                }
                prefix_format = f.or(prefix_format);
                target = r.to_string();
            } else if !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                // A hotplug script of dom0 (`drbd:resource`).
                backend = DiskBackend::Script(p.to_string());
                target = r.to_string();
                break;
            } else {
                break;
            }
        }
        match backendtype.as_deref() {
            None | Some("") => {}
            Some("phy") => backend = DiskBackend::Phy,
            Some("tap") => backend = DiskBackend::Tap,
            Some("qdisk") => backend = DiskBackend::Qdisk,
            Some("standalone") => {}
            Some(_) => return Err(bad("backendtype is none of phy, tap, qdisk, standalone")),
        }
        if let Some(s) = script.filter(|s| !s.is_empty()) {
            backend = DiskBackend::Script(s);
        }
        let format = match format.as_deref() {
            None | Some("") => prefix_format.unwrap_or(DiskFormat::Raw),
            Some(f) => DiskFormat::parse(f)
                .ok_or_else(|| bad("the format is none of raw, qcow, qcow2, vhd, qed"))?,
        };
        let Some(vdev) = vdev.filter(|v| !v.is_empty()) else {
            return Err(bad("it names no guest device (vdev)"));
        };
        // Deprecated device forms: `ioemu:hda`, `hdc:cdrom`, `xvda:disk`.
        let vdev = vdev.strip_prefix("ioemu:").unwrap_or(&vdev);
        let (vdev, cdrom_suffix) = match vdev.split_once(':') {
            Some((d, "cdrom")) => (d, true),
            Some((d, "disk")) => (d, false),
            Some(_) => return Err(bad("the guest device has an unknown `:` suffix")),
            None => (vdev, false),
        };
        let vdev = XenDevice::parse(vdev).map_err(bad)?;
        let read_only = match access.as_deref().map(|a| a.trim_end_matches('!')) {
            None | Some("") | Some("w") | Some("rw") => false,
            Some("r") | Some("ro") => true,
            Some(_) => return Err(bad("the access mode is none of r, ro, w, rw")),
        };
        let cdrom = cdrom_flag
            || cdrom_suffix
            || match devtype.as_deref() {
                None | Some("") | Some("disk") => false,
                Some("cdrom") => true,
                Some(_) => return Err(bad("devtype is neither disk nor cdrom")),
            };
        if target.is_empty() && !cdrom {
            return Err(bad("it names no image (target)"));
        }
        Ok(DiskSpec {
            spec: spec.to_string(),
            line,
            target,
            backend,
            format,
            vdev,
            read_only,
            cdrom,
        })
    }
}

/// A device name, also in its deprecated forms (`ioemu:hda`, `hdc:cdrom`).
fn looks_like_vdev(s: &str) -> bool {
    let s = s.strip_prefix("ioemu:").unwrap_or(s);
    XenDevice::parse(s.split(':').next().unwrap_or(s)).is_ok()
}

fn has_prefix(target: &str) -> bool {
    target.split_once(':').is_some_and(|(p, _)| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// `PATH=XENDEV`: a disk image and the device the guest knew it as, for a conversion
/// without a domU config (`disk.img=xvda2`, `home.img=xvdb1`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiskArg {
    /// The image file or block device.
    pub path: PathBuf,
    /// The guest's device name for it.
    pub xen_device: XenDevice,
}

impl DiskArg {
    /// Parse `PATH=XENDEV`; the last `=` separates them, so a path may hold `=`.
    pub fn parse(arg: &str) -> Result<DiskArg, XenConfigError> {
        let bad = |reason: &'static str| XenConfigError::BadDiskArg {
            arg: arg.to_string(),
            reason,
        };
        let Some((path, dev)) = arg.rsplit_once('=') else {
            return Err(bad("expected PATH=XENDEV, such as disk.img=xvda2"));
        };
        if path.is_empty() {
            return Err(bad("the path is empty"));
        }
        let xen_device = XenDevice::parse(dev).map_err(bad)?;
        Ok(DiskArg {
            path: PathBuf::from(path),
            xen_device,
        })
    }
}

impl FromStr for DiskArg {
    type Err = XenConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DiskArg::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(s: &str) -> XenDevice {
        XenDevice::parse(s).unwrap()
    }

    #[test]
    fn device_names_round_trip_and_bad_ones_are_refused() {
        for name in [
            "xvda", "xvda2", "xvdb1", "xvdz", "xvdaa", "xvdzzz15", "sda", "sdab3", "hda", "hdt",
            "hdc1", "xvda255",
        ] {
            assert_eq!(dev(name).to_string(), name);
        }
        assert_eq!(dev("/dev/xvdb1").to_string(), "xvdb1");
        assert_eq!(
            dev("xvdb1"),
            XenDevice {
                family: DevFamily::Xvd,
                disk: 1,
                partition: Some(1)
            }
        );
        assert_eq!(dev("xvdaa").disk, 26);
        assert_eq!(dev("xvda2").whole_disk().to_string(), "xvda");
        for bad in [
            "", "xvd", "xvda0", "xvda01", "xvda256", "xvdA", "vda", "hdu", "sdabc", "xvdaaaa",
            "51714", "xvda-1", "d0p1", "xvda1x",
        ] {
            assert!(XenDevice::parse(bad).is_err(), "{bad}");
        }
    }

    fn disk(s: &str) -> DiskSpec {
        DiskSpec::parse(s, 7).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn xm_prefixed_entries() {
        let d = disk("file:/srv/xen/web1/disk.img,xvda2,w");
        assert_eq!(
            (
                d.target.as_str(),
                d.backend.clone(),
                d.vdev.to_string(),
                d.read_only
            ),
            (
                "/srv/xen/web1/disk.img",
                DiskBackend::File,
                "xvda2".into(),
                false
            )
        );
        let d = disk("phy:/dev/vg/lv,xvdb,w");
        assert_eq!(
            (d.target.as_str(), d.backend.clone()),
            ("/dev/vg/lv", DiskBackend::Phy)
        );
        let d = disk("tap:aio:/path/x.img,xvda1,w");
        assert_eq!(
            (d.target.as_str(), d.backend.clone(), d.format),
            ("/path/x.img", DiskBackend::Tap, DiskFormat::Raw)
        );
        let d = disk("tap2:tapdisk:aio:/p,xvda,r");
        assert_eq!((d.target.as_str(), d.read_only), ("/p", true));
        let d = disk("tap:qcow2:/p.qcow2,xvda,w!");
        assert_eq!((d.format, d.read_only), (DiskFormat::Qcow2, false));
        let d = disk("phy:/dev/vg/x,ioemu:hda,w");
        assert_eq!(d.vdev.to_string(), "hda");
        let d = disk("file:/iso/debian.iso,hdc:cdrom,r");
        assert!(d.cdrom && d.read_only);
        let d = disk("drbd:web1,xvda,w");
        assert_eq!(
            (d.target.as_str(), d.backend.clone()),
            ("web1", DiskBackend::Script("drbd".into()))
        );
        // No prefix, xm order.
        let d = disk("/srv/disk.img,xvda1,w");
        assert_eq!(
            (d.target.as_str(), d.vdev.to_string(), d.format),
            ("/srv/disk.img", "xvda1".into(), DiskFormat::Raw)
        );
    }

    #[test]
    fn xl_entries() {
        let d = disk("format=raw, vdev=xvda, access=rw, target=/path/disk.img");
        assert_eq!(
            (d.target.as_str(), d.vdev.to_string(), d.read_only),
            ("/path/disk.img", "xvda".into(), false)
        );
        let d = disk("vdev=xvda2, target=/srv/xen/domains/web1/disk,with,commas.img");
        assert_eq!(d.target, "/srv/xen/domains/web1/disk,with,commas.img");
        let d = disk("/path,raw,xvda,rw");
        assert_eq!(
            (d.target.as_str(), d.vdev.to_string()),
            ("/path", "xvda".into())
        );
        let d = disk("/dev/vg/guest-volume,,hda");
        assert_eq!(
            (d.target.as_str(), d.vdev.to_string(), d.format),
            ("/dev/vg/guest-volume", "hda".into(), DiskFormat::Raw)
        );
        let d = disk("/p.qcow2,qcow2,xvdb,ro");
        assert_eq!((d.format, d.read_only), (DiskFormat::Qcow2, true));
        for cd in [
            "/root/image.iso,,hdc,cdrom",
            "/root/image.iso,,hdc,,cdrom",
            "/root/image.iso,raw,hdc,devtype=cdrom",
            "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
            "raw:/root/image.iso,hdc:cdrom,ro",
            ",,hdc,cdrom",
        ] {
            assert!(disk(cd).cdrom, "{cd}");
        }
        let d = disk("vdev=xvdb, backendtype=phy, target=/dev/sdb");
        assert_eq!(d.backend, DiskBackend::Phy);
        let d = disk("vdev=xvdb, script=block-iscsi, target=iqn.2001-05.com.example:disk");
        assert_eq!(d.backend, DiskBackend::Script("block-iscsi".into()));
    }

    #[test]
    fn malformed_entries_are_typed_errors_with_their_line() {
        for (spec, why) in [
            ("/p", "no guest device"),
            ("vdev=xvda", "no image"),
            ("/p,raw,xvda,rw,extra", "more positional"),
            ("/p,vmdk,xvda", "format"),
            ("/p,raw,vda", "not a Xen device"),
            ("/p,raw,xvda,rx", "access"),
            ("vdev=xvda, vdev=xvdb, target=/p", "twice"),
            ("vdev=xvda, devtype=floppy, target=/p", "devtype"),
            ("vdev=xvda, backendtype=nbd, target=/p", "backendtype"),
            ("file:/p,xvda:weird,w", "suffix"),
        ] {
            match DiskSpec::parse(spec, 12) {
                Err(e @ XenConfigError::BadDisk { line: 12, .. }) => {
                    assert!(e.to_string().contains(why), "{spec}: {e}");
                    assert!(e.to_string().contains("line 12"), "{e}");
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
    }

    #[test]
    fn disk_args() {
        let a: DiskArg = "disk.img=xvda2".parse().unwrap();
        assert_eq!(
            (a.path, a.xen_device.to_string()),
            (PathBuf::from("disk.img"), "xvda2".into())
        );
        let a = DiskArg::parse("/srv/a=b/home.img=xvdb1").unwrap();
        assert_eq!(a.path, PathBuf::from("/srv/a=b/home.img"));
        for bad in [
            "disk.img",
            "=xvda",
            "disk.img=",
            "disk.img=vda1",
            "disk.img=xvda0",
        ] {
            let e = DiskArg::parse(bad).unwrap_err();
            assert!(
                matches!(e, XenConfigError::BadDiskArg { .. }),
                "{bad}: {e:?}"
            );
            assert_eq!(e.kind(), crate::ErrorKind::Options);
        }
    }
}
