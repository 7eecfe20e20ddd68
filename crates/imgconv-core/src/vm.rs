//! What is known of the virtual machine around a disk: name, memory, vCPUs, NICs and
//! disks, as an XVA's `ova.xml` (or a Xen domain config) records them. Every field is
//! optional: a bare image says nothing of its machine, and the libvirt definition
//! ([`crate::libvirt`]) falls back to defaults or to the user's overrides.

/// The machine a disk came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VmFacts {
    /// Where the facts come from (`ova.xml`, a config file's path).
    pub origin: String,
    /// The VM's name (`name_label`).
    pub name: Option<String>,
    /// Memory in bytes (`memory_static_max`).
    pub memory_bytes: Option<u64>,
    /// Virtual CPUs (`VCPUs_max`).
    pub vcpus: Option<u32>,
    /// Network interfaces, in device order.
    pub nics: Vec<Nic>,
    /// Disks, in device order; the one converted is marked.
    pub disks: Vec<VmDisk>,
    /// The kernel command line the machine gave the guest (a Xen config's `root=` and
    /// `extra`, or its `cmdline`). Recorded, not applied: it names Xen devices and
    /// consoles the converted guest does not have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_cmdline: Option<String>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Nic {
    /// The MAC address, lower case, colon separated.
    pub mac: String,
    /// The interface's device number or name (`0`, `eth0`) when recorded.
    pub device: Option<String>,
}

/// One disk of the machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VmDisk {
    /// The container's reference for it (XVA: the VDI's `Ref:N`).
    pub id: String,
    /// The guest's device name or number (`xvda`, `0`).
    pub device: Option<String>,
    /// Virtual size in bytes.
    pub size: Option<u64>,
    /// Marked bootable.
    pub bootable: bool,
    /// This disk is the one read as the source.
    pub converted: bool,
}

/// `aa:bb:cc:dd:ee:ff` in lower case when `text` is a MAC address (`:` or `-` separated),
/// else `None`.
pub fn normalise_mac(text: &str) -> Option<String> {
    let parts: Vec<&str> = text.trim().split([':', '-']).collect();
    if parts.len() != 6
        || !parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    Some(parts.join(":").to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_normalised_or_refused() {
        assert_eq!(
            normalise_mac("00:16:3E:AA:bb:0C").as_deref(),
            Some("00:16:3e:aa:bb:0c")
        );
        assert_eq!(
            normalise_mac("00-16-3e-aa-bb-0c").as_deref(),
            Some("00:16:3e:aa:bb:0c")
        );
        assert_eq!(normalise_mac("00:16:3e:aa:bb"), None);
        assert_eq!(normalise_mac("00:16:3e:aa:bb:zz"), None);
        assert_eq!(normalise_mac("<script>"), None);
    }
}
