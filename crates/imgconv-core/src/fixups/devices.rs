//! Kernel disk names (`/dev/xvda2`, `/dev/sdb`, `/dev/hdc1`, `/dev/vdb1`) and their
//! mapping to the converted disk's bus.
//!
//! Xen PV guests name their disks `xvdX` (or `sdX`/`hdX` when the domU config said so);
//! under KVM the same disk is `vdX` (virtio) or `sdX` (SATA/IDE through libata). Names by
//! UUID=, LABEL=, PARTUUID= and /dev/disk/by-* do not depend on the bus.

use super::{device_prefix, DiskBus};

/// A parsed kernel disk name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelDisk<'a> {
    /// `xvd`, `sd`, `hd` or `vd`.
    pub prefix: &'a str,
    /// The disk letters (`a`, `b`, … `aa`).
    pub letters: &'a str,
    /// The partition number as written (empty for a whole disk).
    pub partition: &'a str,
}

const PREFIXES: [&str; 4] = ["xvd", "sd", "hd", "vd"];

impl<'a> KernelDisk<'a> {
    /// Parse `/dev/<prefix><letters><digits>`; anything else is `None`.
    pub(crate) fn parse(spec: &'a str) -> Option<Self> {
        let name = spec.strip_prefix("/dev/")?;
        let prefix = PREFIXES.into_iter().find(|p| name.starts_with(p))?;
        let rest = &name[prefix.len()..];
        let letters_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
        let (letters, partition) = rest.split_at(letters_len);
        if letters.is_empty()
            || letters.len() > 3
            || !partition.bytes().all(|b| b.is_ascii_digit())
            || partition.len() > 3
        {
            return None;
        }
        Some(KernelDisk {
            prefix,
            letters,
            partition,
        })
    }

    /// The same disk and partition under the new bus's name.
    pub(crate) fn on_bus(&self, bus: DiskBus) -> String {
        format!(
            "/dev/{}{}{}",
            device_prefix(bus),
            self.letters,
            self.partition
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_map() {
        let d = KernelDisk::parse("/dev/xvdb1").unwrap();
        assert_eq!((d.prefix, d.letters, d.partition), ("xvd", "b", "1"));
        assert_eq!(d.on_bus(DiskBus::Virtio), "/dev/vdb1");
        assert_eq!(d.on_bus(DiskBus::Ide), "/dev/sdb1");
        let d = KernelDisk::parse("/dev/hda").unwrap();
        assert_eq!(d.on_bus(DiskBus::Sata), "/dev/sda");
        assert_eq!(
            KernelDisk::parse("/dev/sdaa12")
                .unwrap()
                .on_bus(DiskBus::Virtio),
            "/dev/vdaa12"
        );
        for not in [
            "/dev/root",
            "UUID=1",
            "/dev/sd",
            "/dev/xvda1p",
            "/dev/mapper/vg-root",
            "/dev/disk/by-uuid/x",
            "/dev/sr0",
            "/dev/vg/sda",
        ] {
            assert_eq!(KernelDisk::parse(not), None, "{not}");
        }
    }
}
