//! The UEFI side of the guest's root filesystem.
//!
//! - `/boot/grub/grub.cfg` and `grubenv` as for BIOS ([`write_grub_cfg_and_env`]), with
//!   `insmod part_gpt` (the config must say [`PartitionMap::Gpt`]).
//! - `/boot/efi`, the ESP's mount point (the fstab line is [`esp_fstab_line`]).
//! - `/boot/grub/x86_64-efi/`: the donor's x86_64-efi modules and lists when the caller
//!   has them (the signed GRUB is monolithic and needs none; an unsigned GRUB loads
//!   modules it does not embed from there), and `core.efi`, a copy of the GRUB EFI image
//!   on the ESP: Debian's grub-efi-amd64 maintainer scripts re-run grub-install on
//!   upgrade only when that file exists (docs/uefi-layout.md).
//!
//! A file we replace keeps a backup; every change is in the report.

use super::efi_files::{EfiBootFiles, PLATFORM_X86_64_EFI};
use super::esp::ESP_MOUNT_POINT;
use super::UefiError;
use crate::boot::grub_cfg::{GrubConfig, PartitionMap};
use crate::boot::guest_files::{put_file, record, write_grub_cfg_and_env, GRUB_DIR, STEP};
use crate::boot::{BootError, GrubPlatformFiles};
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;

/// The fstab line that mounts the ESP (`serial` as `ABCD-1234`): `umask=0077` as the
/// Debian installer writes it (the ESP holds nothing users need to read), pass 1 so
/// fsck.fat checks it at boot.
pub fn esp_fstab_line(serial: &str) -> String {
    format!("UUID={serial} {ESP_MOUNT_POINT} vfat umask=0077 0 1")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Write the guest's UEFI boot files (see the module documentation). `efi_modules` is
/// the donor's `/usr/lib/grub/x86_64-efi` ([`PLATFORM_X86_64_EFI`]), if it has one.
/// For a hybrid disk call [`crate::boot::write_guest_boot_files`] (BIOS) as well; the
/// grub.cfg both write is the same, so the second call leaves it unchanged.
pub fn write_guest_efi_files(
    guest: &mut dyn GuestFs,
    efi: &EfiBootFiles,
    efi_modules: Option<&GrubPlatformFiles>,
    cfg: &GrubConfig,
    report: &mut Report,
) -> Result<(), UefiError> {
    if cfg.partition_map != PartitionMap::Gpt {
        return Err(UefiError::BadArgument {
            why: "a GPT disk needs grub.cfg with partition_map = Gpt (insmod part_gpt)".into(),
        });
    }
    if let Some(m) = efi_modules {
        if m.platform != PLATFORM_X86_64_EFI {
            return Err(UefiError::BadArgument {
                why: format!(
                    "the EFI modules are for {}, not {PLATFORM_X86_64_EFI}",
                    m.platform
                ),
            });
        }
    }
    // grub.cfg first renders (and so validates) the config before anything is written.
    write_grub_cfg_and_env(guest, cfg, report)?;

    let boot_err = |e: BootError| UefiError::Boot(Box::new(e));
    let guest_err = |e: crate::guestfs::GuestFsError| boot_err(e.into());
    if guest.lstat(ESP_MOUNT_POINT).map_err(guest_err)?.is_none() {
        guest
            .mkdir_p(ESP_MOUNT_POINT, NodeAttrs::root(0o755, now()))
            .map_err(guest_err)?;
        report.change(
            STEP,
            ESP_MOUNT_POINT,
            "created",
            "mount point of the EFI System Partition (fstab mounts it there)",
            None,
        );
    }

    let dir = format!("{GRUB_DIR}/{PLATFORM_X86_64_EFI}");
    guest
        .mkdir_p(&dir, NodeAttrs::root(0o755, now()))
        .map_err(guest_err)?;
    if let Some(m) = efi_modules {
        let version = m
            .grub_version()
            .map(|v| v.package.unwrap_or(v.upstream))
            .unwrap_or_else(|| "of unknown version".into());
        let (mut created, mut unchanged) = (0usize, 0usize);
        for (name, data) in &m.files {
            if !(name.ends_with(".mod") || name.ends_with(".lst") || name == "modinfo.sh") {
                continue;
            }
            let path = format!("{dir}/{name}");
            match put_file(guest, &path, data, 0o644).map_err(boot_err)? {
                crate::boot::guest_files::Put::Created => created += 1,
                crate::boot::guest_files::Put::Unchanged => unchanged += 1,
                crate::boot::guest_files::Put::Replaced(backup) => report.change(
                    STEP,
                    &path,
                    format!("replaced with the file of GRUB {version}"),
                    "GRUB EFI modules must come from one GRUB build",
                    Some(backup),
                ),
            }
        }
        if created > 0 {
            report.change(
                STEP,
                &dir,
                format!(
                    "added {created} GRUB x86_64-efi modules and lists of GRUB {version} ({unchanged} already present)"
                ),
                "GRUB EFI loads modules it does not embed from $prefix/x86_64-efi",
                None,
            );
        }
    }
    let core_path = format!("{dir}/core.efi");
    let outcome = put_file(guest, &core_path, &efi.grub, 0o644).map_err(boot_err)?;
    record(
        report,
        &core_path,
        outcome,
        "copy of the GRUB EFI image on the ESP; Debian's grub-efi maintainer scripts \
         refresh the ESP on upgrade only when it exists",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::pe::tests::{fake_mods, fake_pe};
    use super::*;
    use crate::guestfs::MemFs;
    use crate::guestfs::{NodeKind, TreeRead};

    const UUID: &str = "0f3c5a7e-1b2d-4c6e-8f90-a1b2c3d4e5f6";

    fn efi() -> EfiBootFiles {
        let grub = fake_pe(&[("mods", &fake_mods("/EFI/debian"))]);
        EfiBootFiles::new(
            None,
            grub,
            None,
            None,
            true,
            super::super::efi_files::EfiOrigin::BuiltUnsigned {
                modules: "test".into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn fstab_line() {
        assert_eq!(
            esp_fstab_line("ABCD-0123"),
            "UUID=ABCD-0123 /boot/efi vfat umask=0077 0 1"
        );
    }

    #[test]
    fn writes_cfg_mount_point_modules_and_core_efi() {
        let mut fs = MemFs::new().with_file("/boot/grub/x86_64-efi/normal.mod", "OLD");
        let mut cfg = GrubConfig::new(UUID, "6.1.0-18-amd64");
        cfg.partition_map = PartitionMap::Gpt;
        let mods = GrubPlatformFiles::from_files(
            PLATFORM_X86_64_EFI,
            [
                ("normal.mod".to_string(), b"NEW".to_vec()),
                ("fs.lst".to_string(), b"ext2\n".to_vec()),
                ("kernel.img".to_string(), b"K".to_vec()),
            ],
        )
        .unwrap();
        let mut report = Report::default();
        let e = efi();
        write_guest_efi_files(&mut fs, &e, Some(&mods), &cfg, &mut report).unwrap();
        assert!(fs
            .text("/boot/grub/grub.cfg")
            .unwrap()
            .contains("insmod part_gpt"));
        assert_eq!(fs.lstat("/boot/efi").unwrap().unwrap().kind, NodeKind::Dir);
        assert_eq!(
            fs.text("/boot/grub/x86_64-efi/normal.mod").as_deref(),
            Some("NEW")
        );
        assert_eq!(
            fs.text("/boot/grub/x86_64-efi/normal.mod.imgconv-orig")
                .as_deref(),
            Some("OLD")
        );
        assert!(fs.text("/boot/grub/x86_64-efi/kernel.img").is_none());
        assert_eq!(
            fs.read_file("/boot/grub/x86_64-efi/core.efi", 1 << 20)
                .unwrap()
                .unwrap(),
            e.grub
        );
        let paths: Vec<&str> = report.changes.iter().map(|c| c.path.as_str()).collect();
        for want in [
            "/boot/grub/grub.cfg",
            "/boot/efi",
            "/boot/grub/x86_64-efi/normal.mod",
            "/boot/grub/x86_64-efi",
            "/boot/grub/x86_64-efi/core.efi",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
        // Idempotent: a second run changes nothing.
        let mut again = Report::default();
        write_guest_efi_files(&mut fs, &e, Some(&mods), &cfg, &mut again).unwrap();
        assert_eq!(again.changes, vec![]);
    }

    #[test]
    fn refuses_an_msdos_config() {
        let mut fs = MemFs::new();
        let cfg = GrubConfig::new(UUID, "6.1");
        let e = write_guest_efi_files(&mut fs, &efi(), None, &cfg, &mut Report::default());
        assert!(matches!(e, Err(UefiError::BadArgument { .. })));
        assert!(fs.lstat("/boot").unwrap().is_none(), "nothing written");
        // The same guest, empty, with a GPT config: everything is created.
        let mut cfg = cfg;
        cfg.partition_map = PartitionMap::Gpt;
        write_guest_efi_files(&mut fs, &efi(), None, &cfg, &mut Report::default()).unwrap();
        assert!(fs.text("/boot/grub/grubenv").is_some());
        assert!(fs.text("/boot/grub/x86_64-efi/core.efi").is_some());
    }
}
