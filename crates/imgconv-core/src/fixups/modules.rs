//! Xen kernel modules named in the guest's module configuration.
//!
//! Lines that load or configure Xen's block and network frontends are commented out with
//! a `# imgconv: ` prefix: `/etc/modules` and `/etc/modules-load.d/*.conf` (one module per
//! line), `/etc/initramfs-tools/modules` (the donor's initrd is used, but a guest-built
//! one should agree), and `/etc/modprobe.d/*.conf` plus the old `/etc/modprobe.conf`.
//! As virt-v2v does, `alias ethN <xen net module>` becomes `alias ethN virtio_net` and
//! `alias scsi_hostadapter <xen block module>` becomes `alias scsi_hostadapter virtio_blk`
//! when the new disk is on virtio (otherwise only commented: udev loads the right driver
//! for the emulated hardware). `blacklist` lines are left alone.
//!
//! SUSE guests list initrd modules in `/etc/sysconfig/kernel` (`INITRD_MODULES`,
//! `DOMU_INITRD_MODULES`); the Xen ones are dropped from those lists, as virt-v2v does.

use super::edit::{
    edit_config, is_blank_or_comment, join, lines, split_eol, Edited, COMMENT_PREFIX,
};
use super::{At, DiskBus, FixupContext, FixupError};
use crate::guestfs::GuestFs;
use crate::report::Report;

const STEP: &str = "modules";

/// Xen PV block and network frontends, with `-` written as `_` (kmod treats them alike):
/// the mainline names and the old xenified-kernel/kmod-xenpv names.
const XEN_MODULES: [&str; 6] = [
    "xenblk",
    "xennet",
    "xen_blkfront",
    "xen_netfront",
    "xen_vbd",
    "xen_vnif",
];

const WHY: &str = "Xen's block and network frontends have no device under KVM; the disk and NIC are virtio (or emulated) now";

/// True for a Xen frontend module name, spelled with `-` or `_`.
pub fn is_xen_module(name: &str) -> bool {
    let n = name.replace('-', "_");
    XEN_MODULES.contains(&n.as_str())
}

/// Comment out xen module lines of a one-module-per-line list.
fn edit_module_list(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        match std::str::from_utf8(bytes) {
            Ok(text)
                if !is_blank_or_comment(text)
                    && text.split_whitespace().next().is_some_and(is_xen_module) =>
            {
                out.push(&format!("{COMMENT_PREFIX}{text}"), eol);
                out.edits.push(format!("commented out `{}`", text.trim()));
            }
            _ => out.keep(line),
        }
    }
    out
}

/// Comment out modprobe configuration lines naming xen modules, replacing the ethN and
/// scsi_hostadapter aliases with virtio ones on a virtio disk.
fn edit_modprobe(old: &[u8], bus: DiskBus) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        let Ok(text) = std::str::from_utf8(bytes) else {
            out.keep(line);
            continue;
        };
        if is_blank_or_comment(text) {
            out.keep(line);
            continue;
        }
        let tokens: Vec<&str> = text.split_whitespace().collect();
        if tokens[0] == "blacklist" || !tokens[1..].iter().any(|t| is_xen_module(t)) {
            out.keep(line);
            continue;
        }
        let replacement = match (tokens[0], tokens.get(1), bus) {
            ("alias", Some(name), DiskBus::Virtio) if tokens.len() == 3 => {
                let is_eth = name
                    .strip_prefix("eth")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if is_eth && is_xen_module(tokens[2]) {
                    Some(format!("alias {name} virtio_net"))
                } else if name.starts_with("scsi_hostadapter") && is_xen_module(tokens[2]) {
                    Some(format!("alias {name} virtio_blk"))
                } else {
                    None
                }
            }
            _ => None,
        };
        let eol: &[u8] = if eol.is_empty() && replacement.is_some() {
            b"\n"
        } else {
            eol
        };
        out.push(&format!("{COMMENT_PREFIX}{text}"), eol);
        match replacement {
            Some(r) => {
                out.edits.push(format!("`{}` → `{r}`", text.trim()));
                out.push(&r, eol);
            }
            None => out.edits.push(format!("commented out `{}`", text.trim())),
        }
    }
    out
}

/// Drop Xen modules from SUSE's `INITRD_MODULES="..."`/`DOMU_INITRD_MODULES="..."`.
fn edit_sysconfig_kernel(old: &[u8]) -> Edited {
    let mut out = Edited::default();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        let parsed = std::str::from_utf8(bytes).ok().and_then(|text| {
            let (var, value) = text.split_once('=')?;
            if !matches!(var.trim(), "INITRD_MODULES" | "DOMU_INITRD_MODULES") {
                return None;
            }
            let quote = match value.trim_end().chars().next() {
                Some(q @ ('"' | '\'')) => q.to_string(),
                _ => String::new(),
            };
            let inner = value
                .trim_end()
                .strip_prefix(quote.as_str())?
                .strip_suffix(quote.as_str())?;
            let words: Vec<&str> = inner.split_whitespace().collect();
            let kept: Vec<&str> = words
                .iter()
                .copied()
                .filter(|w| !is_xen_module(w))
                .collect();
            (kept.len() != words.len()).then(|| (var.to_string(), quote, kept.join(" "), words))
        });
        match parsed {
            Some((var, quote, kept, words)) => {
                out.push(&format!("{var}={quote}{kept}{quote}"), eol);
                let dropped: Vec<&str> = words.into_iter().filter(|w| is_xen_module(w)).collect();
                out.edits
                    .push(format!("dropped {} from {}", dropped.join(" "), var.trim()));
            }
            None => out.keep(line),
        }
    }
    out
}

/// The `*.conf` files of a directory, sorted.
fn conf_files(guest: &mut dyn GuestFs, dir: &str) -> Result<Vec<String>, FixupError> {
    let mut names: Vec<String> = guest
        .read_dir(dir, crate::tree::MAX_DIR_ENTRIES)
        .at(STEP, dir)?
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    Ok(names.into_iter().map(|n| join(dir, &n)).collect())
}

/// Comment out (or replace with virtio) every Xen frontend module line.
pub fn fix_modules(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let mut lists = vec![
        "/etc/modules".to_string(),
        "/etc/initramfs-tools/modules".to_string(),
    ];
    lists.extend(conf_files(guest, "/etc/modules-load.d")?);
    for path in lists {
        edit_config(guest, report, STEP, &path, WHY, edit_module_list)?;
    }
    let mut modprobe = vec!["/etc/modprobe.conf".to_string()];
    modprobe.extend(conf_files(guest, "/etc/modprobe.d")?);
    for path in modprobe {
        edit_config(guest, report, STEP, &path, WHY, |old| {
            edit_modprobe(old, ctx.disk_bus)
        })?;
    }
    edit_config(
        guest,
        report,
        STEP,
        "/etc/sysconfig/kernel",
        WHY,
        edit_sysconfig_kernel,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modprobe_aliases() {
        let old = "# x\nalias eth0 xennet\nalias eth1 xen-netfront\nalias scsi_hostadapter xenblk\noptions xen_blkfront foo=1\nblacklist xen_netfront\nalias snd-card-0 snd-hda\n";
        let e = edit_modprobe(old.as_bytes(), DiskBus::Virtio);
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "# x\n# imgconv: alias eth0 xennet\nalias eth0 virtio_net\n\
             # imgconv: alias eth1 xen-netfront\nalias eth1 virtio_net\n\
             # imgconv: alias scsi_hostadapter xenblk\nalias scsi_hostadapter virtio_blk\n\
             # imgconv: options xen_blkfront foo=1\nblacklist xen_netfront\nalias snd-card-0 snd-hda\n"
        );
        let e = edit_modprobe(b"alias eth0 xennet", DiskBus::Sata);
        assert_eq!(e.text, b"# imgconv: alias eth0 xennet");
    }

    #[test]
    fn suse_initrd_modules() {
        let e = edit_sysconfig_kernel(
            b"## Type: string\nINITRD_MODULES=\"xenblk processor xennet thermal\"\nDOMU_INITRD_MODULES='xennet xenblk'\nMODULES_LOADED_ON_BOOT=\"\"\n",
        );
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "## Type: string\nINITRD_MODULES=\"processor thermal\"\nDOMU_INITRD_MODULES=''\nMODULES_LOADED_ON_BOOT=\"\"\n"
        );
        assert_eq!(
            e.edits,
            [
                "dropped xenblk xennet from INITRD_MODULES",
                "dropped xennet xenblk from DOMU_INITRD_MODULES"
            ]
        );
    }

    #[test]
    fn module_list() {
        let e = edit_module_list(b"loop\nxen-blkfront\n  xennet  \n# xenblk\nxen_netfront debug=1");
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "loop\n# imgconv: xen-blkfront\n# imgconv:   xennet  \n# xenblk\n# imgconv: xen_netfront debug=1"
        );
    }
}
