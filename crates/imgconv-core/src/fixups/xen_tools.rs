//! Xen guest tools: their services are disabled, since they cannot work under KVM (no
//! xenstore) and Citrix's tools also rewrite gettys and network settings at boot.
//! Packages cannot be removed offline, so the enablement links are undone instead:
//!
//! - systemd: links to a Xen tools unit in any `/etc/systemd/system/*.wants/` are moved
//!   aside under a hidden name (systemd skips dot-files there silently);
//! - SysV init: start links `/etc/rcN.d/SNNname` are renamed to stop links
//!   `KMMname` with MM = 100 − NN, exactly what `update-rc.d NAME disable` does. A
//!   `.imgconv-orig` suffix would not do: `/etc/init.d/rc` runs every `S*` entry, and
//!   insserv would re-enable a script that has no links at all. The renamed link is the
//!   backup; renaming it back re-enables the service.

use super::console::wants_dirs;
use super::edit::{exists, join, move_aside};
use super::{At, FixupContext, FixupError};
use crate::guestfs::GuestFs;
use crate::report::Report;

const STEP: &str = "xen-tools";

/// Services of Xen guest tools: xe-guest-utilities (XenServer/XCP-ng: the
/// `xe-linux-distribution` service starts `xe-daemon`) and the newer xen-guest-agent.
const XEN_SERVICES: [&str; 3] = ["xe-linux-distribution", "xe-daemon", "xen-guest-agent"];

const WHY: &str = "Xen guest tools talk to xenstore, which does not exist under KVM, and Citrix's tools rewrite gettys and network settings at boot";

/// Disable the Xen guest tools' services (systemd units and SysV rc links).
pub fn disable_xen_tools(
    guest: &mut dyn GuestFs,
    _ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let units: Vec<String> = XEN_SERVICES
        .iter()
        .map(|s| format!("{s}.service"))
        .collect();
    for dir in wants_dirs(guest)? {
        let items = guest
            .read_dir(&dir, crate::tree::MAX_DIR_ENTRIES)
            .at(STEP, &dir)?
            .unwrap_or_default();
        for item in items.into_iter().filter(|i| units.contains(&i.name)) {
            move_aside(
                guest,
                report,
                STEP,
                &join(&dir, &item.name),
                true,
                format!("disabled {} (link moved aside)", item.name),
                WHY,
            )?;
        }
    }
    for level in ["0", "1", "2", "3", "4", "5", "6", "S"] {
        let dir = format!("/etc/rc{level}.d");
        let Some(items) = guest
            .read_dir(&dir, crate::tree::MAX_DIR_ENTRIES)
            .at(STEP, &dir)?
        else {
            continue;
        };
        for item in items {
            let Some((seq, name)) = start_link(&item.name) else {
                continue;
            };
            if !XEN_SERVICES.contains(&name) {
                continue;
            }
            let from = join(&dir, &item.name);
            let to = join(
                &dir,
                &format!("K{:02}{name}", 100u32.saturating_sub(seq).clamp(1, 99)),
            );
            if exists(guest, STEP, &to)? {
                // A stop link of that name exists already: keep ours under a hidden name.
                move_aside(
                    guest,
                    report,
                    STEP,
                    &from,
                    true,
                    format!("disabled {name} in runlevel {level} (start link moved aside)"),
                    WHY,
                )?;
            } else {
                guest.rename(&from, &to).at(STEP, &from)?;
                report.change(
                    STEP,
                    &from,
                    format!(
                        "disabled {name} in runlevel {level}: start link renamed to {} (as update-rc.d disable does)",
                        to.rsplit('/').next().unwrap_or(&to)
                    ),
                    WHY,
                    Some(to),
                );
            }
        }
    }
    Ok(())
}

/// `S20name` → (20, "name").
fn start_link(entry: &str) -> Option<(u32, &str)> {
    let rest = entry.strip_prefix('S')?;
    let digits = rest.get(..2)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &rest[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_links() {
        assert_eq!(
            start_link("S20xe-linux-distribution"),
            Some((20, "xe-linux-distribution"))
        );
        assert_eq!(start_link("K01x"), None);
        assert_eq!(start_link("README"), None);
        assert_eq!(start_link("S1"), None);
    }
}
