//! SELinux: a guest that enforces (or logs) SELinux policy needs every file labelled, and
//! the files the conversion wrote (kernel, modules, GRUB files, new config files, backups)
//! carry no `security.selinux` attribute. With SELinux enforcing, unlabelled files are
//! `unlabeled_t`, which confined services (and on RHEL 7 even `systemd-logind`) may not
//! read; login can fail. The guest's own boot scripts relabel the whole filesystem on the
//! next boot when `/.autorelabel` exists (RHEL 5–7 `rc.sysinit`/`selinux-autorelabel`,
//! SUSE likewise), then reboot once.

use super::edit::{create, exists, lines, read_config, split_eol};
use super::{FixupContext, FixupError};
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;

const STEP: &str = "selinux";
const CONFIG: &str = "/etc/selinux/config";
const MARKER: &str = "/.autorelabel";

/// The `SELINUX=` mode of `/etc/selinux/config` (`enforcing`, `permissive`, `disabled`).
pub fn selinux_mode(config: &[u8]) -> Option<String> {
    lines(config)
        .filter_map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .map(str::trim)
        .filter(|t| !t.starts_with('#'))
        .filter_map(|t| t.strip_prefix("SELINUX="))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_ascii_lowercase())
        .last()
}

/// Create `/.autorelabel` when the guest runs SELinux enforcing or permissive.
pub fn request_relabel(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let Some(config) = read_config(guest, STEP, CONFIG)? else {
        return Ok(());
    };
    let Some(mode) = selinux_mode(&config) else {
        return Ok(());
    };
    if !matches!(mode.as_str(), "enforcing" | "permissive") || exists(guest, STEP, MARKER)? {
        return Ok(());
    }
    create(
        guest,
        report,
        STEP,
        MARKER,
        b"",
        NodeAttrs::root(0o644, ctx.mtime),
        "created an empty /.autorelabel: the guest relabels its filesystem on the next boot (and reboots once)",
        format!(
            "{CONFIG} sets SELINUX={mode}; the files the conversion wrote have no SELinux label, and unlabelled files are denied to confined services{}",
            if mode == "enforcing" { " (logins can fail)" } else { " (permissive mode logs every access to them)" }
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode() {
        assert_eq!(
            selinux_mode(b"# SELINUX=disabled\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
                .as_deref(),
            Some("enforcing")
        );
        assert_eq!(
            selinux_mode(b"SELINUX=\"Permissive\"\n").as_deref(),
            Some("permissive")
        );
        assert_eq!(selinux_mode(b"SELINUXTYPE=targeted\n"), None);
    }
}
