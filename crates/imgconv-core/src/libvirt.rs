//! A libvirt domain definition for a converted disk (libvirt's `domain.rng` schema), so
//! that `virsh define FILE` is all that is left to do on a KVM host.
//!
//! Name, memory and vCPUs come from what the export recorded ([`VmFacts`]: XVA's
//! `ova.xml`, a Xen domain config), then the caller's overrides, then defaults. The NICs
//! keep the guest's original MAC addresses, so whatever in the guest is bound to them
//! (udev persistent-net rules, DHCP reservations, licences) keeps working. The disk is
//! attached on the bus the conversion targeted, the firmware matches the disk layout,
//! and the first serial port is the console (the converted guest's getty runs there).

use crate::hardware::{DiskBus, Firmware};
use crate::vm::VmFacts;
use quick_xml::escape::escape;
use std::fmt::Write as _;
use std::path::Path;

/// Defaults when neither the export nor the caller says.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
pub const DEFAULT_VCPUS: u32 = 1;
/// OVMF as Debian's `ovmf` package installs it (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// Where libvirt keeps per-domain variable stores.
const NVRAM_DIR: &str = "/var/lib/libvirt/qemu/nvram";

/// What goes into the definition besides the facts.
#[derive(Debug, Clone)]
pub struct DomainSpec<'a> {
    /// The converted disk (made absolute by the caller).
    pub disk: &'a Path,
    /// `raw` or `qcow2`.
    pub disk_format: &'a str,
    pub bus: DiskBus,
    pub firmware: Firmware,
    /// Overrides of the recorded facts.
    pub name: Option<&'a str>,
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
    /// The name when nothing gives one (the output file's stem).
    pub fallback_name: &'a str,
}

/// The values the definition ends up with, for the conversion report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Domain {
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub macs: Vec<String>,
    pub uefi: bool,
    pub xml: String,
}

/// A libvirt domain name: letters, digits and `-_.+`; anything else becomes `-`.
fn domain_name(s: &str) -> String {
    let n: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let n = n.trim_matches('-').to_string();
    if n.is_empty() {
        "converted-guest".into()
    } else {
        n
    }
}

/// Build the definition.
pub fn domain(facts: Option<&VmFacts>, spec: &DomainSpec<'_>) -> Domain {
    let name = domain_name(
        spec.name
            .or(facts.and_then(|f| f.name.as_deref()))
            .unwrap_or(spec.fallback_name),
    );
    let memory_mib = spec
        .memory_mib
        .or(facts
            .and_then(|f| f.memory_bytes)
            .map(|b| (b >> 20).max(64)))
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpus = spec
        .vcpus
        .or(facts.and_then(|f| f.vcpus))
        .filter(|&v| v > 0)
        .unwrap_or(DEFAULT_VCPUS);
    let macs: Vec<String> = facts
        .map(|f| f.nics.iter().map(|n| n.mac.clone()).collect())
        .unwrap_or_default();
    // A hybrid disk boots either way; SeaBIOS needs no per-domain variable store.
    let uefi = spec.firmware == Firmware::Uefi;
    // q35 has no IDE controller: an IDE disk goes on the i440FX `pc` machine.
    let machine = if spec.bus == DiskBus::Ide {
        "pc"
    } else {
        "q35"
    };
    let (bus, dev) = match spec.bus {
        DiskBus::Virtio => ("virtio", "vda"),
        DiskBus::Sata => ("sata", "sda"),
        DiskBus::Ide => ("ide", "hda"),
    };
    let e = |s: &str| escape(s).into_owned();
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='kvm'>");
    let _ = writeln!(x, "  <name>{}</name>", e(&name));
    let _ = writeln!(x, "  <memory unit='MiB'>{memory_mib}</memory>");
    let _ = writeln!(x, "  <vcpu>{vcpus}</vcpu>");
    let _ = writeln!(x, "  <os>");
    let _ = writeln!(x, "    <type arch='x86_64' machine='{machine}'>hvm</type>");
    if uefi {
        let _ = writeln!(
            x,
            "    <loader readonly='yes' type='pflash'>{OVMF_CODE}</loader>"
        );
        let _ = writeln!(
            x,
            "    <nvram template='{OVMF_VARS}'>{NVRAM_DIR}/{}_VARS.fd</nvram>",
            e(&name)
        );
    }
    let _ = writeln!(x, "    <boot dev='hd'/>");
    let _ = writeln!(x, "  </os>");
    let _ = writeln!(x, "  <features>\n    <acpi/>\n    <apic/>\n  </features>");
    let _ = writeln!(x, "  <clock offset='utc'/>");
    let _ = writeln!(x, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(x, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(x, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(x, "  <devices>");
    let _ = writeln!(x, "    <disk type='file' device='disk'>");
    let _ = writeln!(
        x,
        "      <driver name='qemu' type='{}'/>",
        e(spec.disk_format)
    );
    let _ = writeln!(
        x,
        "      <source file='{}'/>",
        e(&spec.disk.to_string_lossy())
    );
    let _ = writeln!(x, "      <target dev='{dev}' bus='{bus}'/>");
    let _ = writeln!(x, "    </disk>");
    for mac in &macs {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <mac address='{}'/>", e(mac));
        let _ = writeln!(x, "      <source network='default'/>");
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "    </interface>");
    }
    if macs.is_empty() {
        let _ = writeln!(x, "    <interface type='network'>");
        let _ = writeln!(x, "      <source network='default'/>");
        let _ = writeln!(x, "      <model type='virtio'/>");
        let _ = writeln!(x, "    </interface>");
    }
    let _ = writeln!(
        x,
        "    <serial type='pty'>\n      <target port='0'/>\n    </serial>"
    );
    let _ = writeln!(
        x,
        "    <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>"
    );
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    Domain {
        name,
        memory_mib,
        vcpus,
        macs,
        uefi,
        xml: x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Nic;

    fn spec(firmware: Firmware, bus: DiskBus) -> DomainSpec<'static> {
        DomainSpec {
            disk: Path::new("/srv/kvm/web & mail.qcow2"),
            disk_format: "qcow2",
            bus,
            firmware,
            name: None,
            memory_mib: None,
            vcpus: None,
            fallback_name: "web",
        }
    }

    #[test]
    fn facts_then_overrides_then_defaults() {
        let facts = VmFacts {
            name: Some("web 01".into()),
            memory_bytes: Some(768 << 20),
            vcpus: Some(3),
            nics: vec![Nic {
                mac: "00:16:3e:00:00:01".into(),
                device: Some("0".into()),
            }],
            ..VmFacts::default()
        };
        let d = domain(Some(&facts), &spec(Firmware::Uefi, DiskBus::Virtio));
        assert_eq!((d.name.as_str(), d.memory_mib, d.vcpus), ("web-01", 768, 3));
        assert!(d.xml.contains("<mac address='00:16:3e:00:00:01'/>"));
        assert!(d.xml.contains("web &amp; mail.qcow2"));
        assert!(d.xml.contains(OVMF_CODE));
        let mut s = spec(Firmware::Bios, DiskBus::Ide);
        s.vcpus = Some(2);
        s.memory_mib = Some(2048);
        let d = domain(None, &s);
        assert_eq!((d.name.as_str(), d.memory_mib, d.vcpus), ("web", 2048, 2));
        assert!(d.xml.contains("machine='pc'") && d.xml.contains("bus='ide'"));
        assert!(!d.xml.contains("loader"));
    }
}
