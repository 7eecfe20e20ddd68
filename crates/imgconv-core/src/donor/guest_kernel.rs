//! `--use-guest-kernel`: find a kernel the guest already has that boots on HVM, instead
//! of grafting the donor's (virt-v2v's behaviour, see docs/conversion-checklist.md).
//!
//! A usable guest kernel has `/boot/vmlinuz-VER`, a matching initrd and a
//! `/lib/modules/VER` tree, and is not Xen-only. Xen-only means the old "xenified" kernels
//! (RHEL5/SLES10-11 `-xen`, Debian `2.6.26-xen`): their `/boot/config-VER` sets
//! `CONFIG_X86_XEN=y` or `CONFIG_X86_64_XEN=y`, exactly virt-v2v's test. Modern pvops
//! kernels run as a PV guest and on bare HVM alike, so they qualify. When a kernel has no
//! config file, a version naming `xen` (`2.6.18-xen`, `-xenU`) is taken as Xen-only, the
//! conservative choice.

use super::{classify_boot_name, compare_versions, BootFileKind, DonorError, MAX_CONFIG_BYTES};
use crate::ext::read::ExtReader;
use crate::guestfs::GuestFs;
use crate::tree::{DirItem, MapErr, Mounted, NodeKind, TreeRead};
use std::collections::BTreeMap;

/// Most entries read from the guest's `/boot` or `/lib/modules`.
const MAX_ENTRIES: usize = 100_000;

/// A kernel of the guest that can boot the converted image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestKernel {
    /// `6.1.0-28-amd64`.
    pub version: String,
    /// Guest paths.
    pub vmlinuz: String,
    pub initrd: String,
    pub config: Option<String>,
    pub modules_dir: String,
    /// Xen-only kernels of the guest passed over.
    pub skipped_xen: Vec<String>,
}

/// A guest tree with donor errors: the source image (one reader, or two with a separate
/// `/boot`, [`Mounted`]) or the output's guest filesystem.
type Tree<'a> = dyn TreeRead<Error = DonorError> + 'a;

/// `tree` with its errors as donor errors.
fn donor_tree<T: TreeRead>(tree: T) -> impl TreeRead<Error = DonorError>
where
    DonorError: From<T::Error>,
{
    MapErr::new(tree, |_: &'static str, _: &str, e: T::Error| {
        DonorError::from(e)
    })
}

/// Entries of `dir` (following symlinks); `None` when it is absent or not a directory.
fn list(tree: &mut Tree<'_>, dir: &str) -> Result<Option<Vec<DirItem>>, DonorError> {
    match tree.stat(dir)? {
        Some(m) if m.kind == NodeKind::Dir => tree.read_dir(dir, MAX_ENTRIES),
        _ => Ok(None),
    }
}

/// Find the newest usable non-Xen kernel in a guest read through the guarded reader
/// (the source image, before anything is written).
pub fn find_guest_kernel_in_reader(guest: &ExtReader) -> Result<GuestKernel, DonorError> {
    find(&mut donor_tree(guest))
}

/// [`find_guest_kernel_in_reader`] for a guest whose `/boot` is the separate filesystem
/// `boot` (its kernels and initrds are there, its modules in the root).
pub fn find_guest_kernel_in_readers(
    root: &ExtReader,
    boot: Option<&ExtReader>,
) -> Result<GuestKernel, DonorError> {
    match boot {
        Some(boot) => find(&mut donor_tree(Mounted::new(root, boot))),
        None => find(&mut donor_tree(root)),
    }
}

/// Find the newest usable non-Xen kernel in a guest filesystem (e.g. the output's root).
pub fn find_guest_kernel(guest: &mut dyn GuestFs) -> Result<GuestKernel, DonorError> {
    find(&mut donor_tree(guest))
}

#[derive(Default)]
struct Found {
    vmlinuz: Option<String>,
    initrd: Option<String>,
    config: Option<String>,
    modules: Option<String>,
}

fn find(tree: &mut Tree<'_>) -> Result<GuestKernel, DonorError> {
    let mut by_version: BTreeMap<String, Found> = BTreeMap::new();
    if let Some(mut items) = list(tree, "/boot")? {
        items.sort_by(|a, b| a.name.cmp(&b.name));
        for item in items {
            let Some((kind, version)) = classify_boot_name(&item.name) else {
                continue;
            };
            let path = format!("/boot/{}", item.name);
            if !matches!(tree.stat(&path)?, Some(m) if m.kind == NodeKind::File) {
                continue;
            }
            let f = by_version.entry(version.to_string()).or_default();
            let slot = match kind {
                BootFileKind::Vmlinuz => &mut f.vmlinuz,
                BootFileKind::Initrd => &mut f.initrd,
                BootFileKind::Config => &mut f.config,
                BootFileKind::SystemMap => continue,
            };
            slot.get_or_insert(path);
        }
    }
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let Some(items) = list(tree, base)? else {
            continue;
        };
        for item in items {
            let dir = format!("{base}/{}", item.name);
            if !matches!(tree.stat(&dir)?, Some(m) if m.kind == NodeKind::Dir) {
                continue;
            }
            let has_modules = matches!(tree.stat(&format!("{dir}/modules.dep"))?, Some(m) if m.kind == NodeKind::File)
                || matches!(tree.stat(&format!("{dir}/kernel"))?, Some(m) if m.kind == NodeKind::Dir);
            if has_modules {
                by_version
                    .entry(item.name.clone())
                    .or_default()
                    .modules
                    .get_or_insert(dir);
            }
        }
    }

    let mut versions: Vec<&String> = by_version.keys().collect();
    versions.sort_by(|a, b| compare_versions(b, a));
    let mut summaries = Vec::new();
    let mut xen = Vec::new();
    let mut best: Option<GuestKernel> = None;
    for v in versions {
        let f = &by_version[v];
        let mut lacks = Vec::new();
        if f.vmlinuz.is_none() {
            lacks.push("vmlinuz");
        }
        if f.initrd.is_none() {
            lacks.push("initrd");
        }
        if f.modules.is_none() {
            lacks.push("modules tree");
        }
        if !lacks.is_empty() {
            if f.vmlinuz.is_some() || f.modules.is_some() || f.initrd.is_some() {
                summaries.push(format!("{v} (lacks: {})", lacks.join(", ")));
            }
            continue;
        }
        if is_xen_only(tree, v, f.config.as_deref())? {
            summaries.push(format!("{v} (Xen-only kernel)"));
            xen.push(v.clone());
            continue;
        }
        summaries.push(format!("{v} (usable)"));
        if best.is_none() {
            best = Some(GuestKernel {
                version: v.clone(),
                vmlinuz: f.vmlinuz.clone().unwrap_or_default(),
                initrd: f.initrd.clone().unwrap_or_default(),
                config: f.config.clone(),
                modules_dir: f.modules.clone().unwrap_or_default(),
                skipped_xen: Vec::new(),
            });
        }
    }
    match best {
        Some(mut k) => {
            k.skipped_xen = xen;
            Ok(k)
        }
        None if !xen.is_empty() => Err(DonorError::OnlyXenKernels { found: summaries }),
        None => Err(DonorError::NoGuestKernel { found: summaries }),
    }
}

/// virt-v2v's Xen-only test, plus the version-name fallback when there is no config.
fn is_xen_only(
    tree: &mut Tree<'_>,
    version: &str,
    config: Option<&str>,
) -> Result<bool, DonorError> {
    match config {
        Some(path) => {
            let text = tree.read_file(path, MAX_CONFIG_BYTES)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&text);
            Ok(text
                .lines()
                .map(str::trim)
                .any(|l| l == "CONFIG_X86_XEN=y" || l == "CONFIG_X86_64_XEN=y"))
        }
        None => Ok(version.to_ascii_lowercase().contains("xen")),
    }
}

/// How a driver the boot needs is provided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provided {
    /// A module file in the initrd.
    InInitrd,
    /// Built into the kernel (its config says `=y`, or a `modules.builtin` lists it).
    BuiltIn,
    Missing,
}

/// One driver the guest kernel needs to mount its root on the new disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NeededDriver {
    /// Module names that would do (`ext4` serves ext3 too).
    pub modules: Vec<String>,
    pub provided: Provided,
}

/// Whether a guest kernel can find and mount its root on KVM, read from its initrd and
/// its config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KvmReadiness {
    pub kernel: String,
    pub initrd: String,
    /// The initrd's segments (`uncompressed`, `zstd`, …), as read.
    pub initrd_format: Vec<String>,
    pub drivers: Vec<NeededDriver>,
    /// True when every driver is there.
    pub ready: bool,
    /// One sentence: why it can boot, or what it lacks.
    pub why: String,
}

/// Module names that provide the disk controller of `bus` and the root filesystem type,
/// with the kernel config option of each module (`CONFIG_…=y` means built in).
fn needed_drivers(
    bus: crate::hardware::DiskBus,
    root_fstype: &str,
) -> Vec<Vec<(&'static str, &'static str)>> {
    use crate::hardware::DiskBus;
    let mut out = match bus {
        DiskBus::Virtio => vec![
            vec![("virtio_pci", "CONFIG_VIRTIO_PCI")],
            vec![("virtio_blk", "CONFIG_VIRTIO_BLK")],
        ],
        DiskBus::Sata => vec![vec![("ahci", "CONFIG_SATA_AHCI")]],
        DiskBus::Ide => vec![vec![("ata_piix", "CONFIG_ATA_PIIX")]],
    };
    out.push(match root_fstype {
        "ext2" => vec![
            ("ext2", "CONFIG_EXT2_FS"),
            ("ext4", "CONFIG_EXT4_USE_FOR_EXT2"),
        ],
        "ext3" => vec![("ext3", "CONFIG_EXT3_FS"), ("ext4", "CONFIG_EXT4_FS")],
        _ => vec![("ext4", "CONFIG_EXT4_FS")],
    });
    out
}

/// Read the kernel's initrd and config and tell whether it boots from `bus`.
fn readiness(
    tree: &mut Tree<'_>,
    kernel: &GuestKernel,
    bus: crate::hardware::DiskBus,
    root_fstype: &str,
) -> Result<KvmReadiness, DonorError> {
    let config = match &kernel.config {
        Some(p) => tree
            .read_file(p, MAX_CONFIG_BYTES)?
            .map(|d| String::from_utf8_lossy(&d).into_owned()),
        None => None,
    };
    let builtin_by_config = |option: &str| {
        config.as_deref().is_some_and(|c| {
            c.lines()
                .any(|l| l.strip_prefix(option).and_then(|r| r.strip_prefix('=')) == Some("y"))
        })
    };
    let mut result = KvmReadiness {
        kernel: kernel.version.clone(),
        initrd: kernel.initrd.clone(),
        initrd_format: Vec::new(),
        drivers: Vec::new(),
        ready: false,
        why: String::new(),
    };
    let data = tree.read_file(&kernel.initrd, crate::initrd::MAX_INITRD_BYTES)?;
    let contents = match data.as_deref().map(crate::initrd::parse) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            result.why = format!("its initrd {} cannot be read ({e})", kernel.initrd);
            return Ok(result);
        }
        None => {
            result.why = format!("its initrd {} is missing", kernel.initrd);
            return Ok(result);
        }
    };
    result.initrd_format = contents
        .segments
        .iter()
        .map(|s| s.compression.to_string())
        .collect();
    // The guest's own list of built-in modules for this kernel.
    let listed = tree
        .read_file(&format!("{}/modules.builtin", kernel.modules_dir), 4 << 20)?
        .map(|d| {
            String::from_utf8_lossy(&d)
                .lines()
                .filter_map(crate::initrd::module_name)
                .collect::<std::collections::BTreeSet<_>>()
        })
        .unwrap_or_default();
    for alternatives in needed_drivers(bus, root_fstype) {
        let provided = if alternatives
            .iter()
            .any(|(m, _)| contents.modules.contains(*m))
        {
            Provided::InInitrd
        } else if alternatives.iter().any(|(m, opt)| {
            builtin_by_config(opt) || contents.builtin.contains(*m) || listed.contains(*m)
        }) {
            Provided::BuiltIn
        } else {
            Provided::Missing
        };
        result.drivers.push(NeededDriver {
            modules: alternatives.iter().map(|(m, _)| m.to_string()).collect(),
            provided,
        });
    }
    let missing: Vec<String> = result
        .drivers
        .iter()
        .filter(|d| d.provided == Provided::Missing)
        .map(|d| d.modules.join(" or "))
        .collect();
    result.ready = missing.is_empty();
    result.why = if result.ready {
        format!(
            "its initrd {} ({}) has the drivers for the {bus:?} disk and the {root_fstype} root ({})",
            kernel.initrd,
            result.initrd_format.join(" + "),
            result
                .drivers
                .iter()
                .map(|d| format!(
                    "{}: {}",
                    d.modules.join("/"),
                    if d.provided == Provided::InInitrd { "module" } else { "built in" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!(
            "its initrd {} lacks {} (neither a module in it nor built into the kernel)",
            kernel.initrd,
            missing.join(", ")
        )
    };
    Ok(result)
}

/// `readiness` of a kernel found in a guest read through the guarded reader.
pub fn kvm_readiness_in_reader(
    guest: &ExtReader,
    kernel: &GuestKernel,
    bus: crate::hardware::DiskBus,
    root_fstype: &str,
) -> Result<KvmReadiness, DonorError> {
    readiness(&mut donor_tree(guest), kernel, bus, root_fstype)
}

/// [`kvm_readiness_in_reader`] for a guest with a separate `/boot` filesystem.
pub fn kvm_readiness_in_readers(
    root: &ExtReader,
    boot: Option<&ExtReader>,
    kernel: &GuestKernel,
    bus: crate::hardware::DiskBus,
    root_fstype: &str,
) -> Result<KvmReadiness, DonorError> {
    match boot {
        Some(boot) => readiness(
            &mut donor_tree(Mounted::new(root, boot)),
            kernel,
            bus,
            root_fstype,
        ),
        None => readiness(&mut donor_tree(root), kernel, bus, root_fstype),
    }
}

/// `readiness` of a kernel found in a guest filesystem.
pub fn kvm_readiness(
    guest: &mut dyn GuestFs,
    kernel: &GuestKernel,
    bus: crate::hardware::DiskBus,
    root_fstype: &str,
) -> Result<KvmReadiness, DonorError> {
    readiness(&mut donor_tree(guest), kernel, bus, root_fstype)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestfs::MemFs;

    /// A newc archive of regular files (names, data), with its trailer.
    fn newc(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let entries =
            files
                .iter()
                .map(|(n, d)| (*n, 0o100644u32, *d))
                .chain([("TRAILER!!!", 0, &b""[..])]);
        for (name, mode, data) in entries {
            out.extend_from_slice(
                format!(
                    "070701{:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                    1, 0, 0, 1, 0, data.len(), 0, 0, 0, 0, name.len() + 1, 0
                )
                .as_bytes(),
            );
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.resize(out.len().div_ceil(4) * 4, 0);
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(4) * 4, 0);
        }
        out
    }

    #[test]
    fn readiness_from_initrd_and_config() {
        use crate::hardware::DiskBus;
        let v = "3.10.0-1160.el7.x86_64";
        let initrd = newc(&[
            (
                &format!("usr/lib/modules/{v}/kernel/drivers/block/virtio_blk.ko.xz"),
                b"x",
            ),
            (
                &format!("usr/lib/modules/{v}/kernel/drivers/virtio/virtio_pci.ko.xz"),
                b"x",
            ),
        ]);
        let mut fs = MemFs::new()
            .with_file(&format!("/boot/vmlinuz-{v}"), "k")
            .with_file(
                &format!("/boot/initramfs-{v}.img"),
                &String::from_utf8(initrd).unwrap(),
            )
            .with_file(
                &format!("/boot/config-{v}"),
                "CONFIG_EXT4_FS=y
CONFIG_SATA_AHCI=m
",
            )
            .with_file(&format!("/lib/modules/{v}/modules.dep"), "");
        let k = find_guest_kernel(&mut fs).unwrap();
        let r = kvm_readiness(&mut fs, &k, DiskBus::Virtio, "ext4").unwrap();
        assert!(r.ready, "{r:?}");
        assert_eq!(r.initrd_format, ["uncompressed"]);
        assert_eq!(
            r.drivers
                .iter()
                .map(|d| d.provided.clone())
                .collect::<Vec<_>>(),
            [Provided::InInitrd, Provided::InInitrd, Provided::BuiltIn]
        );
        let r = kvm_readiness(&mut fs, &k, DiskBus::Sata, "ext4").unwrap();
        assert!(!r.ready);
        assert!(r.why.contains("lacks ahci"), "{}", r.why);
        // An initrd that is not one: not ready, with the reason.
        let mut bad = MemFs::new()
            .with_file(&format!("/boot/vmlinuz-{v}"), "k")
            .with_file(&format!("/boot/initramfs-{v}.img"), "garbage")
            .with_file(&format!("/lib/modules/{v}/modules.dep"), "");
        let k = find_guest_kernel(&mut bad).unwrap();
        let r = kvm_readiness(&mut bad, &k, DiskBus::Virtio, "ext4").unwrap();
        assert!(!r.ready && r.why.contains("cannot be read"), "{}", r.why);
    }

    fn kernel(fs: MemFs, v: &str, config: Option<&str>) -> MemFs {
        let fs = fs
            .with_file(&format!("/boot/vmlinuz-{v}"), "k")
            .with_file(&format!("/boot/initrd.img-{v}"), "i")
            .with_file(&format!("/lib/modules/{v}/modules.dep"), "");
        match config {
            Some(c) => fs.with_file(&format!("/boot/config-{v}"), c),
            None => fs,
        }
    }

    #[test]
    fn picks_the_newest_non_xen_kernel() {
        let fs = kernel(MemFs::new(), "6.1.0-9-amd64", Some("CONFIG_X86_64=y\n"));
        let fs = kernel(
            fs,
            "6.1.0-28-amd64",
            Some("CONFIG_X86_64=y\nCONFIG_XEN=y\n"),
        );
        let fs = kernel(fs, "2.6.18-xen", Some("CONFIG_X86_64_XEN=y\n"));
        let mut fs =
            kernel(fs, "7.0.0-1-amd64", None).with_file("/boot/vmlinuz-8.0.0", "only a kernel");
        // 8.0.0 lacks initrd and modules; 7.0.0 has no config but no "xen" in its name.
        let k = find_guest_kernel(&mut fs).unwrap();
        assert_eq!(k.version, "7.0.0-1-amd64");
        assert_eq!(k.vmlinuz, "/boot/vmlinuz-7.0.0-1-amd64");
        assert_eq!(k.modules_dir, "/lib/modules/7.0.0-1-amd64");
        assert_eq!(k.skipped_xen, ["2.6.18-xen"]);
    }

    #[test]
    fn pvops_kernel_with_xen_support_is_usable_on_merged_usr() {
        let mut fs = MemFs::new()
            .with_symlink("/lib", "usr/lib")
            .with_file("/usr/lib/modules/6.1.0-28-amd64/kernel/fs/ext4.ko", "ko")
            .with_file("/boot/vmlinuz-6.1.0-28-amd64", "k")
            .with_file("/boot/initramfs-6.1.0-28-amd64.img", "i")
            .with_file(
                "/boot/config-6.1.0-28-amd64",
                "CONFIG_XEN=y\nCONFIG_XEN_PVHVM=y\n",
            );
        let k = find_guest_kernel(&mut fs).unwrap();
        assert_eq!(k.version, "6.1.0-28-amd64");
        assert_eq!(k.initrd, "/boot/initramfs-6.1.0-28-amd64.img");
    }

    #[test]
    fn only_xen_kernels_is_its_own_error() {
        let fs = kernel(
            MemFs::new(),
            "2.6.18-400.el5xen",
            Some("CONFIG_X86_XEN=y\n"),
        );
        let mut fs = kernel(fs, "2.6.32-5-xen-amd64", None);
        let err = find_guest_kernel(&mut fs).unwrap_err();
        assert!(matches!(err, DonorError::OnlyXenKernels { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("only Xen kernels"), "{msg}");
        assert!(
            msg.contains("2.6.18-400.el5xen") && msg.contains("2.6.32-5-xen-amd64"),
            "{msg}"
        );
    }

    #[test]
    fn no_kernel_lists_what_is_there() {
        let mut fs = MemFs::new().with_file("/boot/vmlinuz-6.1.0-28-amd64", "k");
        let err = find_guest_kernel(&mut fs).unwrap_err();
        assert!(matches!(err, DonorError::NoGuestKernel { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("6.1.0-28-amd64 (lacks: initrd, modules tree)"),
            "{err}"
        );
        let mut empty = MemFs::new();
        let err = find_guest_kernel(&mut empty).unwrap_err();
        assert!(err.to_string().contains("found no kernel at all"), "{err}");
    }
}
