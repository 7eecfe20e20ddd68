//! Network naming: the guest keeps calling its NIC `eth0`.
//!
//! Debian/Ubuntu's udev persistent-net rules pin `eth0` to the Xen vif's MAC address, so
//! the new virtio NIC would become `eth1` and `/etc/network/interfaces`' `eth0` stanza
//! would never come up. The rules (and the generator override, when the guest has one in
//! /etc) are moved aside — udev only reads `*.rules`, so the backup is inert. The boot
//! step puts `net.ifnames=0 biosdevname=0` on the kernel command line so the kernel's
//! `eth0` name is kept instead of a predictable name such as `ens3`.
//!
//! Red Hat style `/etc/sysconfig/network-scripts/ifcfg-*` files bind a configuration to
//! the NIC with `HWADDR=<Xen vif MAC>`; that line is commented out so the configuration
//! applies to the new NIC by its name.

use super::edit::{
    edit_config, exists, is_blank_or_comment, join, lines, move_aside, split_eol, Edited,
    COMMENT_PREFIX,
};
use super::{At, FixupContext, FixupError};
use crate::guestfs::GuestFs;
use crate::report::Report;

const STEP: &str = "network";
const RULES_DIR: &str = "/etc/udev/rules.d";
const RULES: [&str; 2] = [
    "70-persistent-net.rules",
    "75-persistent-net-generator.rules",
];

const IFCFG_DIR: &str = "/etc/sysconfig/network-scripts";

/// Comment out `HWADDR=` in an ifcfg file.
fn edit_ifcfg(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        match std::str::from_utf8(bytes) {
            Ok(text) if !is_blank_or_comment(text) && text.trim_start().starts_with("HWADDR=") => {
                out.push(&format!("{COMMENT_PREFIX}{text}"), eol);
                out.edits.push(format!("commented out {}", text.trim()));
            }
            _ => out.keep(line),
        }
    }
    out
}

/// Move the persistent-net udev rules aside and unbind ifcfg files from the Xen MAC.
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
    let mut names: Vec<String> = guest
        .read_dir(IFCFG_DIR)
        .at(STEP, IFCFG_DIR)?
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with("ifcfg-") && n != "ifcfg-lo" && !n.contains(".imgconv-orig"))
        .collect();
    names.sort();
    for name in names {
        let path = join(IFCFG_DIR, &name);
        edit_config(
            guest,
            report,
            STEP,
            &path,
            "HWADDR binds the configuration to the Xen NIC's MAC address; the new NIC has another one",
            edit_ifcfg,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifcfg_hwaddr() {
        let e = edit_ifcfg(b"DEVICE=eth0\nHWADDR=00:16:3e:00:00:01\nBOOTPROTO=dhcp\n");
        assert_eq!(
            e.text,
            b"DEVICE=eth0\n# imgconv: HWADDR=00:16:3e:00:00:01\nBOOTPROTO=dhcp\n"
        );
    }
}
