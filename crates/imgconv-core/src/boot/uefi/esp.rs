//! The EFI System Partition: formatted FAT32 and filled with `fatfs`, straight into the
//! output image (no mkfs.fat, no mtools, no mount).
//!
//! FAT32 because the UEFI specification names it for fixed disks (§13.3.1.1); fatfs picks
//! 512-byte clusters at Debian's 124 MiB, as `mkfs.fat -F 32` would. Label `EFI`, volume
//! serial from the plan (fstab mounts the ESP by it).
//!
//! Contents (docs/uefi-layout.md), with shim:
//! ```text
//! EFI/BOOT/BOOTX64.EFI   shim (what firmware with an empty NVRAM boots)
//! EFI/BOOT/grubx64.efi   GRUB (shim loads its second stage from its own directory)
//! EFI/BOOT/mmx64.efi     MokManager, when available
//! EFI/BOOT/grub.cfg      the stub (GRUB's fallback `$cmdpath/grub.cfg`)
//! EFI/<distro>/shimx64.efi, grubx64.efi, mmx64.efi, BOOTX64.CSV
//! EFI/<distro>/grub.cfg  the stub: what the signed GRUB reads (its prefix /EFI/<distro>)
//! ```
//! Without shim (unsigned GRUB): `EFI/BOOT/BOOTX64.EFI` = GRUB and `EFI/BOOT/grub.cfg`.
//! `fbx64.efi` is never written (it would reset the machine once to create NVRAM entries).
//! The stub (what grub-install writes from load.cfg):
//! ```text
//! search.fs_uuid <root fs UUID> root hd0,gpt1
//! set prefix=($root)'/boot/grub'
//! configfile $prefix/grub.cfg
//! ```

use super::efi_files::EfiBootFiles;
use super::UefiError;
use crate::blockio::OutputDevice;
use crate::layout::gpt::{fat_serial_text, GptPlan};
use crate::report::Report;
use crate::window::FileWindow;
use std::io::{Read, Write};

/// FAT volume label of the ESP.
pub const ESP_LABEL: [u8; 11] = *b"EFI        ";
/// Where the guest mounts the ESP.
pub const ESP_MOUNT_POINT: &str = "/boot/efi";
/// The report step of everything written to the ESP.
pub const STEP: &str = "boot";

/// One file written to the ESP.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EspFile {
    /// Path on the ESP, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub bytes: u64,
    /// What it is ("shim", "GRUB", "the grub.cfg stub", …).
    pub what: String,
}

/// What [`install_esp`] made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EspSummary {
    /// FAT volume serial as fstab/blkid write it (`ABCD-1234`).
    pub serial: String,
    /// `FAT32`.
    pub fat_type: String,
    /// The distribution directory (`debian`), if GRUB's prefix names one.
    pub distro_dir: Option<String>,
    /// Where the EFI binaries came from.
    pub origin: super::efi_files::EfiOrigin,
    /// Whether a signed shim + GRUB chain was installed.
    pub signed: bool,
    /// Every file written, in order.
    pub files: Vec<EspFile>,
}

/// The three-line stub that sends GRUB to `/boot/grub/grub.cfg` of the root filesystem.
/// `root_fs_uuid` must be a UUID (checked), `root_partition` the root's GPT number.
pub fn grub_stub(root_fs_uuid: &str, root_partition: u32) -> Result<String, UefiError> {
    grub_stub_in(root_fs_uuid, root_partition, "/boot/grub")
}

/// The stub for GRUB's directory `grub_dir` on the filesystem `fs_uuid` in GPT partition
/// `partition`: `/boot/grub` on the root, `/grub` on a separate `/boot`.
pub fn grub_stub_in(fs_uuid: &str, partition: u32, grub_dir: &str) -> Result<String, UefiError> {
    let (root_fs_uuid, root_partition) = (fs_uuid, partition);
    let ok = root_fs_uuid.len() == 36
        && root_fs_uuid.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    if !ok {
        return Err(UefiError::BadRootUuid {
            uuid: root_fs_uuid.chars().take(60).collect(),
        });
    }
    Ok(format!(
        "search.fs_uuid {root_fs_uuid} root hd0,gpt{root_partition}\n\
         set prefix=($root)'{grub_dir}'\n\
         configfile $prefix/grub.cfg\n"
    ))
}

/// BOOTX64.CSV for shim's fallback (`fbx64.efi`): UTF-16LE with a BOM, one line
/// `shimx64.efi,<label>,,This is the boot entry for <label>` (as Debian ships it).
pub fn boot_csv(distro: &str) -> Vec<u8> {
    let line = format!("shimx64.efi,{distro},,This is the boot entry for {distro}\n");
    let mut out = vec![0xFF, 0xFE];
    for u in line.encode_utf16() {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out
}

/// The list of files the ESP gets, in writing order: (path, content, what).
fn esp_layout<'a>(
    efi: &'a EfiBootFiles,
    stub: &'a [u8],
    csv: &'a Option<Vec<u8>>,
) -> Vec<(String, &'a [u8], &'static str)> {
    let mut files: Vec<(String, &[u8], &str)> = Vec::new();
    let distro = efi.distro_dir();
    match &efi.shim {
        Some(shim) => {
            files.push((
                "EFI/BOOT/BOOTX64.EFI".into(),
                shim,
                "shim (removable-media boot path)",
            ));
            files.push((
                "EFI/BOOT/grubx64.efi".into(),
                &efi.grub,
                "GRUB, loaded by shim",
            ));
            if let Some(mm) = &efi.mok_manager {
                files.push(("EFI/BOOT/mmx64.efi".into(), mm, "MokManager"));
            }
        }
        None => files.push((
            "EFI/BOOT/BOOTX64.EFI".into(),
            &efi.grub,
            "GRUB (removable-media boot path)",
        )),
    }
    files.push((
        "EFI/BOOT/grub.cfg".into(),
        stub,
        "grub.cfg stub (GRUB's $cmdpath fallback)",
    ));
    if let Some(d) = distro {
        if let Some(shim) = &efi.shim {
            files.push((format!("EFI/{d}/shimx64.efi"), shim, "shim"));
        }
        files.push((format!("EFI/{d}/grubx64.efi"), &efi.grub, "GRUB"));
        if let Some(mm) = &efi.mok_manager {
            files.push((format!("EFI/{d}/mmx64.efi"), mm, "MokManager"));
        }
        if let Some(csv) = csv {
            files.push((
                format!("EFI/{d}/BOOTX64.CSV"),
                csv,
                "boot entry for shim's fallback",
            ));
        }
        files.push((
            format!("EFI/{d}/grub.cfg"),
            stub,
            "grub.cfg stub (read through GRUB's prefix)",
        ));
    }
    files
}

/// Format the plan's ESP inside `out` (already `plan.disk_bytes` long, GPT written or
/// not) and write shim, GRUB and the stub pointing at the filesystem `root_fs_uuid` that
/// holds GRUB's directory: the root's `/boot/grub`, or `/grub` on the plan's separate
/// `/boot` partition when it has one (then `root_fs_uuid` is that filesystem's UUID). Each file goes into `report` under `/boot/efi/…` (where the guest sees
/// it). Returns what was written.
pub fn install_esp<D: OutputDevice>(
    out: &D,
    plan: &GptPlan,
    efi: &EfiBootFiles,
    root_fs_uuid: &str,
    report: &mut Report,
) -> Result<EspSummary, UefiError> {
    let boot = plan.boot_partition();
    let stub = if boot.role == crate::layout::gpt::GptRole::Boot {
        grub_stub_in(root_fs_uuid, boot.number, "/grub")?
    } else {
        grub_stub(root_fs_uuid, plan.root().number)?
    };
    let esp = plan.esp();
    let len = out.disk_len().map_err(|source| UefiError::OutputIo {
        action: "inspecting",
        source,
    })?;
    if len < esp.start_bytes() + esp.len_bytes() {
        return Err(UefiError::BadArgument {
            why: format!("the output image ({len} bytes) does not hold the ESP"),
        });
    }
    // A CSV only goes with shim; the donor's own, else one naming the directory.
    let distro = efi.distro_dir();
    let csv = match (&efi.shim, &distro) {
        (Some(_), Some(d)) => Some(efi.boot_csv.clone().unwrap_or_else(|| boot_csv(d))),
        _ => None,
    };
    let layout = esp_layout(efi, stub.as_bytes(), &csv);

    let fat = |action: &'static str| {
        move |e: std::io::Error| UefiError::Fat {
            action,
            why: e.to_string(),
        }
    };
    let window = || FileWindow::new(out, esp.start_bytes(), esp.len_bytes());
    fatfs::format_volume(
        window(),
        fatfs::FormatVolumeOptions::new()
            .fat_type(fatfs::FatType::Fat32)
            .volume_label(ESP_LABEL)
            .volume_id(plan.esp_volume_id),
    )
    .map_err(fat("formatting the ESP"))?;
    let fs = fatfs::FileSystem::new(window(), fatfs::FsOptions::new())
        .map_err(fat("opening the new ESP"))?;
    let fat_type = match fs.fat_type() {
        fatfs::FatType::Fat12 => "FAT12",
        fatfs::FatType::Fat16 => "FAT16",
        fatfs::FatType::Fat32 => "FAT32",
    };
    // Room check first, so a too-small ESP is a clear error, not a half-written one.
    let stats = fs
        .stats()
        .map_err(fat("reading the new ESP's free space"))?;
    let cluster = u64::from(stats.cluster_size());
    let needed: u64 = layout
        .iter()
        .map(|(_, d, _)| (d.len() as u64).div_ceil(cluster) * cluster)
        .sum::<u64>()
        + 16 * cluster;
    let free = u64::from(stats.free_clusters()) * cluster;
    if needed > free {
        return Err(UefiError::EspFull {
            esp_bytes: esp.len_bytes(),
            needed,
        });
    }
    let mut written = Vec::new();
    {
        let root = fs.root_dir();
        for (path, data, what) in &layout {
            if let Some((dir, _)) = path.rsplit_once('/') {
                let mut d = root.clone();
                for comp in dir.split('/') {
                    d = match d.open_dir(comp) {
                        Ok(x) => x,
                        Err(_) => d
                            .create_dir(comp)
                            .map_err(fat("creating a directory on the ESP"))?,
                    };
                }
            }
            let mut f = root
                .create_file(path)
                .map_err(fat("creating a file on the ESP"))?;
            f.truncate().map_err(fat("truncating a file on the ESP"))?;
            f.write_all(data).map_err(|e| UefiError::Fat {
                action: "writing a file on the ESP",
                why: format!("{path}: {e}"),
            })?;
            f.flush().map_err(fat("writing a file on the ESP"))?;
            written.push(EspFile {
                path: path.clone(),
                bytes: data.len() as u64,
                what: what.to_string(),
            });
        }
    }
    fs.unmount().map_err(fat("closing the ESP"))?;
    super::fat_repair::repair_directories(out, esp.start_bytes(), esp.len_bytes())?;

    // Read everything back through fatfs: what the firmware will find.
    let fs = fatfs::FileSystem::new(window(), fatfs::FsOptions::new())
        .map_err(fat("re-opening the ESP"))?;
    for (path, data, _) in &layout {
        let mut back = Vec::with_capacity(data.len());
        fs.root_dir()
            .open_file(path)
            .and_then(|mut f| f.read_to_end(&mut back))
            .map_err(fat("reading back a file of the ESP"))?;
        if back != *data {
            return Err(UefiError::Fat {
                action: "checking the ESP",
                why: format!("{path} reads back different from what was written"),
            });
        }
    }
    drop(fs);

    for f in &written {
        report.change(
            STEP,
            &format!("{ESP_MOUNT_POINT}/{}", f.path),
            format!(
                "written to the new EFI System Partition ({} bytes): {}",
                f.bytes, f.what
            ),
            format!("UEFI boot chain from {}", efi.origin),
            None,
        );
    }
    Ok(EspSummary {
        serial: fat_serial_text(plan.esp_volume_id),
        fat_type: fat_type.to_string(),
        distro_dir: distro,
        origin: efi.origin.clone(),
        signed: efi.shim.is_some() && efi.signed,
        files: written,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stub_text_and_uuid_check() {
        let s = grub_stub("2b1f6c3e-7d4a-4e59-9c1b-0a5e8f3d2c71", 1).unwrap();
        assert_eq!(
            s,
            "search.fs_uuid 2b1f6c3e-7d4a-4e59-9c1b-0a5e8f3d2c71 root hd0,gpt1\n\
             set prefix=($root)'/boot/grub'\n\
             configfile $prefix/grub.cfg\n"
        );
        for bad in [
            "",
            "x",
            "2b1f6c3e-7d4a-4e59-9c1b-0a5e8f3d2c7;",
            "2b1f6c3e 7d4a-4e59-9c1b-0a5e8f3d2c71",
        ] {
            assert!(
                matches!(grub_stub(bad, 1), Err(UefiError::BadRootUuid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn csv_is_utf16_with_bom() {
        let c = boot_csv("debian");
        assert_eq!(&c[..2], &[0xFF, 0xFE]);
        let text: Vec<u16> = c[2..]
            .chunks(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(
            String::from_utf16(&text).unwrap(),
            "shimx64.efi,debian,,This is the boot entry for debian\n"
        );
    }
}
