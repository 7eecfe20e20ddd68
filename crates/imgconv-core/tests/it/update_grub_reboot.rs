//! A pygrub guest that runs Debian's stock kernel and grub-pc keeps booting after its
//! owner's first kernel update: converted (its own kernel, initrd and grub-pc kept), it
//! boots under QEMU, a service in it runs `update-grub` from the `/etc/default/grub` the
//! fixups rewrote and reboots, and the second boot — from the grub.cfg the guest
//! generated itself — reaches the marker with eth0 up and the serial console on the
//! kernel's command line. The fixture is `bookworm-stock.img` (scripts/fixtures.d/stock.sh).

use crate::support;

use imgconv_core::convert::{convert, ConvertOptions, KernelOrigin};
use imgconv_core::NoProgress;
use std::path::Path;
use std::time::Duration;
use support::qemu::{self, Firmware};
use support::tool_merged;

/// Two boots of a real kernel and an update-grub under TCG on a loaded machine: a safety
/// net, the harness returns as soon as the second marker line is complete.
const TWO_BOOTS_LIMIT: Duration = Duration::from_secs(1500);

/// `key=value` facts the real fixture builder recorded.
fn info(real: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(real.join("INFO")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {}/INFO", real.display()))
        .to_string()
}

/// The value of `field=` in a marker line.
fn field<'a>(line: &'a str, field: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"))
}

#[test]
#[ignore = "slow tier: boots QEMU twice; scripts/test runs it with --ignored"]
fn stock_guest_keeps_booting_after_its_own_update_grub() {
    let Some(real) = support::real() else {
        support::skip(
            support::SkipKind::CiCanRun,
            "the real fixtures are not built (scripts/fixtures real)",
        );
        return;
    };
    let kernel = info(&real, "stock_kernel");
    let root_uuid = info(&real, "stock_root_uuid");
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("stock-kvm.img");
    let opts = ConvertOptions::new(
        real.join("bookworm-stock.img"),
        Some(real.join("bookworm-donor.img")),
        &out,
    );
    let done = convert(&opts, &mut NoProgress).unwrap_or_else(|e| panic!("convert: {e}"));
    // Its own stock kernel boots it: the donor only lends GRUB's boot code.
    assert_eq!(
        done.plan.kernel.origin,
        KernelOrigin::Guest,
        "{}",
        done.plan.kernel.why
    );
    assert_eq!(done.plan.kernel.version, kernel);

    // What the guest's first update-grub will read, as the fixups left it (debugfs).
    let p1 = done.plan.disk.root().start_bytes();
    let fs = format!("{}?offset={p1}", out.display());
    let (rc, default_grub) = tool_merged("debugfs", &["-R", "cat /etc/default/grub", &fs]);
    assert_eq!(rc, 0, "{default_grub}");
    for want in ["console=ttyS0", "net.ifnames=0", "serial"] {
        assert!(default_grub.contains(want), "no {want}:\n{default_grub}");
    }
    assert!(!default_grub.contains("hvc0"), "{default_grub}");
    let (_, debconf) = tool_merged("debugfs", &["-R", "cat /var/cache/debconf/config.dat", &fs]);
    assert!(
        !debconf.contains("/dev/xvda"),
        "grub-pc's install device still names the Xen disk"
    );

    let log = qemu::boot_with(
        &out,
        Firmware::SeaBios,
        &["boot=2", "IMGCONV-REGRUB failed"],
        TWO_BOOTS_LIMIT,
        true,
    );
    let tail = || log.text.chars().rev().take(4000).collect::<String>();
    let second = log.line.clone().unwrap_or_else(|| {
        panic!(
            "no second boot after {:.0} s; end of the serial log (reversed):\n{}",
            log.seconds,
            tail()
        )
    });
    assert!(second.contains("IMGCONV-MARKER"), "{second}");
    let first = log
        .line_with("boot=1")
        .unwrap_or_else(|| panic!("no first marker:\n{}", log.text));
    let regrub = log.text.find("IMGCONV-REGRUB ok").expect("update-grub ran");
    assert!(log.text.find(first).unwrap() < regrub);
    assert!(log.text.rfind(second.as_str()).unwrap() > regrub);
    for line in [first, second.as_str()] {
        assert_eq!(field(line, "kernel"), kernel, "{line}");
        assert_eq!(field(line, "rootopts"), "rw", "{line}");
        // QEMU's user network hands out 10.0.2.15: eth0 kept its name and its config.
        assert_eq!(field(line, "eth0"), "10.0.2.15/24", "{line}");
        let consoles = field(line, "consoles");
        assert!(consoles.contains("ttyS0"), "{line}");
        assert!(!consoles.contains("hvc0"), "{line}");
    }
    // The second boot's command line is the one the guest's own update-grub wrote (root by
    // UUID, as grub-mkconfig does); the first one's is imgconv's.
    assert_eq!(field(&second, "rootuuid"), root_uuid, "{second}");
}
