//! Opening donors of every shape and choosing their kernel.

use crate::support::donor as donor_fixtures;

use donor_fixtures::*;
use imgconv_core::donor::{check_arch, Donor, DonorError, DonorKernel, KernelArch, UserlandArch};
use imgconv_core::guestfs::NodeKind;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const V: &str = "6.1.0-28-amd64";

/// (relative path → (kind, mode, len, symlink target)) of a host modules tree.
fn host_tree(root: &Path) -> BTreeMap<String, (NodeKind, u16, u64, Option<String>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let mode = (m.permissions().mode() & 0o7777) as u16;
            let (kind, target) = if m.file_type().is_symlink() {
                (
                    NodeKind::Symlink,
                    Some(
                        std::fs::read_link(&p)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned(),
                    ),
                )
            } else if m.is_dir() {
                stack.push(p.clone());
                (NodeKind::Dir, None)
            } else {
                (NodeKind::File, None)
            };
            let len = if kind == NodeKind::File { m.len() } else { 0 };
            out.insert(rel, (kind, mode, len, target));
        }
    }
    out
}

fn walked(k: &DonorKernel) -> BTreeMap<String, (NodeKind, u16, u64, Option<String>)> {
    k.modules
        .entries
        .iter()
        .map(|e| {
            let len = if e.meta.kind == NodeKind::File {
                e.meta.len
            } else {
                0
            };
            (
                e.rel.clone(),
                (e.meta.kind, e.meta.mode, len, e.target.clone()),
            )
        })
        .collect()
}

fn read_all(donor: &Donor, f: &imgconv_core::donor::DonorFile) -> Vec<u8> {
    let mut data = Vec::new();
    donor.open_file(f).unwrap().read_to_end(&mut data).unwrap();
    data
}

/// What every complete fixture donor must show for kernel `V`.
fn assert_fixture_kernel(donor: &Donor, tree: &Path, modules_rel: &str) {
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(k.version, V);
    assert_eq!(k.arch, KernelArch::X86_64);
    assert!(k
        .embedded_version
        .as_deref()
        .unwrap()
        .starts_with(&format!("{V} (debian-kernel")));
    assert!(k.warnings.is_empty(), "{:?}", k.warnings);
    assert_eq!(read_all(donor, &k.vmlinuz), vmlinuz_bytes(V, true));
    assert_eq!(
        read_all(donor, &k.initrd),
        bytes(&format!("initrd-{V}"), 150_000)
    );
    assert!(k.config.is_some() && k.system_map.is_some());
    assert_eq!(k.system_map.as_ref().unwrap().meta.mode, 0o600);
    // The walk saw exactly the host tree: names, kinds, modes, sizes and link targets.
    let expect = host_tree(&tree.join(modules_rel).join(V));
    assert_eq!(walked(&k), expect);
    assert_eq!(k.modules.files, 8);
    assert_eq!(k.modules.symlinks, 3);
    assert_eq!(k.modules.dirs, 9);
    assert_eq!(k.modules.bytes, expect.values().map(|v| v.2).sum::<u64>());
    let crc = k
        .modules
        .entries
        .iter()
        .find(|e| e.rel == "kernel/lib/crc16.ko")
        .unwrap();
    assert_eq!(crc.meta.mtime, OLD_MTIME as i64);
    // Module content streams back byte-identical.
    let ext4 = k
        .modules
        .entries
        .iter()
        .find(|e| e.rel == "kernel/fs/ext4/ext4.ko")
        .unwrap();
    let mut data = Vec::new();
    donor
        .open_tree_file(&k.modules, ext4)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    assert_eq!(data, bytes(&format!("ext4-{V}"), 40_000));
    // Size estimate: at least every byte, at most twice that plus the GRUB allowance.
    let size = donor.graft_size(&k);
    assert!(
        size >= k.total_bytes() + k.modules.entries.len() as u64,
        "{size}"
    );
    assert!(
        size <= 2 * k.total_bytes() + imgconv_core::donor::GRUB_ALLOWANCE + (1 << 20),
        "{size}"
    );
    // GRUB files: the wanted ones only, byte-identical.
    let grub = donor
        .grub_files("i386-pc")
        .unwrap()
        .expect("donor has GRUB files");
    assert_eq!(grub.platform, "i386-pc");
    let names: Vec<&str> = grub.files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "biosdisk.mod",
            "boot.img",
            "command.lst",
            "diskboot.img",
            "ext2.mod",
            "fs.lst",
            "kernel.img",
            "lzma_decompress.img",
            "moddep.lst",
            "modinfo.sh",
            "normal.mod",
            "part_msdos.mod"
        ]
    );
    assert_eq!(grub.get("kernel.img").unwrap(), bytes("kernel.img", 30_000));
    assert!(donor.grub_files("x86_64-efi").unwrap().is_none());
}

#[test]
fn directory_donor() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[kernel(V)],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let donor = Donor::open(dir.path()).unwrap();
    assert_fixture_kernel(&donor, dir.path(), "lib/modules");
    // A directory donor's files belong to root in the guest, whoever unpacked them.
    let k = donor.select_kernel(None).unwrap();
    let owned = k
        .modules
        .entries
        .iter()
        .find(|e| e.rel == "extra/owned.ko")
        .unwrap();
    assert_eq!((owned.meta.uid, owned.meta.gid), (0, 0));
}

#[test]
fn bare_ext4_image_donor_keeps_owners() {
    let b = ext4_donor(
        &[kernel(V)],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let before = std::fs::read(&b.image).unwrap();
    let donor = Donor::open(&b.image).unwrap();
    assert_eq!(donor.source_labels(), [b.image.display().to_string()]);
    assert_fixture_kernel(&donor, &b.tree, "lib/modules");
    let k = donor.select_kernel(None).unwrap();
    let owned = k
        .modules
        .entries
        .iter()
        .find(|e| e.rel == "extra/owned.ko")
        .unwrap();
    assert_eq!((owned.meta.uid, owned.meta.gid), (OWNED_UID, OWNED_GID));
    assert_eq!(k.modules.root.path, format!("/lib/modules/{V}"));
    drop(donor);
    assert!(
        std::fs::read(&b.image).unwrap() == before,
        "the donor image was modified"
    );
}

#[test]
fn mbr_disk_donor_with_swap_partition() {
    let b = ext4_donor(
        &[kernel(V)],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let disk_img = b.dir.path().join("disk.img");
    let starts = disk(
        &disk_img,
        "dos",
        &[(Some(&b.image), 64, "83"), (None, 8, "82")],
    );
    assert_eq!(starts[0], 1 << 20);
    let donor = Donor::open(&disk_img).unwrap();
    assert_eq!(
        donor.source_labels(),
        [format!("{} partition 1", disk_img.display())]
    );
    assert_eq!(donor.skipped().len(), 1, "{:?}", donor.skipped());
    assert!(
        donor.skipped()[0].contains("partition 2"),
        "{:?}",
        donor.skipped()
    );
    assert_fixture_kernel(&donor, &b.tree, "lib/modules");
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(
        donor.describe(&k.vmlinuz.at),
        format!("{} partition 1:/boot/vmlinuz-{V}", disk_img.display())
    );
}

#[test]
fn gpt_disk_donor() {
    let b = ext4_donor(
        &[kernel(V)],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let disk_img = b.dir.path().join("gpt.img");
    disk(
        &disk_img,
        "gpt",
        &[(None, 1, GPT_BIOS_BOOT), (Some(&b.image), 64, GPT_LINUX)],
    );
    let donor = Donor::open(&disk_img).unwrap();
    assert_eq!(
        donor.source_labels(),
        [format!("{} partition 2", disk_img.display())]
    );
    assert_fixture_kernel(&donor, &b.tree, "lib/modules");
}

#[test]
fn separate_boot_partition_donor() {
    let dir = tempfile::tempdir().unwrap();
    // /boot partition: kernel files at its root. Root partition: modules and GRUB, and an
    // empty /boot mount point.
    let boot_tree = dir.path().join("boot-tree");
    write_kernel(
        &boot_tree,
        ".",
        "unused-modules",
        &KernelSpec {
            modules: false,
            ..kernel(V)
        },
    );
    std::fs::create_dir_all(boot_tree.join("grub")).unwrap();
    let root = dir.path().join("root-tree");
    root_tree(
        &root,
        &[KernelSpec {
            vmlinuz: false,
            initrd: None,
            config: false,
            system_map: false,
            ..kernel(V)
        }],
        Layout {
            grub: true,
            ..Layout::default()
        },
    );
    let boot_img = dir.path().join("boot.img");
    let root_img = dir.path().join("root.img");
    mkfs("ext2", Some(&boot_tree), &boot_img, 16, &[]);
    mkfs("ext4", Some(&root), &root_img, 48, &[]);
    let disk_img = dir.path().join("disk.img");
    disk(
        &disk_img,
        "dos",
        &[(Some(&boot_img), 16, "83"), (Some(&root_img), 48, "83")],
    );
    let donor = Donor::open(&disk_img).unwrap();
    assert_eq!(donor.source_labels().len(), 2);
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(
        (k.vmlinuz.at.source, k.vmlinuz.at.path.as_str()),
        (0, &*format!("/vmlinuz-{V}"))
    );
    assert_eq!(
        (k.initrd.at.source, k.initrd.at.path.as_str()),
        (0, &*format!("/initrd.img-{V}"))
    );
    assert_eq!(k.modules.root.source, 1);
    assert_eq!(read_all(&donor, &k.vmlinuz), vmlinuz_bytes(V, true));
    assert_eq!(walked(&k), host_tree(&root.join("lib/modules").join(V)));
    assert!(donor.grub_files("i386-pc").unwrap().is_some());
}

#[test]
fn merged_usr_donor_image_and_directory() {
    let b = ext4_donor(
        &[kernel(V)],
        Layout {
            merged_usr: true,
            grub: true,
        },
    );
    let donor = Donor::open(&b.image).unwrap();
    assert_fixture_kernel(&donor, &b.tree, "usr/lib/modules");
    let k = donor.select_kernel(None).unwrap();
    assert!(
        k.modules.root.path == format!("/lib/modules/{V}")
            || k.modules.root.path == format!("/usr/lib/modules/{V}"),
        "{}",
        k.modules.root.path
    );
    assert_eq!(
        donor.candidates().len(),
        1,
        "one kernel, not one per path to its modules"
    );
    let donor = Donor::open(&b.tree).unwrap();
    assert_fixture_kernel(&donor, &b.tree, "usr/lib/modules");
}

#[test]
fn selection_takes_the_newest_complete_kernel() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[
            kernel("6.1.0-9-amd64"),
            kernel("6.1.0-10-amd64"),
            KernelSpec {
                initrd: None,
                ..kernel("6.1.0-28-amd64")
            },
            KernelSpec {
                vmlinuz: false,
                initrd: None,
                config: false,
                system_map: false,
                ..kernel("5.10.0-33-amd64")
            },
            KernelSpec {
                initrd: Some("initramfs-{}.img"),
                ..kernel("6.1.0-2-amd64")
            },
        ],
        Layout::default(),
    );
    let donor = Donor::open(dir.path()).unwrap();
    let versions: Vec<&str> = donor
        .candidates()
        .iter()
        .map(|c| c.version.as_str())
        .collect();
    assert_eq!(
        versions,
        [
            "6.1.0-28-amd64",
            "6.1.0-10-amd64",
            "6.1.0-9-amd64",
            "6.1.0-2-amd64",
            "5.10.0-33-amd64"
        ]
    );
    let complete: Vec<String> = donor.kernels().into_iter().map(|k| k.version).collect();
    assert_eq!(
        complete,
        ["6.1.0-10-amd64", "6.1.0-9-amd64", "6.1.0-2-amd64"]
    );
    assert_eq!(
        donor.select_kernel(None).unwrap().version,
        "6.1.0-10-amd64",
        "6.1.0-28 has no initrd, 10 > 9"
    );
    assert_eq!(
        donor.select_kernel(Some("6.1.0-9-amd64")).unwrap().version,
        "6.1.0-9-amd64"
    );
    let k = donor.select_kernel(Some("6.1.0-2-amd64")).unwrap();
    assert_eq!(k.initrd.at.path, "/boot/initramfs-6.1.0-2-amd64.img");

    let err = donor.select_kernel(Some("6.1.0-28-amd64")).unwrap_err();
    assert!(matches!(err, DonorError::KernelUnusable { .. }), "{err}");
    assert!(err.to_string().contains("lacks: initrd"), "{err}");

    let err = donor.select_kernel(Some("9.9.9")).unwrap_err();
    assert!(matches!(err, DonorError::KernelNotFound { .. }), "{err}");
    let msg = err.to_string();
    for v in [
        "6.1.0-28-amd64",
        "6.1.0-10-amd64",
        "6.1.0-9-amd64",
        "5.10.0-33-amd64",
    ] {
        assert!(msg.contains(v), "{msg}");
    }
}

#[test]
fn no_usable_kernel_lists_what_was_found_and_what_each_lacks() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[
            KernelSpec {
                initrd: None,
                ..kernel("6.1.0-28-amd64")
            },
            KernelSpec {
                modules: false,
                ..kernel("6.1.0-9-amd64")
            },
            KernelSpec {
                vmlinuz: false,
                initrd: None,
                config: false,
                system_map: false,
                ..kernel("5.10.0-33-amd64")
            },
        ],
        Layout::default(),
    );
    // A modules directory left behind by a removed package holds no modules.
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    std::fs::write(
        dir.path().join("boot/vmlinuz-4.19.0-1-amd64"),
        vmlinuz_bytes("4.19.0-1-amd64", true),
    )
    .unwrap();
    std::fs::write(dir.path().join("boot/initrd.img-4.19.0-1-amd64"), b"initrd").unwrap();
    std::fs::create_dir_all(dir.path().join("lib/modules/4.19.0-1-amd64/kernel")).unwrap();
    let donor = Donor::open(dir.path()).unwrap();
    let err = donor.select_kernel(None).unwrap_err();
    assert!(matches!(err, DonorError::NoUsableKernel { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("6.1.0-28-amd64 (has vmlinuz, modules, config, System.map; lacks: initrd"),
        "{msg}"
    );
    assert!(
        msg.contains("6.1.0-9-amd64 (has vmlinuz, initrd, config, System.map; lacks: modules tree"),
        "{msg}"
    );
    assert!(
        msg.contains("5.10.0-33-amd64 (has modules; lacks: vmlinuz"),
        "{msg}"
    );
    assert!(
        msg.contains("4.19.0-1-amd64") && msg.contains("holds no modules"),
        "{msg}"
    );

    let empty = tempfile::tempdir().unwrap();
    let err = Donor::open(empty.path())
        .unwrap()
        .select_kernel(None)
        .unwrap_err();
    assert!(err.to_string().contains("found no kernel at all"), "{err}");
}

#[test]
fn kernel_arch_from_the_boot_header() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(
        dir.path(),
        &[KernelSpec {
            x86_64: false,
            ..kernel("4.9.0-19-686-pae")
        }],
        Layout::default(),
    );
    let donor = Donor::open(dir.path()).unwrap();
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(k.arch, KernelArch::I386);
    assert!(check_arch(k.arch, UserlandArch::I386).is_ok());
    let err = check_arch(k.arch, UserlandArch::X86_64).unwrap_err();
    assert!(matches!(err, DonorError::ArchMismatch { .. }), "{err}");
}

#[test]
fn embedded_release_that_differs_from_the_file_name_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    root_tree(dir.path(), &[kernel(V)], Layout::default());
    std::fs::write(
        dir.path().join(format!("boot/vmlinuz-{V}")),
        vmlinuz_bytes("6.1.0-27-amd64", true),
    )
    .unwrap();
    let k = Donor::open(dir.path())
        .unwrap()
        .select_kernel(None)
        .unwrap();
    assert_eq!(k.warnings.len(), 1);
    assert!(k.warnings[0].contains("6.1.0-27-amd64"), "{:?}", k.warnings);
}

#[test]
fn directory_donor_never_reads_outside_itself() {
    let outside = tempfile::tempdir().unwrap();
    root_tree(outside.path(), &[kernel(V)], Layout::default());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("boot")).unwrap();
    // Symlinks pointing at a real kernel outside the donor directory, absolute and by `..`.
    std::os::unix::fs::symlink(outside.path().join("boot"), dir.path().join("boot/escape"))
        .unwrap();
    std::os::unix::fs::symlink(
        outside.path().join(format!("boot/vmlinuz-{V}")),
        dir.path().join(format!("boot/vmlinuz-{V}")),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        format!(
            "../../../../../../../../..{}",
            outside.path().join("lib").display()
        ),
        dir.path().join("lib"),
    )
    .unwrap();
    let donor = Donor::open(dir.path()).unwrap();
    assert!(donor.kernels().is_empty());
    assert!(donor.candidates().is_empty(), "{:?}", donor.candidates());
}

#[test]
fn missing_donor_and_non_filesystem_image() {
    let dir = tempfile::tempdir().unwrap();
    let err = Donor::open(&dir.path().join("absent.img")).unwrap_err();
    assert!(matches!(err, DonorError::NotFound { .. }), "{err}");
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, bytes("junk", 4 << 20)).unwrap();
    let err = Donor::open(&junk).unwrap_err();
    assert!(matches!(err, DonorError::NoFilesystem { .. }), "{err}");
    let meta = std::fs::metadata(&junk).unwrap();
    assert_eq!(meta.size(), 4 << 20);
}
