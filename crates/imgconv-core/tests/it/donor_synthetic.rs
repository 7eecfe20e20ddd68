//! The donor reader on the shared synthetic fixtures (`scripts/fixtures synthetic`):
//! donor-dir/, donor.img (MBR) and donor-sepboot.img (separate /boot), each with
//! 6.1.0-99, 6.1.0-98 and 6.1.0-97 (the last without an initrd); and the Xen guests, which
//! have no kernel of their own.

use crate::support;

use imgconv_core::blockio::Region;
use imgconv_core::donor::{find_guest_kernel_in_reader, Donor, DonorError, KernelArch};
use imgconv_core::ext::read::ExtReader;
use imgconv_core::graft::graft;
use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{MemFs, TreeRead};
use imgconv_core::progress::NoProgress;
use imgconv_core::report::Report;
use std::path::Path;

const NEWEST: &str = "6.1.0-99-amd64";

fn check_donor(path: &Path) -> Donor {
    let donor = Donor::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let versions: Vec<&str> = donor
        .candidates()
        .iter()
        .map(|c| c.version.as_str())
        .collect();
    assert_eq!(
        versions,
        ["6.1.0-99-amd64", "6.1.0-98-amd64", "6.1.0-97-amd64"]
    );
    assert!(
        donor.candidates()[2].problems[0].starts_with("lacks: initrd"),
        "{:?}",
        donor.candidates()[2]
    );
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(k.version, NEWEST);
    assert_eq!(k.arch, KernelArch::X86_64);
    assert!(k
        .embedded_version
        .as_deref()
        .unwrap()
        .starts_with("6.1.0-99-amd64 (fake)"));
    assert!(k.warnings.is_empty(), "{:?}", k.warnings);
    assert_eq!(
        k.modules.files, 19,
        "15 modules, modules.dep/.alias/.order/.builtin"
    );
    assert_eq!(k.modules.symlinks, 1);
    let build = k.modules.entries.iter().find(|e| e.rel == "build").unwrap();
    assert_eq!(
        build.target.as_deref(),
        Some("/usr/src/linux-headers-6.1.0-99-amd64")
    );
    assert_eq!(
        donor.select_kernel(Some("6.1.0-98-amd64")).unwrap().version,
        "6.1.0-98-amd64"
    );
    let err = donor.select_kernel(Some("6.1.0-97-amd64")).unwrap_err();
    assert!(matches!(err, DonorError::KernelUnusable { .. }), "{err}");
    // The fixture copied the host's GRUB i386-pc directory.
    let grub = donor.grub_files("i386-pc").unwrap().expect("GRUB files");
    let host = std::fs::read("/usr/lib/grub/i386-pc/kernel.img").unwrap();
    assert_eq!(grub.get("kernel.img"), Some(host.as_slice()));
    assert!(grub.has_module("ext2") && grub.has_module("normal"));
    assert!(donor.graft_size(&k) > k.total_bytes());
    donor
}

#[test]
fn synthetic_donor_directory() {
    check_donor(&support::synthetic().join("donor-dir"));
}

#[test]
fn synthetic_donor_mbr_disk() {
    let donor = check_donor(&support::synthetic().join("donor.img"));
    assert_eq!(donor.source_labels().len(), 1);
}

#[test]
fn synthetic_donor_with_separate_boot() {
    let donor = check_donor(&support::synthetic().join("donor-sepboot.img"));
    let k = donor.select_kernel(None).unwrap();
    assert_eq!(k.vmlinuz.at.source, 0);
    assert_eq!(k.vmlinuz.at.path, format!("/vmlinuz-{NEWEST}"));
    assert_eq!(k.modules.root.source, 1);
}

#[test]
fn synthetic_donor_image_grafts_the_same_bytes_as_the_directory() {
    let dir = support::synthetic().join("donor-dir");
    let donor = Donor::open(&support::synthetic().join("donor-sepboot.img")).unwrap();
    let k = donor.select_kernel(None).unwrap();
    let grub = donor.grub_files("i386-pc").unwrap();
    let mut guest = MemFs::new()
        .with_symlink("/lib", "usr/lib")
        .with_file("/usr/lib/os-release", "ID=debian\n");
    let sum = graft(
        &donor,
        &k,
        &mut guest,
        grub.as_ref(),
        &mut Report::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(sum.modules_dir, format!("/lib/modules/{NEWEST}"));
    for rel in [
        format!("boot/vmlinuz-{NEWEST}"),
        format!("boot/initrd.img-{NEWEST}"),
        format!("boot/config-{NEWEST}"),
        format!("usr/lib/modules/{NEWEST}/kernel/fs/ext4/ext4.ko"),
        format!("usr/lib/modules/{NEWEST}/modules.dep"),
        "boot/grub/i386-pc/normal.mod".to_string(),
    ] {
        let src = rel
            .replace("usr/lib/modules", "lib/modules")
            .replace("boot/grub/i386-pc", "usr/lib/grub/i386-pc");
        let want = std::fs::read(dir.join(&src)).unwrap();
        let got = guest
            .read_file(&format!("/{rel}"), u64::MAX)
            .unwrap()
            .unwrap_or_else(|| panic!("{rel}"));
        assert!(got == want, "{rel} differs from the donor's {src}");
    }
    assert_eq!(
        guest
            .lstat(&format!("/usr/lib/modules/{NEWEST}/build"))
            .unwrap()
            .unwrap()
            .kind,
        NodeKind::Symlink
    );
}

#[test]
fn xen_guests_have_no_kernel_of_their_own() {
    let dir = support::synthetic();
    for (image, offset, len) in [
        ("xen-ext4.img", 0, None),
        ("xen-ext4-mbr.img", 34_603_008, Some(134_217_728)),
    ] {
        let region = Region::open(&dir.join(image)).unwrap();
        let region = match len {
            Some(len) => region.sub(offset, len).unwrap(),
            None => region,
        };
        let reader = ExtReader::open(region, image).unwrap();
        let err = find_guest_kernel_in_reader(&reader).unwrap_err();
        assert!(
            matches!(err, DonorError::NoGuestKernel { .. }),
            "{image}: {err}"
        );
        assert_eq!(
            imgconv_core::Error::from(err).hint(),
            Some(imgconv_core::Hint::ConvertWithDonor)
        );
    }
}
