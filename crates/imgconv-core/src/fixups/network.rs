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
//!
//! The same binding elsewhere:
//! - NetworkManager keyfiles (`/etc/NetworkManager/system-connections/*`): `mac-address=`
//!   in the `[ethernet]`/`[802-3-ethernet]` section is commented out (the backup gets a
//!   hidden name: NetworkManager loads every other file of that directory as a
//!   connection);
//! - netplan (`/etc/netplan/*.yaml`): `macaddress:` under `match:` becomes
//!   `name: <the set-name of that interface>` (or `eth*`), so the match still holds;
//! - systemd-networkd: a `/etc/systemd/network/*.link` matching a MAC address (the
//!   persistent-net rule of networkd: it names the Xen NIC) is moved aside; in a
//!   `*.network` file `MACAddress=` in `[Match]` is commented out, with `Name=eth*` added
//!   when the section names no interface.

use super::edit::{
    apply_edit, edit_config, exists, is_blank_or_comment, join, lines, move_aside, read_config,
    rewrite_as, split_eol, Edited, COMMENT_PREFIX,
};
use super::{At, FixupContext, FixupError};
use crate::guestfs::GuestFs;
use crate::guestfs::NodeKind;
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
        .read_dir(IFCFG_DIR, crate::tree::MAX_DIR_ENTRIES)
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

const NM_DIR: &str = "/etc/NetworkManager/system-connections";
const NETPLAN_DIR: &str = "/etc/netplan";
const NETWORKD_DIR: &str = "/etc/systemd/network";
const MAC_WHY: &str =
    "it binds the configuration to the Xen NIC's MAC address; the new NIC has another one";

/// Comment out `mac-address=` in the ethernet section of a NetworkManager keyfile.
fn edit_nm_keyfile(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    let mut section = String::new();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        let Ok(text) = std::str::from_utf8(bytes) else {
            out.keep(line);
            continue;
        };
        let t = text.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t[1..t.len() - 1].to_string();
        }
        let ethernet = matches!(section.as_str(), "ethernet" | "802-3-ethernet");
        if ethernet
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "mac-address")
        {
            out.push(&format!("{COMMENT_PREFIX}{text}"), eol);
            out.edits.push(format!("commented out {t}"));
        } else {
            out.keep(line);
        }
    }
    out
}

/// Indentation and text of a YAML line (`None` for blank and comment lines).
fn yaml_line(text: &str) -> Option<(usize, &str)> {
    let t = text.trim_start_matches(' ');
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    Some((text.len() - t.len(), t.trim_end()))
}

/// The scalar of a `key: value` line (quotes removed), when the line is that key.
fn yaml_value<'a>(t: &'a str, key: &str) -> Option<&'a str> {
    let rest = t.strip_prefix(key)?.strip_prefix(':')?;
    let v = rest.split(" #").next().unwrap_or("").trim();
    Some(v.trim_matches(['"', '\'']))
}

/// Replace `macaddress:` under `match:` by a name match in a netplan file.
fn edit_netplan(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    let texts: Vec<Option<&str>> = lines(old)
        .map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .collect();
    let parsed: Vec<Option<(usize, &str)>> = texts.iter().map(|t| t.and_then(yaml_line)).collect();
    for (i, line) in lines(old).enumerate() {
        let eol = split_eol(line).1;
        let Some((indent, t)) = parsed[i] else {
            out.keep(line);
            continue;
        };
        let Some(mac) = yaml_value(t, "macaddress") else {
            out.keep(line);
            continue;
        };
        // The enclosing key: the nearest line above with less indentation.
        let parent = (0..i)
            .rev()
            .find_map(|j| parsed[j].filter(|(ind, _)| *ind < indent).map(|p| (j, p)));
        let Some((pj, (pind, pt))) = parent else {
            out.keep(line);
            continue;
        };
        if pt != "match:" {
            out.keep(line);
            continue;
        }
        // The interface holding this match: its set-name, at the match's indentation.
        let iface = (0..pj)
            .rev()
            .find_map(|j| parsed[j].filter(|(ind, _)| *ind < pind).map(|_| j));
        let set_name = iface.and_then(|k| {
            let iface_indent = parsed[k].map_or(0, |p| p.0);
            (k + 1..parsed.len())
                .map_while(|j| match parsed[j] {
                    Some((ind, _)) if ind <= iface_indent => None,
                    other => Some(other),
                })
                .flatten()
                .find_map(|(ind, t)| (ind == pind).then(|| yaml_value(t, "set-name")).flatten())
        });
        let name = set_name.unwrap_or("eth*");
        out.push(
            &format!("{COMMENT_PREFIX}{}", texts[i].unwrap_or_default()),
            b"\n",
        );
        out.push(&format!("{}name: \"{name}\"", " ".repeat(indent)), eol);
        out.edits.push(format!(
            "match on macaddress {mac} → match on name \"{name}\""
        ));
    }
    out
}

/// Comment out `MACAddress=` in `[Match]` of a systemd-networkd `.network` file, adding
/// `Name=eth*` when the section then names no interface.
fn edit_networkd(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    let texts: Vec<Option<&str>> = lines(old)
        .map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .collect();
    let key = |t: &str| t.split_once('=').map(|(k, _)| k.trim().to_string());
    // Whether each [Match] section (by its header line) has a Name= of its own.
    let mut section = String::new();
    let mut match_has_name = false;
    for t in texts.iter().flatten() {
        let t = t.trim();
        if t.starts_with('[') {
            section = t.to_string();
        } else if section == "[Match]" && key(t).as_deref() == Some("Name") {
            match_has_name = true;
        }
    }
    section.clear();
    let mut added_name = false;
    for (line, text) in lines(old).zip(&texts) {
        let eol = split_eol(line).1;
        let Some(text) = text else {
            out.keep(line);
            continue;
        };
        let t = text.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        if section == "[Match]" && !t.starts_with('#') && key(t).as_deref() == Some("MACAddress") {
            out.push(&format!("{COMMENT_PREFIX}{text}"), eol);
            out.edits.push(format!("commented out {t}"));
            if !match_has_name && !added_name {
                out.push("Name=eth*", if eol.is_empty() { b"\n" } else { eol });
                out.edits.push("added Name=eth*".into());
                added_name = true;
            }
        } else {
            out.keep(line);
        }
    }
    out
}

/// Whether a systemd `.link` file matches on a MAC address.
fn link_matches_mac(text: &[u8]) -> bool {
    let mut in_match = false;
    for l in lines(text) {
        let t = String::from_utf8_lossy(split_eol(l).0).trim().to_string();
        if t.starts_with('[') {
            in_match = t == "[Match]";
        } else if in_match
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim() == "MACAddress")
        {
            return true;
        }
    }
    false
}

/// Names of the regular files of `dir` (sorted) that `keep` accepts.
fn files_in(
    guest: &mut dyn GuestFs,
    dir: &str,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, FixupError> {
    let mut names: Vec<String> = guest
        .read_dir(dir, crate::tree::MAX_DIR_ENTRIES)
        .at(STEP, dir)?
        .unwrap_or_default()
        .into_iter()
        .filter(|i| i.kind == NodeKind::File && !i.name.starts_with('.'))
        .map(|i| i.name)
        .filter(|n| !n.contains(super::BACKUP_SUFFIX) && keep(n))
        .collect();
    names.sort();
    Ok(names)
}

/// Unbind NetworkManager, netplan and systemd-networkd configurations from the Xen MAC.
pub fn fix_mac_bindings(
    guest: &mut dyn GuestFs,
    _ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    for name in files_in(guest, NM_DIR, |_| true)? {
        let path = join(NM_DIR, &name);
        let Some(old) = read_config(guest, STEP, &path)? else {
            continue;
        };
        let edited = edit_nm_keyfile(&old);
        rewrite_as(
            guest,
            report,
            STEP,
            &path,
            &old,
            &edited.text,
            edited.edits.join("; "),
            MAC_WHY,
            true,
        )?;
    }
    for name in files_in(guest, NETPLAN_DIR, |n| n.ends_with(".yaml"))? {
        let path = join(NETPLAN_DIR, &name);
        edit_config(guest, report, STEP, &path, MAC_WHY, edit_netplan)?;
    }
    for name in files_in(guest, NETWORKD_DIR, |n| n.ends_with(".link"))? {
        let path = join(NETWORKD_DIR, &name);
        let Some(text) = read_config(guest, STEP, &path)? else {
            continue;
        };
        if link_matches_mac(&text) {
            move_aside(
                guest,
                report,
                STEP,
                &path,
                false,
                format!("moved {name} aside"),
                "it names the NIC with the Xen vif's MAC address (networkd's persistent name); with net.ifnames=0 the new NIC is eth0",
            )?;
        }
    }
    for name in files_in(guest, NETWORKD_DIR, |n| n.ends_with(".network"))? {
        let path = join(NETWORKD_DIR, &name);
        let Some(old) = read_config(guest, STEP, &path)? else {
            continue;
        };
        let edited = edit_networkd(&old);
        apply_edit(guest, report, STEP, &path, &old, edited, MAC_WHY)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nm_keyfile() {
        let e = edit_nm_keyfile(b"[connection]\nid=eth0\n[ethernet]\nmac-address=00:16:3E:01:02:03\ncloned-mac-address=x\n[wifi]\nmac-address=y\n");
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "[connection]\nid=eth0\n[ethernet]\n# imgconv: mac-address=00:16:3E:01:02:03\ncloned-mac-address=x\n[wifi]\nmac-address=y\n"
        );
    }

    #[test]
    fn netplan_match() {
        let old = "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n      match:\n        macaddress: 06:aa:bb:cc:dd:ee\n      set-name: eth0\n    ens5:\n      macaddress: 02:00:00:00:00:01\n      match:\n        macaddress: \"06:11:22:33:44:55\"\n";
        let e = edit_netplan(old.as_bytes());
        assert_eq!(
            String::from_utf8(e.text.clone()).unwrap(),
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n      match:\n\
             # imgconv:         macaddress: 06:aa:bb:cc:dd:ee\n        name: \"eth0\"\n      set-name: eth0\n\
             \x20   ens5:\n      macaddress: 02:00:00:00:00:01\n      match:\n\
             # imgconv:         macaddress: \"06:11:22:33:44:55\"\n        name: \"eth*\"\n"
        );
        assert_eq!(edit_netplan(&e.text).text, e.text);
    }

    #[test]
    fn networkd_network() {
        let e = edit_networkd(b"[Match]\nMACAddress=00:16:3e:00:00:01\n\n[Network]\nDHCP=yes\n");
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "[Match]\n# imgconv: MACAddress=00:16:3e:00:00:01\nName=eth*\n\n[Network]\nDHCP=yes\n"
        );
        assert!(link_matches_mac(
            b"[Match]\nMACAddress=00:16:3e:00:00:01\n[Link]\nName=eth0\n"
        ));
        assert!(!link_matches_mac(
            b"[Match]\nOriginalName=*\n[Link]\nMACAddressPolicy=persistent\n"
        ));
    }

    #[test]
    fn ifcfg_hwaddr() {
        let e = edit_ifcfg(b"DEVICE=eth0\nHWADDR=00:16:3e:00:00:01\nBOOTPROTO=dhcp\n");
        assert_eq!(
            e.text,
            b"DEVICE=eth0\n# imgconv: HWADDR=00:16:3e:00:00:01\nBOOTPROTO=dhcp\n"
        );
    }
}
