//! What the guest inside the root filesystem is: distribution, host name, userland
//! architecture, init system, installed kernels, and the Xen-specific configuration
//! the conversion will have to change (docs/conversion-checklist.md).
//!
//! Everything is read through the guarded [`ExtReader`], with a size bound on every
//! file and directory; a file that cannot be read becomes a warning, not a failure, so
//! one odd file in the guest never stops an inspection.

use super::elf::{self, Arch};
use crate::ext::read::{ExtReadError, ExtReader};
use crate::guestfs::NodeKind;
use std::io::Read;

/// Largest configuration file read whole (fstab, inittab, os-release, ...).
const MAX_CONFIG: u64 = 1 << 20;
/// Largest kernel config read (/boot/config-*: ~250 KB on Debian).
const MAX_KERNEL_CONFIG: u64 = 8 << 20;
/// Most entries read from one directory.
const MAX_DIR_ENTRIES: usize = 100_000;

/// Paths that count as "an init" when looking for the guest root: where the kernel
/// looks (`/sbin/init`, `/etc/init`'s binary siblings), plus the systemd and upstart
/// binaries themselves.
pub const INIT_PATHS: &[&str] = &[
    "/sbin/init",
    "/usr/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
    "/sbin/upstart",
    "/bin/init",
];

/// `/etc/os-release` fields (os-release(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OsRelease {
    /// The file the fields came from (`/etc/os-release`, `/usr/lib/os-release`, or an
    /// older release file such as `/etc/debian_version`).
    pub source: String,
    pub id: Option<String>,
    pub id_like: Option<String>,
    pub name: Option<String>,
    pub version_id: Option<String>,
    pub version_codename: Option<String>,
    pub pretty_name: Option<String>,
}

/// The guest's init system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitSystem {
    Systemd,
    Upstart,
    Sysvinit,
    Unknown,
}

/// One kernel found in `/boot`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KernelInfo {
    /// The version suffix of `vmlinuz-<version>`.
    pub version: String,
    /// Guest path of the image.
    pub image: String,
    /// The matching initrd, if present.
    pub initrd: Option<String>,
    /// `/lib/modules/<version>` exists.
    pub has_modules: bool,
    /// The kernel only boots as a Xen PV guest (old "xenified" kernels).
    pub xen_only: bool,
    /// Why it was judged Xen-only.
    pub xen_reason: Option<String>,
}

/// A piece of Xen-specific guest configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum XenIsmKind {
    /// An fstab entry naming a device by a Xen/legacy kernel name (xvd*, hd*, sd*).
    FstabDevice { device: String, mount_point: String },
    /// A getty on the Xen console (hvc0, xvc0).
    ConsoleGetty { tty: String },
    /// The Xen console listed in /etc/securetty.
    SecureTty { tty: String },
    /// udev rules pinning interface names to the Xen vif MAC addresses.
    PersistentNetRules { interfaces: Vec<String> },
    /// A pv-grub/pygrub menu.lst (GRUB legacy configuration read by the Xen host).
    PvGrubMenu,
    /// A Xen driver named in a module list or alias.
    XenModule { module: String },
}

/// One Xen-ism and the guest file it was found in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XenIsm {
    #[serde(flatten)]
    pub kind: XenIsmKind,
    pub file: String,
}

/// What the guest is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestInfo {
    pub os: Option<OsRelease>,
    pub hostname: Option<String>,
    /// Userland architecture, from the ELF header of `arch_source`.
    pub arch: Option<Arch>,
    pub arch_source: Option<String>,
    pub init: InitSystem,
    pub kernels: Vec<KernelInfo>,
    pub xenisms: Vec<XenIsm>,
    /// glibc, udev, systemd and module-tool versions, for the checks against the kernel
    /// that will boot the guest ([`crate::compat`]).
    pub userland: crate::compat::Userland,
    /// Files that could not be read; the inspection went on without them.
    pub warnings: Vec<String>,
}

/// True when `fs` looks like a guest root: `/etc/fstab` and an init exist.
pub fn looks_like_root(fs: &ExtReader) -> bool {
    let has = |p: &str| matches!(fs.metadata(p), Ok(Some(_)));
    has("/etc/fstab") && INIT_PATHS.iter().any(|p| has(p))
}

struct Scan<'a> {
    fs: &'a ExtReader,
    warnings: Vec<String>,
}

impl Scan<'_> {
    fn note(&mut self, e: ExtReadError) {
        self.warnings.push(e.to_string());
    }

    fn text(&mut self, path: &str, cap: u64) -> Option<String> {
        match self.fs.read_file(path, cap) {
            Ok(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
            Ok(None) => None,
            Err(e) => {
                self.note(e);
                None
            }
        }
    }

    fn exists(&mut self, path: &str) -> bool {
        match self.fs.metadata(path) {
            Ok(m) => m.is_some(),
            Err(e) => {
                self.note(e);
                false
            }
        }
    }

    fn is_file(&mut self, path: &str) -> bool {
        matches!(self.fs.metadata(path), Ok(Some(m)) if m.kind == NodeKind::File)
    }

    fn dir(&mut self, path: &str) -> Vec<String> {
        match self.fs.metadata(path) {
            Ok(Some(m)) if m.kind == NodeKind::Dir => {}
            _ => return Vec::new(),
        }
        match self.fs.read_dir(path, MAX_DIR_ENTRIES) {
            Ok(Some(items)) => {
                let mut names: Vec<String> = items.into_iter().map(|i| i.name).collect();
                names.sort();
                names
            }
            Ok(None) => Vec::new(),
            Err(e) => {
                self.note(e);
                Vec::new()
            }
        }
    }

    /// The first bytes of a file (following symlinks), without reading it whole.
    fn head(&mut self, path: &str, n: usize) -> Option<Vec<u8>> {
        let mut r = match self.fs.open_file(path) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                self.note(e);
                return None;
            }
        };
        let mut buf = vec![0u8; n];
        let mut got = 0;
        while got < n {
            match r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) => {
                    self.warnings.push(format!("reading {path}: {e}"));
                    return None;
                }
            }
        }
        buf.truncate(got);
        Some(buf)
    }
}

/// Inspect the guest in an opened root filesystem.
pub fn inspect_guest(fs: &ExtReader) -> GuestInfo {
    let mut s = Scan {
        fs,
        warnings: Vec::new(),
    };
    let os = os_release(&mut s);
    let hostname = hostname(&mut s);
    let (arch, arch_source) = arch(&mut s);
    let init = init_system(&mut s);
    let userland = crate::compat::read_userland(&mut crate::fixups::dry_run::Overlay::over_ext(fs));
    let kernels = kernels(&mut s);
    let mut xenisms = Vec::new();
    fstab_devices(&mut s, &mut xenisms);
    console_gettys(&mut s, &mut xenisms);
    persistent_net(&mut s, &mut xenisms);
    pv_grub(&mut s, &mut xenisms);
    xen_modules(&mut s, &mut xenisms);
    GuestInfo {
        os,
        hostname,
        arch,
        arch_source,
        init,
        kernels,
        xenisms,
        userland,
        warnings: s.warnings,
    }
}

/// Lines without comments and surrounding blanks.
fn config_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// `KEY=value` with optional single or double quotes (os-release(5) shell syntax subset).
fn parse_assignments(text: &str) -> Vec<(String, String)> {
    config_lines(text)
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = if v.len() >= 2
                && ((v.starts_with('"') && v.ends_with('"'))
                    || (v.starts_with('\'') && v.ends_with('\'')))
            {
                &v[1..v.len() - 1]
            } else {
                v
            };
            (
                k.trim().to_string(),
                v.replace("\\\"", "\"").replace("\\\\", "\\"),
            )
        })
        .collect()
}

fn os_release(s: &mut Scan<'_>) -> Option<OsRelease> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = s.text(path, MAX_CONFIG) {
            let mut os = OsRelease {
                source: path.to_string(),
                ..Default::default()
            };
            for (k, v) in parse_assignments(&text) {
                let slot = match k.as_str() {
                    "ID" => &mut os.id,
                    "ID_LIKE" => &mut os.id_like,
                    "NAME" => &mut os.name,
                    "VERSION_ID" => &mut os.version_id,
                    "VERSION_CODENAME" => &mut os.version_codename,
                    "PRETTY_NAME" => &mut os.pretty_name,
                    _ => continue,
                };
                *slot = Some(v);
            }
            return Some(os);
        }
    }
    // Guests older than os-release (Debian < 7, RHEL/CentOS < 7).
    let legacy: &[(&str, &str)] = &[
        ("/etc/debian_version", "debian"),
        ("/etc/redhat-release", "rhel"),
        ("/etc/centos-release", "centos"),
        ("/etc/SuSE-release", "suse"),
    ];
    for &(path, id) in legacy {
        if let Some(text) = s.text(path, MAX_CONFIG) {
            let first = text.lines().next().unwrap_or("").trim().to_string();
            let (version_id, pretty_name) = if id == "debian" {
                (
                    Some(first.clone()),
                    Some(format!("Debian GNU/Linux {first}")),
                )
            } else {
                (None, Some(first))
            };
            return Some(OsRelease {
                source: path.to_string(),
                id: Some(id.to_string()),
                version_id,
                pretty_name,
                ..Default::default()
            });
        }
    }
    None
}

fn hostname(s: &mut Scan<'_>) -> Option<String> {
    if let Some(t) = s.text("/etc/hostname", MAX_CONFIG) {
        if let Some(h) = config_lines(&t).next() {
            return Some(h.to_string());
        }
    }
    for path in ["/etc/sysconfig/network", "/etc/HOSTNAME"] {
        if let Some(t) = s.text(path, MAX_CONFIG) {
            if path.ends_with("network") {
                if let Some((_, v)) = parse_assignments(&t)
                    .into_iter()
                    .find(|(k, _)| k == "HOSTNAME")
                {
                    return Some(v);
                }
            } else if let Some(h) = config_lines(&t).next() {
                return Some(h.to_string());
            }
        }
    }
    None
}

fn arch(s: &mut Scan<'_>) -> (Option<Arch>, Option<String>) {
    let candidates = [
        "/sbin/init",
        "/usr/sbin/init",
        "/lib/systemd/systemd",
        "/usr/lib/systemd/systemd",
        "/bin/sh",
        "/bin/bash",
        "/usr/bin/bash",
        "/bin/busybox",
    ];
    for path in candidates {
        if !s.is_file(path) {
            continue;
        }
        if let Some(head) = s.head(path, elf::HEADER_LEN) {
            if let Ok(a) = elf::parse_arch(&head) {
                return (Some(a), Some(path.to_string()));
            }
        }
    }
    (None, None)
}

/// The init system, by the detector the fixups use too.
fn init_system(s: &mut Scan<'_>) -> InitSystem {
    use crate::fixups::InitSystem as Init;
    let mut view = crate::fixups::dry_run::Overlay::over_ext(s.fs);
    match crate::fixups::console::detect_init(&mut view) {
        Ok(Some(Init::Systemd)) => InitSystem::Systemd,
        Ok(Some(Init::Upstart)) => InitSystem::Upstart,
        Ok(Some(Init::Sysvinit)) => InitSystem::Sysvinit,
        Ok(None) => InitSystem::Unknown,
        Err(e) => {
            s.warnings.push(e.to_string());
            InitSystem::Unknown
        }
    }
}

fn kernels(s: &mut Scan<'_>) -> Vec<KernelInfo> {
    let mut out = Vec::new();
    for name in s.dir("/boot") {
        let Some(version) = name
            .strip_prefix("vmlinuz-")
            .or_else(|| name.strip_prefix("vmlinux-"))
        else {
            continue;
        };
        let version = version.to_string();
        let image = format!("/boot/{name}");
        let initrd = [
            format!("/boot/initrd.img-{version}"),
            format!("/boot/initramfs-{version}.img"),
            format!("/boot/initrd-{version}.img"),
            format!("/boot/initrd-{version}"),
        ]
        .into_iter()
        .find(|p| s.exists(p));
        let has_modules = s.exists(&format!("/lib/modules/{version}"));
        let mut xen_reason = None;
        if let Some(cfg) = s.text(&format!("/boot/config-{version}"), MAX_KERNEL_CONFIG) {
            if let Some(l) =
                config_lines(&cfg).find(|l| *l == "CONFIG_X86_XEN=y" || *l == "CONFIG_X86_64_XEN=y")
            {
                xen_reason = Some(format!("/boot/config-{version} has {l}"));
            }
        }
        if xen_reason.is_none() && version.to_ascii_lowercase().contains("xen") {
            xen_reason = Some(format!("its version string {version} names Xen"));
        }
        out.push(KernelInfo {
            version,
            image,
            initrd,
            has_modules,
            xen_only: xen_reason.is_some(),
            xen_reason,
        });
    }
    out
}

/// Xen and legacy block device names, which do not exist under KVM's virtio-blk.
fn is_xen_era_device(dev: &str) -> bool {
    ["/dev/xvd", "/dev/hd", "/dev/sd"]
        .iter()
        .any(|p| dev.starts_with(p))
}

fn fstab_devices(s: &mut Scan<'_>, out: &mut Vec<XenIsm>) {
    let Some(t) = s.text("/etc/fstab", MAX_CONFIG) else {
        return;
    };
    for line in config_lines(&t) {
        let mut f = line.split_whitespace();
        let (Some(dev), Some(mp)) = (f.next(), f.next()) else {
            continue;
        };
        if is_xen_era_device(dev) {
            out.push(XenIsm {
                kind: XenIsmKind::FstabDevice {
                    device: dev.to_string(),
                    mount_point: mp.to_string(),
                },
                file: "/etc/fstab".to_string(),
            });
        }
    }
}

const XEN_CONSOLES: &[&str] = &["hvc0", "xvc0"];

fn console_gettys(s: &mut Scan<'_>, out: &mut Vec<XenIsm>) {
    // systemd: enabled getty instances are symlinks in getty.target.wants.
    for dir in [
        "/etc/systemd/system/getty.target.wants",
        "/etc/systemd/system/multi-user.target.wants",
    ] {
        for name in s.dir(dir) {
            for tty in XEN_CONSOLES {
                if name.contains("getty@") && name.contains(&format!("@{tty}.service")) {
                    out.push(XenIsm {
                        kind: XenIsmKind::ConsoleGetty {
                            tty: tty.to_string(),
                        },
                        file: format!("{dir}/{name}"),
                    });
                }
            }
        }
    }
    // sysvinit: "id:runlevels:respawn:/sbin/getty 38400 hvc0".
    if let Some(t) = s.text("/etc/inittab", MAX_CONFIG) {
        for line in config_lines(&t) {
            let words: Vec<&str> = line
                .split(|c: char| c == ':' || c.is_whitespace())
                .collect();
            for tty in XEN_CONSOLES {
                if words.contains(tty) {
                    out.push(XenIsm {
                        kind: XenIsmKind::ConsoleGetty {
                            tty: tty.to_string(),
                        },
                        file: "/etc/inittab".to_string(),
                    });
                }
            }
        }
    }
    // upstart: /etc/init/hvc0.conf, or any job that execs a getty on the console.
    for name in s.dir("/etc/init") {
        if !name.ends_with(".conf") {
            continue;
        }
        let path = format!("/etc/init/{name}");
        let Some(t) = s.text(&path, MAX_CONFIG) else {
            continue;
        };
        for tty in XEN_CONSOLES {
            let named = name == format!("{tty}.conf");
            let execs = config_lines(&t).any(|l| {
                l.starts_with("exec")
                    && l.contains("getty")
                    && l.split_whitespace().any(|w| w == *tty)
            });
            if named || execs {
                out.push(XenIsm {
                    kind: XenIsmKind::ConsoleGetty {
                        tty: tty.to_string(),
                    },
                    file: path.clone(),
                });
            }
        }
    }
    if let Some(t) = s.text("/etc/securetty", MAX_CONFIG) {
        for line in config_lines(&t) {
            if XEN_CONSOLES.contains(&line) {
                out.push(XenIsm {
                    kind: XenIsmKind::SecureTty {
                        tty: line.to_string(),
                    },
                    file: "/etc/securetty".to_string(),
                });
            }
        }
    }
}

fn persistent_net(s: &mut Scan<'_>, out: &mut Vec<XenIsm>) {
    let path = "/etc/udev/rules.d/70-persistent-net.rules";
    let Some(t) = s.text(path, MAX_CONFIG) else {
        return;
    };
    let interfaces: Vec<String> = config_lines(&t)
        .filter(|l| l.contains("ATTR{address}"))
        .filter_map(|l| {
            let rest = &l[l.find("NAME=\"")? + 6..];
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect();
    if !interfaces.is_empty() {
        out.push(XenIsm {
            kind: XenIsmKind::PersistentNetRules { interfaces },
            file: path.to_string(),
        });
    }
}

fn pv_grub(s: &mut Scan<'_>, out: &mut Vec<XenIsm>) {
    for path in [
        "/boot/grub/menu.lst",
        "/boot/grub/grub.conf",
        "/etc/grub.conf",
    ] {
        if s.is_file(path) {
            out.push(XenIsm {
                kind: XenIsmKind::PvGrubMenu,
                file: path.to_string(),
            });
        }
    }
}

/// Xen front-end and helper drivers (xen-blkfront, xen_netfront, xenblk, xennet, ...).
fn is_xen_module(name: &str) -> bool {
    name.starts_with("xen")
}

fn xen_modules(s: &mut Scan<'_>, out: &mut Vec<XenIsm>) {
    let mut found = |module: &str, file: &str| {
        out.push(XenIsm {
            kind: XenIsmKind::XenModule {
                module: module.to_string(),
            },
            file: file.to_string(),
        })
    };
    // One module per line.
    for path in ["/etc/modules", "/etc/initramfs-tools/modules"] {
        if let Some(t) = s.text(path, MAX_CONFIG) {
            for m in config_lines(&t).filter_map(|l| l.split_whitespace().next()) {
                if is_xen_module(m) {
                    found(m, path);
                }
            }
        }
    }
    // modprobe aliases: "alias eth0 xennet", "alias scsi_hostadapter xenblk".
    let mut conf: Vec<String> = vec!["/etc/modprobe.conf".to_string()];
    conf.extend(
        s.dir("/etc/modprobe.d")
            .into_iter()
            .filter(|n| n.ends_with(".conf"))
            .map(|n| format!("/etc/modprobe.d/{n}")),
    );
    for path in conf {
        if let Some(t) = s.text(&path, MAX_CONFIG) {
            for l in config_lines(&t) {
                let w: Vec<&str> = l.split_whitespace().collect();
                if w.len() >= 3 && w[0] == "alias" && is_xen_module(w[2]) {
                    found(w[2], &path);
                }
            }
        }
    }
    // SUSE: INITRD_MODULES / DOMU_INITRD_MODULES in /etc/sysconfig/kernel.
    if let Some(t) = s.text("/etc/sysconfig/kernel", MAX_CONFIG) {
        for (k, v) in parse_assignments(&t) {
            if k.ends_with("INITRD_MODULES") {
                for m in v.split_whitespace().filter(|m| is_xen_module(m)) {
                    found(m, "/etc/sysconfig/kernel");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release_quoting() {
        let kv = parse_assignments(
            "# c\nID=debian\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nX='a b'\n",
        );
        assert_eq!(kv[0], ("ID".into(), "debian".into()));
        assert_eq!(kv[1].1, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(kv[2].1, "a b");
    }

    #[test]
    fn xen_era_devices() {
        assert!(is_xen_era_device("/dev/xvda1"));
        assert!(is_xen_era_device("/dev/sda2"));
        assert!(!is_xen_era_device("UUID=abc"));
        assert!(!is_xen_era_device("/dev/vda1"));
    }
}
