//! Whether the guest's userland can run on the kernel that will boot it.
//!
//! A donor kernel is years newer than an old guest's userland, and a few pairings are
//! known not to work:
//!
//! - **vsyscall**: glibc before 2.14 calls `time()`/`gettimeofday()` through the fixed
//!   vsyscall page of x86-64. Kernels built with `CONFIG_LEGACY_VSYSCALL_NONE=y` (Debian
//!   12's) have no such page, so every 64-bit process of such a guest (init first) dies
//!   with SIGSEGV. `vsyscall=emulate` on the kernel command line brings the page back.
//! - **udev and sysfs**: udev before 127 expects the old sysfs block layout that only
//!   kernels with `CONFIG_SYSFS_DEPRECATED` offer (RHEL 5, SLES 10); on a newer kernel it
//!   creates no block device nodes and the root filesystem is never found.
//! - **module compression**: the guest's own `modprobe` loads the donor's modules after
//!   the initrd. module-init-tools reads no xz or zstd modules; kmod reads xz when built
//!   with liblzma (every distribution's) and zstd from version 28 on.
//!
//! The facts are read from the guest's files: glibc's version from the `libc-2.N.so` the
//! `libc.so.6` link names, or from the version string inside `libc.so.6` (glibc 2.34+
//! ships one file); udev's, systemd's and kmod's from dpkg's status file, systemd's also
//! from its `libsystemd-shared-N.so`; which `modprobe` the guest has from its files.

use crate::fixups::{console::detect_init, InitSystem};
use crate::guestfs::GuestFs;

/// Largest libc.so.6 searched for its version string.
const MAX_LIBC_BYTES: u64 = 16 << 20;
/// Largest dpkg status file read.
const MAX_DPKG_STATUS: u64 = 64 << 20;

/// Directories that hold the guest's C library.
const LIB_DIRS: [&str; 8] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib/i386-linux-gnu",
    "/usr/lib/i386-linux-gnu",
    "/lib",
    "/usr/lib",
];

/// A `major.minor` version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Version {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A fact and the guest file it was read from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fact<T> {
    /// What was read.
    pub value: T,
    /// The guest file it was read from.
    pub source: String,
}

/// The guest's module loader.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "version")]
pub enum ModuleTools {
    /// kmod, with its version when known.
    Kmod(Option<u32>),
    /// The old module-init-tools (RHEL 6 and earlier, Debian 6, SLES 11).
    ModuleInitTools,
}

/// What the compatibility checks know about the guest's userland.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Userland {
    /// glibc's version.
    pub glibc: Option<Fact<Version>>,
    /// udev's version (systemd's for systemd-udevd).
    pub udev: Option<Fact<u32>>,
    /// systemd's version.
    pub systemd: Option<Fact<u32>>,
    /// The module loader and its version.
    pub module_tools: Option<Fact<ModuleTools>>,
    /// The init system.
    pub init: Option<InitSystem>,
}

/// `2.12` out of `libc-2.12.so`.
fn glibc_from_name(name: &str) -> Option<Version> {
    let v = name.strip_prefix("libc-")?.strip_suffix(".so")?;
    parse_version(v)
}

fn parse_version(v: &str) -> Option<Version> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some(Version {
        major,
        minor: minor.parse().ok()?,
    })
}

/// The version in glibc's banner: "… release version 2.36." (every glibc prints it when
/// run, from the same string).
fn glibc_from_banner(data: &[u8]) -> Option<Version> {
    let needle = b"release version ";
    let at = data.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let tail = &data[at..data.len().min(at + 16)];
    let text: String = tail
        .iter()
        .take_while(|b| b.is_ascii_digit() || **b == b'.')
        .map(|&b| b as char)
        .collect();
    parse_version(text.trim_end_matches('.'))
}

/// The leading number of a Debian version (`175-7.2` → 175, `1:2.3` → 2).
fn leading_number(version: &str) -> Option<u32> {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Installed packages' versions from dpkg's status file.
fn dpkg_versions(status: &str, wanted: &[&str]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for stanza in status.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), Some(v), true) = (name, version, installed) {
            if wanted.contains(&n) {
                out.push((n.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn is_file(guest: &mut dyn GuestFs, path: &str) -> bool {
    matches!(guest.stat(path), Ok(Some(m)) if m.kind == crate::guestfs::NodeKind::File)
}

/// Read what the checks need from the guest. Unreadable files leave a fact unknown.
pub fn read_userland(guest: &mut dyn GuestFs) -> Userland {
    let mut u = Userland {
        init: detect_init(guest).ok().flatten(),
        ..Default::default()
    };
    u.glibc = find_glibc(guest);
    let status = guest
        .read_file("/var/lib/dpkg/status", MAX_DPKG_STATUS)
        .ok()
        .flatten()
        .map(|d| String::from_utf8_lossy(&d).into_owned());
    let mut kmod_version = None;
    if let Some(status) = &status {
        for (name, version) in dpkg_versions(status, &["udev", "systemd", "kmod"]) {
            let source = format!("/var/lib/dpkg/status ({name} {version})");
            let Some(n) = leading_number(&version) else {
                continue;
            };
            match name.as_str() {
                "udev" => u.udev = Some(Fact { value: n, source }),
                "systemd" => u.systemd = Some(Fact { value: n, source }),
                _ => kmod_version = Some(n),
            }
        }
    }
    if u.systemd.is_none() {
        u.systemd = systemd_from_shared_lib(guest);
    }
    if u.udev.is_none() {
        // systemd-udevd is udev since systemd 183.
        if let Some(s) = &u.systemd {
            u.udev = Some(s.clone());
        }
    }
    for kmod in ["/bin/kmod", "/usr/bin/kmod", "/sbin/kmod"] {
        if is_file(guest, kmod) {
            u.module_tools = Some(Fact {
                value: ModuleTools::Kmod(kmod_version),
                source: kmod.to_string(),
            });
            break;
        }
    }
    if u.module_tools.is_none() {
        for modprobe in ["/sbin/modprobe", "/usr/sbin/modprobe"] {
            let link = matches!(guest.lstat(modprobe), Ok(Some(m)) if m.kind == crate::guestfs::NodeKind::Symlink);
            if !link && is_file(guest, modprobe) {
                u.module_tools = Some(Fact {
                    value: ModuleTools::ModuleInitTools,
                    source: format!("{modprobe} (no kmod binary)"),
                });
                break;
            }
        }
    }
    u
}

fn find_glibc(guest: &mut dyn GuestFs) -> Option<Fact<Version>> {
    for dir in LIB_DIRS {
        let so6 = format!("{dir}/libc.so.6");
        if let Ok(Some(target)) = guest.read_link(&so6) {
            let name = target.rsplit('/').next().unwrap_or_default();
            if let Some(v) = glibc_from_name(name) {
                return Some(Fact {
                    value: v,
                    source: format!("{so6} -> {target}"),
                });
            }
        }
        if is_file(guest, &so6)
            && !matches!(guest.lstat(&so6), Ok(Some(m)) if m.kind == crate::guestfs::NodeKind::Symlink)
        {
            if let Some(v) = guest
                .read_file(&so6, MAX_LIBC_BYTES)
                .ok()
                .flatten()
                .and_then(|d| glibc_from_banner(&d))
            {
                return Some(Fact {
                    value: v,
                    source: format!("{so6} (its version string)"),
                });
            }
        }
    }
    // A libc-2.N.so without a readable link (a damaged or odd tree).
    for dir in LIB_DIRS {
        let Ok(Some(items)) = guest.read_dir(dir, crate::tree::MAX_DIR_ENTRIES) else {
            continue;
        };
        if let Some((name, v)) = items
            .iter()
            .filter_map(|i| glibc_from_name(&i.name).map(|v| (i.name.clone(), v)))
            .max_by_key(|(_, v)| *v)
        {
            return Some(Fact {
                value: v,
                source: format!("{dir}/{name}"),
            });
        }
    }
    None
}

fn systemd_from_shared_lib(guest: &mut dyn GuestFs) -> Option<Fact<u32>> {
    for dir in [
        "/lib/systemd",
        "/usr/lib/systemd",
        "/usr/lib/x86_64-linux-gnu/systemd",
    ] {
        let Ok(Some(items)) = guest.read_dir(dir, crate::tree::MAX_DIR_ENTRIES) else {
            continue;
        };
        for i in items {
            let n = i
                .name
                .strip_prefix("libsystemd-shared-")
                .and_then(|r| r.strip_suffix(".so"))
                .and_then(leading_number);
            if let Some(n) = n {
                return Some(Fact {
                    value: n,
                    source: format!("{dir}/{}", i.name),
                });
            }
        }
    }
    None
}

/// What the kernel that will boot the guest offers, for the checks.
#[derive(Debug, Clone, Default)]
pub struct KernelFacts {
    /// The kernel's version string.
    pub version: String,
    /// Its `/boot/config-VER`, when known.
    pub config: Option<String>,
    /// Whether it runs 64-bit x86 programs: a 64-bit kernel under a 64-bit userland (a
    /// 32-bit glibc never calls the vsyscall page).
    pub x86_64: bool,
    /// Compression suffixes of its module files (`xz`, `zst`, `gz`).
    pub module_compression: Vec<String>,
}

impl KernelFacts {
    fn config_value(&self, key: &str) -> Option<&str> {
        let cfg = self.config.as_deref()?;
        cfg.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
    }
}

impl KernelFacts {
    /// The facts of a donor kernel: its config (when the donor has one, read with a size
    /// bound) and the compression of its module files.
    pub fn of_donor_kernel(
        donor: &crate::donor::Donor,
        kernel: &crate::donor::DonorKernel,
    ) -> Result<Self, crate::donor::DonorError> {
        use std::io::Read;
        let config = match &kernel.config {
            Some(file) => {
                let mut text = Vec::new();
                donor
                    .open_file(file)?
                    .take(crate::donor::MAX_CONFIG_BYTES)
                    .read_to_end(&mut text)
                    .map_err(|e| crate::donor::DonorError::io("reading", "the kernel config", e))?;
                Some(String::from_utf8_lossy(&text).into_owned())
            }
            None => None,
        };
        let mut module_compression: Vec<String> = Vec::new();
        for e in &kernel.modules.entries {
            let Some((_, suffix)) = e.rel.rsplit_once(".ko.") else {
                continue;
            };
            if !module_compression.iter().any(|s| s == suffix) {
                module_compression.push(suffix.to_string());
            }
        }
        module_compression.sort();
        Ok(KernelFacts {
            version: kernel.version.clone(),
            config,
            x86_64: kernel.arch == crate::donor::KernelArch::X86_64,
            module_compression,
        })
    }
}

/// The outcome of the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Assessment {
    /// Kernel arguments to add, each with why.
    pub kernel_args: Vec<(String, String)>,
    /// Pairings known not to work (refused with `strict`).
    pub problems: Vec<String>,
    /// Things worth knowing.
    pub notes: Vec<String>,
}

/// Check the guest's userland against the kernel that will boot it.
pub fn assess(userland: &Userland, kernel: &KernelFacts) -> Assessment {
    let mut a = Assessment::default();
    if let Some(g) = &userland.glibc {
        let old = g.value
            < Version {
                major: 2,
                minor: 14,
            };
        if old && kernel.x86_64 {
            let emulate = kernel.config_value("CONFIG_LEGACY_VSYSCALL_EMULATE") == Some("y");
            if !emulate {
                a.kernel_args.push((
                    "vsyscall=emulate".into(),
                    format!(
                        "the guest's glibc is {} ({}), older than 2.14: it calls the vsyscall page, which kernel {} does not map by default; without vsyscall=emulate init dies at once",
                        g.value, g.source, kernel.version
                    ),
                ));
            }
        }
    }
    if let Some(udev) = &userland.udev {
        if udev.value < 127 && kernel.config_value("CONFIG_SYSFS_DEPRECATED") != Some("y") {
            a.problems.push(format!(
                "the guest's udev is {} ({}); udev before 127 needs the old sysfs layout (CONFIG_SYSFS_DEPRECATED), which kernel {} lacks: no block devices would appear and the root filesystem would not be found. Use a donor kernel of the guest's era, or the guest's own kernel",
                udev.value, udev.source, kernel.version
            ));
        }
    }
    if let Some(tools) = &userland.module_tools {
        for suffix in &kernel.module_compression {
            let readable = match (&tools.value, suffix.as_str()) {
                (_, "gz") => true,
                (ModuleTools::ModuleInitTools, _) => false,
                (ModuleTools::Kmod(Some(v)), "zst") => *v >= 28,
                (ModuleTools::Kmod(None), "zst") => {
                    a.notes.push(format!(
                        "kernel {} has zstd-compressed modules; kmod reads them from version 28 on, and the guest's kmod version is unknown",
                        kernel.version
                    ));
                    true
                }
                (ModuleTools::Kmod(_), _) => true,
            };
            if !readable {
                a.problems.push(format!(
                    "kernel {} has {suffix}-compressed modules, which the guest's module tools ({}) cannot load: every module after the initrd (network, filesystems) would fail to load",
                    kernel.version, tools.source
                ));
            }
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::MemFs;

    #[test]
    fn glibc_from_link_banner_and_name() {
        let mut fs = MemFs::new()
            .with_file("/lib64/libc-2.12.so", "ELF")
            .with_symlink("/lib64/libc.so.6", "libc-2.12.so");
        let u = read_userland(&mut fs);
        assert_eq!(
            u.glibc.as_ref().unwrap().value,
            Version {
                major: 2,
                minor: 12
            }
        );
        assert_eq!(u.glibc.unwrap().source, "/lib64/libc.so.6 -> libc-2.12.so");
        let mut fs = MemFs::new().with_file(
            "/lib/x86_64-linux-gnu/libc.so.6",
            "\x7fELF...GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\n",
        );
        let u = read_userland(&mut fs);
        assert_eq!(
            u.glibc.unwrap().value,
            Version {
                major: 2,
                minor: 36
            }
        );
        let mut fs = MemFs::new().with_file("/lib/libc-2.5.so", "ELF");
        assert_eq!(
            read_userland(&mut fs).glibc.unwrap().value,
            Version { major: 2, minor: 5 }
        );
    }

    #[test]
    fn dpkg_status_versions() {
        let status = "Package: udev\nStatus: install ok installed\nVersion: 175-7.2\n\nPackage: kmod\nStatus: deinstall ok config-files\nVersion: 9-3\n\nPackage: systemd\nStatus: install ok installed\nVersion: 252.22-1~deb12u1\n";
        assert_eq!(
            dpkg_versions(status, &["udev", "kmod", "systemd"]),
            [
                ("udev".to_string(), "175-7.2".to_string()),
                ("systemd".to_string(), "252.22-1~deb12u1".to_string())
            ]
        );
        assert_eq!(leading_number("1:2.3"), Some(2));
    }

    fn kernel() -> KernelFacts {
        KernelFacts {
            version: "6.1.0-28-amd64".into(),
            config: Some("CONFIG_LEGACY_VSYSCALL_NONE=y\n".into()),
            x86_64: true,
            module_compression: vec!["xz".into()],
        }
    }

    #[test]
    fn old_glibc_gets_vsyscall_emulate() {
        let u = Userland {
            glibc: Some(Fact {
                value: Version {
                    major: 2,
                    minor: 12,
                },
                source: "/lib64/libc-2.12.so".into(),
            }),
            ..Default::default()
        };
        let a = assess(&u, &kernel());
        assert_eq!(a.kernel_args.len(), 1);
        assert_eq!(a.kernel_args[0].0, "vsyscall=emulate");
        assert!(a.kernel_args[0].1.contains("2.12"));
        let mut new = u.clone();
        new.glibc.as_mut().unwrap().value.minor = 17;
        assert!(assess(&new, &kernel()).kernel_args.is_empty());
        let mut k32 = kernel();
        k32.x86_64 = false;
        assert!(assess(&u, &k32).kernel_args.is_empty());
    }

    #[test]
    fn bad_pairings() {
        let u = Userland {
            udev: Some(Fact {
                value: 95,
                source: "x".into(),
            }),
            module_tools: Some(Fact {
                value: ModuleTools::ModuleInitTools,
                source: "/sbin/modprobe".into(),
            }),
            ..Default::default()
        };
        let a = assess(&u, &kernel());
        assert_eq!(a.problems.len(), 2, "{:?}", a.problems);
        let ok = Userland {
            udev: Some(Fact {
                value: 252,
                source: "x".into(),
            }),
            module_tools: Some(Fact {
                value: ModuleTools::Kmod(Some(30)),
                source: "/bin/kmod".into(),
            }),
            ..Default::default()
        };
        let mut k = kernel();
        k.module_compression = vec!["zst".into(), "xz".into()];
        assert!(assess(&ok, &k).problems.is_empty());
        let mut old_kmod = ok.clone();
        old_kmod.module_tools.as_mut().unwrap().value = ModuleTools::Kmod(Some(26));
        assert_eq!(assess(&old_kmod, &k).problems.len(), 1);
    }
}
