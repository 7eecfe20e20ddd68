//! A conversion of an old-userland guest: a synthetic Xen guest given glibc 2.12's file
//! names and a Xen-era `/etc/default/grub` (with debugfs, on a copy) gets
//! `vsyscall=emulate` in the grub.cfg written and in its own boot settings, and the plan
//! says why. Judged by debugfs on the output.

use crate::support;

use imgconv_core::convert::{convert, plan, ConvertOptions, KernelOrigin, KernelSource};
use imgconv_core::NoProgress;
use std::path::Path;
use support::{debugfs, e2fs_spec, tool};

fn debugfs_w(image: &Path, requests: &[String]) {
    let script = image.with_extension("debugfs");
    std::fs::write(&script, requests.join("\n") + "\n").unwrap();
    let (code, out, err) = tool(
        "debugfs",
        &[
            "-w",
            "-f",
            script.to_str().unwrap(),
            image.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn glibc_2_12_guest_gets_vsyscall_emulate() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("old-glibc.img");
    std::fs::copy(fx.join("xen-ext4.img"), &src).unwrap();
    let libc = dir.path().join("libc-2.12.so");
    std::fs::write(&libc, b"\x7fELF (stand-in for glibc 2.12)").unwrap();
    let grub = dir.path().join("default-grub");
    std::fs::write(
        &grub,
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=hvc0 root=/dev/xvda1\"\nGRUB_TERMINAL=console\n",
    )
    .unwrap();
    debugfs_w(
        &src,
        &[
            // The fixture is merged-/usr: /lib64 links to usr/lib64.
            format!("write {} /usr/lib64/libc-2.12.so", libc.display()),
            "symlink /usr/lib64/libc.so.6 libc-2.12.so".into(),
            "mkdir /etc/default".into(),
            format!("write {} /etc/default/grub", grub.display()),
        ],
    );
    let out = dir.path().join("old-glibc.raw");
    let opts = ConvertOptions::new(&src, Some(fx.join("donor.img")), &out);

    let planned = plan(&opts, &mut NoProgress).unwrap();
    let glibc = planned.inspection.guest.userland.glibc.as_ref().unwrap();
    assert_eq!(glibc.value.to_string(), "2.12");
    assert_eq!(glibc.source, "/lib64/libc.so.6 -> libc-2.12.so");
    assert_eq!(planned.kernel.origin, KernelOrigin::Donor);
    assert!(
        planned.kernel.why.contains("no complete kernel"),
        "{}",
        planned.kernel.why
    );
    assert_eq!(planned.compat.kernel_args.len(), 1, "{:?}", planned.compat);
    assert_eq!(planned.compat.kernel_args[0].0, "vsyscall=emulate");
    assert!(planned.compat.kernel_args[0].1.contains("older than 2.14"));
    let shown = planned.to_string();
    assert!(
        shown.contains("vsyscall=emulate: the guest's glibc is 2.12"),
        "{shown}"
    );
    assert!(planned
        .grub_config()
        .kernel_args()
        .ends_with(" vsyscall=emulate"));

    let done = convert(&opts, &mut NoProgress).unwrap();
    let offset = done.plan.disk.root().start_bytes();
    let spec = e2fs_spec(&out, offset);
    let cfg = debugfs(&spec, "cat /boot/grub/grub.cfg");
    assert_eq!(
        cfg.matches("biosdevname=0 vsyscall=emulate").count(),
        2,
        "both menu entries:\n{cfg}"
    );
    let guest_grub = debugfs(&spec, "cat /etc/default/grub");
    assert_eq!(
        guest_grub,
        "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 vsyscall=emulate\"\nGRUB_TERMINAL=\"serial console\"\n# imgconv: boot settings for the converted (KVM) disk\nGRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"
    );
    assert_eq!(
        debugfs(&spec, "cat /etc/default/grub.imgconv-orig"),
        std::fs::read_to_string(&grub).unwrap()
    );
    assert!(done
        .report
        .changes
        .iter()
        .any(|c| c.step == "bootloader" && c.path == "/etc/default/grub"));
    let (code, out_fsck, err) = tool("e2fsck", &["-fn", &spec]);
    assert_eq!(code, 0, "{out_fsck}{err}");

    // The donor forced: same kernel; the guest's (absent) kernel is not looked at.
    let forced = plan(
        &opts.clone().with_kernel_source(KernelSource::Donor),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(
        forced.kernel.why,
        "the donor's kernel: --kernel-source donor"
    );
}

/// A newc archive of regular files, packed by the host's `cpio -o -H newc`.
fn newc(dir: &Path, files: &[&str]) -> Vec<u8> {
    let tree = dir.join("initrd-tree");
    for f in files {
        let p = tree.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"module").unwrap();
    }
    let list: String = files.iter().map(|f| format!("{f}\n")).collect();
    let mut child = std::process::Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&tree)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("cpio (scripts/setup)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A guest with its own stock kernel (dracut-named initrd with the virtio drivers): auto
/// keeps it and writes grub.cfg for its initrd; on SATA its initrd lacks ahci, so the
/// donor's kernel boots (forced: with a warning, and refused without a donor).
#[test]
fn guest_kernel_is_kept_when_its_initrd_has_the_drivers() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("own-kernel.img");
    std::fs::copy(fx.join("xen-ext4.img"), &src).unwrap();
    let ver = "5.10.0-30-amd64";
    let initrd = dir.path().join("initramfs");
    let mut data = newc(
        dir.path(),
        &[
            &format!("usr/lib/modules/{ver}/kernel/drivers/block/virtio_blk.ko.xz"),
            &format!("usr/lib/modules/{ver}/kernel/drivers/virtio/virtio_pci.ko.xz"),
        ],
    );
    data = {
        // gzip it with the host tool, as dracut does by default on older releases.
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let input = data.clone();
        let w = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        out.stdout
    };
    std::fs::write(&initrd, &data).unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"stand-in kernel").unwrap();
    let config = dir.path().join("config");
    std::fs::write(&config, "CONFIG_EXT4_FS=y\nCONFIG_SATA_AHCI=m\n").unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    debugfs_w(
        &src,
        &[
            format!("write {} /boot/vmlinuz-{ver}", kernel.display()),
            format!("write {} /boot/initramfs-{ver}.img", initrd.display()),
            format!("write {} /boot/config-{ver}", config.display()),
            "mkdir /usr/lib/modules".into(),
            format!("mkdir /usr/lib/modules/{ver}"),
            format!(
                "write {} /usr/lib/modules/{ver}/modules.dep",
                empty.display()
            ),
        ],
    );
    let donor = Some(fx.join("donor.img"));
    let opts = ConvertOptions::new(&src, donor.clone(), dir.path().join("out.raw"));
    let p = plan(&opts, &mut NoProgress).unwrap();
    assert_eq!(p.kernel.origin, KernelOrigin::Guest, "{}", p.kernel.why);
    assert_eq!(p.kernel.version, ver);
    assert_eq!(
        p.kernel.initrd_file.as_deref(),
        Some(format!("initramfs-{ver}.img").as_str())
    );
    assert!(
        p.kernel.why.contains("virtio_pci: module") && p.kernel.why.contains("ext4: built in"),
        "{}",
        p.kernel.why
    );
    let cfg = imgconv_core::boot::grub_cfg::render(&p.grub_config()).unwrap();
    assert!(
        cfg.contains(&format!("\tinitrd /boot/initramfs-{ver}.img\n")),
        "{cfg}"
    );
    assert!(
        p.compat.kernel_args.is_empty(),
        "the guest's own kernel: no donor checks"
    );

    // SATA: no ahci in the initrd, not built in.
    let sata = opts
        .clone()
        .with_disk_bus(imgconv_core::convert::DiskBus::Sata);
    let p = plan(&sata, &mut NoProgress).unwrap();
    assert_eq!(p.kernel.origin, KernelOrigin::Donor);
    assert!(p.kernel.why.contains("lacks ahci"), "{}", p.kernel.why);
    let forced = sata.clone().with_kernel_source(KernelSource::Guest);
    let p = plan(&forced, &mut NoProgress).unwrap();
    assert_eq!(p.kernel.origin, KernelOrigin::Donor);
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("lacks ahci") && w.contains("donor's kernel boots")),
        "{:?}",
        p.warnings
    );
    let mut alone = forced.clone();
    alone.donor = None;
    let err = plan(&alone, &mut NoProgress).unwrap_err();
    assert!(
        err.to_string().contains("cannot boot on the sata disk"),
        "{err}"
    );

    // The full conversion with the guest's kernel: nothing grafted, grub.cfg names files
    // that exist.
    let done = convert(&opts, &mut NoProgress).unwrap();
    assert!(done.graft.is_none());
    let spec = e2fs_spec(&opts.output, done.plan.disk.root().start_bytes());
    let cfg = debugfs(&spec, "cat /boot/grub/grub.cfg");
    for (_, path) in imgconv_core::boot::grub_cfg::named_files(&cfg) {
        let stat = debugfs(&spec, &format!("stat {path}"));
        assert!(stat.contains("Type: regular"), "{path}: {stat}");
    }
}
