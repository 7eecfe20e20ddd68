//! Network naming: the guest keeps calling its NIC `eth0`.
//!
//! Debian/Ubuntu's udev persistent-net rules pin `eth0` to the Xen vif's MAC address, so
//! the new virtio NIC would become `eth1` and `/etc/network/interfaces`' `eth0` stanza
//! would never come up. The rules (and the generator override, when the guest has one in
//! /etc) are moved aside — udev only reads `*.rules`, so the backup is inert. The boot
//! step puts `net.ifnames=0 biosdevname=0` on the kernel command line so the kernel's
//! `eth0` name is kept instead of a predictable name such as `ens3`.

use super::edit::{exists, join, move_aside};
use super::{FixupContext, FixupError};
use crate::guestfs::GuestFs;
use crate::report::Report;

const STEP: &str = "network";
const RULES_DIR: &str = "/etc/udev/rules.d";
const RULES: [&str; 2] = [
    "70-persistent-net.rules",
    "75-persistent-net-generator.rules",
];

/// Move the persistent-net udev rules aside.
pub fn fix_persistent_net(
    guest: &mut dyn GuestFs,
    _ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    for name in RULES {
        let path = join(RULES_DIR, name);
        if exists(guest, STEP, &path)? {
            move_aside(
                guest,
                report,
                STEP,
                &path,
                false,
                format!("moved {name} aside"),
                "it pins eth0 to the Xen NIC's MAC address, so the new NIC would be renamed eth1 and the guest's eth0 configuration would not apply; with the rules gone and net.ifnames=0 biosdevname=0 on the kernel command line the new NIC is eth0",
            )?;
        }
    }
    Ok(())
}
