//! The plan as the dry run prints it: source, guest, kernel, command line, GRUB files,
//! output, the disk layout written, the guest changes and the warnings.

use super::plan::{ConversionPlan, KernelOrigin};
use crate::layout;
use std::fmt;

impl fmt::Display for ConversionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.inspection;
        writeln!(
            f,
            "source:  {} ({} {}, {} used of {}, UUID {})",
            i.image.display(),
            i.place(),
            i.fs.kind,
            layout::human(i.fs.used_bytes),
            layout::human(i.fs.size_bytes),
            i.fs.uuid
        )?;
        if let Some(guest) = &i.xen_config {
            for line in guest.lines() {
                writeln!(f, "{line}")?;
            }
        } else if let Some(vm) = i.vm.as_ref().filter(|vm| vm.disks.len() > 1) {
            // A container holding several disks (an XVA): each disk and what becomes of it.
            for (n, d) in vm.disks.iter().enumerate() {
                let fate =
                    if d.converted && i.disks.iter().any(|s| s.member.as_ref() == Some(&d.id)) {
                        "carried: its volumes are listed below"
                    } else if d.converted {
                        "read as the source"
                    } else {
                        "empty (size 0): left out"
                    };
                writeln!(
                    f,
                    "{}{} {} ({}{}): {fate}",
                    if n == 0 { "disks:   " } else { "         " },
                    d.device.as_deref().unwrap_or("?"),
                    d.id,
                    layout::human(d.size.unwrap_or(0)),
                    if d.bootable { ", bootable" } else { "" },
                )?;
            }
        }
        if let Some(name) = i
            .guest
            .os
            .as_ref()
            .and_then(|os| os.pretty_name.clone().or(os.name.clone()))
        {
            let arch = i.guest.arch.map(|a| format!(", {a}")).unwrap_or_default();
            writeln!(
                f,
                "guest:   {name}{arch}, {:?} init, {} Xen-isms",
                i.guest.init,
                i.guest.xenisms.len()
            )?;
        }
        let origin = match self.kernel.origin {
            KernelOrigin::Donor => format!(
                "from the donor {}",
                self.options
                    .donor
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            ),
            KernelOrigin::Guest => "already in the guest".to_string(),
        };
        writeln!(
            f,
            "kernel:  {} ({origin}; graft adds {})",
            self.kernel.version,
            layout::human(self.kernel.graft_bytes)
        )?;
        writeln!(f, "         why: {}", self.kernel.why)?;
        writeln!(f, "cmdline: {}", self.grub_config().kernel_args())?;
        for (arg, why) in &self.compat.kernel_args {
            writeln!(f, "         {arg}: {why}")?;
        }
        writeln!(
            f,
            "grub:    i386-pc files from {}{}",
            self.grub.origin,
            self.grub
                .version
                .as_deref()
                .map(|v| format!(" (GRUB {v})"))
                .unwrap_or_default()
        )?;
        writeln!(f, "output:  {}", self.options.output.display())?;
        if let Some(state) = i.unclean() {
            writeln!(
                f,
                "repair:  the filesystem {state}: e2fsck -fy repairs the copy before anything is written into it"
            )?;
        }
        match &self.gpt {
            Some(g) => {
                writeln!(f, "{g}")?;
                if let Some(o) = &self.efi_origin {
                    writeln!(f, "EFI boot files: {o}")?;
                }
            }
            None => writeln!(f, "{}", self.disk)?,
        }
        if i.volumes.len() > 1 {
            let written = self.written_layout();
            writeln!(f, "volumes:")?;
            for (n, v) in i.volumes.iter().enumerate() {
                let target = if v.action == crate::source::VolumeAction::Root {
                    format!("p{}", written.root_number)
                } else {
                    match written.carried.iter().find(|c| c.0 == n) {
                        Some(c) => format!("p{}", c.3),
                        None => "-".into(),
                    }
                };
                let from = match (&v.source, v.xen_device.as_deref()) {
                    (crate::source::VolumeSource::Partition { disk: 0, .. }, _) => v.name.clone(),
                    (_, Some(d)) => d.to_string(),
                    _ => v.name.clone(),
                };
                writeln!(
                    f,
                    "  {from:<8} -> {target:<4} {} ({}): {}",
                    v.content.describe(),
                    layout::human(v.len),
                    v.fate()
                )?;
            }
        }
        if let Some(g) = &self.boot_grow {
            writeln!(
                f,
                "/boot:   grows from {} to {} ({})",
                layout::human(g.from_bytes),
                layout::human(g.to_bytes),
                super::prepare::grow_reason(&g.reason)
            )?;
        }
        if !self.fixups.changes.is_empty() {
            writeln!(f, "guest changes:")?;
            for c in &self.fixups.changes {
                writeln!(f, "  {:<9} {}: {}", c.step, c.path, c.what)?;
            }
        }
        for w in self.warnings.iter().chain(&self.fixups.warnings) {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
