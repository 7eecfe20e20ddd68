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
