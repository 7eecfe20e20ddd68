//! Source inspection: what is this image (bare filesystem or partitioned disk), which
//! filesystem, which guest, and which Xen-isms it carries.
//!
//! [`inspect`] never writes: the image is opened read-only. Anything that is not an
//! ext2/3/4 guest root is a typed [`InspectError`] that names what was found, so the
//! user learns *why* (an XFS filesystem, an LVM physical volume, a truncated copy...).
//!
//! Submodules, one on-disk structure each: [`elf`] (the ext superblock and group
//! descriptors are in [`crate::ext`]); [`probe`] recognises foreign signatures; [`guest`] reads the guest's configuration.

pub mod elf;
pub mod guest;
pub mod probe;
pub mod summary;
pub mod volumes;

pub use crate::ext::superblock::{ExtKind, Features, FsInfo, Superblock};
pub use elf::Arch;
pub use guest::{GuestInfo, InitSystem, KernelInfo, OsRelease, XenIsm, XenIsmKind};
pub use probe::Foreign;
pub use volumes::{SourceDisk, Volume, VolumeAction, VolumeContent, VolumeSource};

use crate::blockio::{Region, SourceFormat};
use crate::bytes::{Fields, ParseError};
use crate::ext::read::{ExtReadError, ExtReader};
use crate::ext::superblock;
use crate::formats::{self, FormatError, OpenOptions, Opened};
use crate::partition::{self, PartitionError, PartitionTable};
use crate::vm::VmFacts;
use std::path::{Path, PathBuf};

/// How the guest filesystem sits in the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum Container {
    /// The image is the filesystem (the usual Xen PV export: `xvda1` as a file).
    Bare,
    /// A partitioned disk; `root_partition` is the 1-based number of the guest root.
    Partitioned {
        table: PartitionTable,
        root_partition: usize,
    },
    /// The root is LVM2 logical volume `vg`/`lv` on physical volumes of the disks given;
    /// `table` is the main disk's partition table (`None` when the disk is a PV itself).
    LogicalVolume {
        table: Option<PartitionTable>,
        vg: String,
        lv: String,
    },
}

/// Everything known about a source image after inspection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Inspection {
    /// The image file.
    #[serde(serialize_with = "crate::serde_path::lossy")]
    pub image: PathBuf,
    /// The disk's size in bytes (the virtual size for a container format).
    pub image_size: u64,
    /// What holds the disk: a raw image, a block device, an XVA, a VHD, a qcow2 image, a
    /// compressed image.
    pub format: SourceFormat,
    /// What the container says of the machine (XVA: `ova.xml`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm: Option<VmFacts>,
    /// The opened disk, kept so the conversion reads the same source (an XVA indexed once,
    /// a compressed image decompressed once).
    #[serde(skip)]
    pub(crate) disk: Option<Region>,
    pub container: Container,
    /// Byte offset of the root filesystem in the image.
    pub fs_offset: u64,
    /// Length of the root filesystem in bytes (`blocks_count * block_size`).
    pub fs_len: u64,
    /// What the superblock says.
    pub fs: FsInfo,
    /// What the guest is.
    pub guest: GuestInfo,
    /// The Xen device name of the source (`xvda` for a partitioned disk, `xvda2` for a
    /// bare filesystem), as given or as the root's fstab names it.
    pub xen_device: Option<String>,
    /// The other disks of the guest: those the source's container holds besides the one
    /// read (an XVA's other VDIs, in device order), then the images given, in order.
    pub disks: Vec<SourceDisk>,
    /// Every volume of the guest (the root among them), in source order, each with what
    /// the conversion does with it.
    pub volumes: Vec<Volume>,
    /// The domain config the guest's disks were taken from: each disk, the image used for
    /// it and how it was found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xen_config: Option<crate::xen_config::XenGuest>,
    /// The root filesystem's bytes when they are not one range of the main disk (a
    /// logical volume).
    #[serde(skip)]
    pub(crate) root_region: Option<Region>,
}

impl Inspection {
    /// Index of the guest root in [`Inspection::volumes`].
    pub fn root_volume(&self) -> Option<usize> {
        self.volumes
            .iter()
            .position(|v| v.action == VolumeAction::Root)
    }

    /// The filesystem the guest mounts at `/boot`, when it is a volume of its own.
    pub fn boot_volume(&self) -> Option<usize> {
        self.volumes
            .iter()
            .position(|v| v.action == VolumeAction::Boot)
    }

    /// Reopen the root filesystem's byte range, read-only.
    pub fn open_fs(&self) -> Result<Region, InspectError> {
        if let Some(r) = &self.root_region {
            return Ok(r.clone());
        }
        let whole = match &self.disk {
            Some(d) => d.clone(),
            None => open_region(&self.image, &OpenOptions::default())?.region,
        };
        whole
            .sub(self.fs_offset, self.fs_len)
            .map_err(|source| InspectError::Io {
                action: "cannot reopen the filesystem range of",
                path: self.image.clone(),
                source,
            })
    }

    /// Where the filesystem is, in words ("the image", "partition 2").
    pub fn place(&self) -> String {
        match &self.container {
            Container::Bare => "the image".to_string(),
            Container::Partitioned { root_partition, .. } => format!("partition {root_partition}"),
            Container::LogicalVolume { vg, lv, .. } => format!("logical volume {vg}/{lv}"),
        }
    }

    /// The volume groups whose logical volumes become plain partitions, each with its
    /// carried volumes (`(LV name, volume index)`), in the order found.
    pub fn flattened_groups(&self) -> Vec<(String, Vec<(String, usize)>)> {
        let mut groups: Vec<(String, Vec<(String, usize)>)> = Vec::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let Some((vg, lv)) = v.logical_volume() else {
                continue;
            };
            if !v.action.carried() {
                continue;
            }
            match groups.iter_mut().find(|g| g.0 == vg) {
                Some(g) => g.1.push((lv.to_string(), i)),
                None => groups.push((vg.to_string(), vec![(lv.to_string(), i)])),
            }
        }
        groups
    }

    /// Refuse a filesystem whose journal needs recovery unless the caller chose to
    /// replay it on the output copy (`--replay-journal`).
    pub fn check_journal(&self, replay_journal: bool) -> Result<(), InspectError> {
        if self.fs.needs_recovery && !replay_journal {
            let target = if self.fs_offset == 0 {
                "copy.img".to_string()
            } else {
                format!("'copy.img?offset={}'", self.fs_offset)
            };
            return Err(InspectError::DirtyJournal {
                path: self.image.clone(),
                fsck_target: target,
            });
        }
        Ok(())
    }

    /// Why the filesystem's allocation bitmaps cannot be trusted, if they cannot: it was
    /// not cleanly unmounted, or the kernel recorded errors in it. A journal that needs
    /// recovery is [`Inspection::check_journal`]'s case (its replay repairs the copy too).
    pub fn unclean(&self) -> Option<&'static str> {
        if self.fs.needs_recovery {
            None
        } else if !self.fs.clean {
            Some("was not cleanly unmounted (its state is \"not clean\")")
        } else if self.fs.errors {
            Some("has errors recorded by the kernel (its state has \"errors\")")
        } else {
            None
        }
    }

    /// Refuse a filesystem whose bitmaps cannot be trusted ([`Inspection::unclean`])
    /// unless the caller chose to repair the output copy (`--repair`): the graft
    /// allocates from those bitmaps, and stale ones would let it overwrite files.
    pub fn check_clean(&self, repair: bool) -> Result<(), InspectError> {
        match self.unclean() {
            Some(state) if !repair => Err(InspectError::Unclean {
                path: self.image.clone(),
                state,
                fsck_target: if self.fs_offset == 0 {
                    "copy.img".to_string()
                } else {
                    format!("'copy.img?offset={}'", self.fs_offset)
                },
            }),
            _ => Ok(()),
        }
    }
}

/// Why an image cannot be converted, naming what was found.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file or block device", path.display())]
    NotAFile { path: PathBuf },
    #[error("{} is empty (0 bytes): nothing to convert", path.display())]
    Empty { path: PathBuf },
    #[error("{} is {size} bytes, too small to hold a filesystem", path.display())]
    TooSmall { path: PathBuf, size: u64 },
    #[error("{} is truncated: the ext filesystem in {place} claims {fs_bytes} bytes but only {available} bytes are there (incomplete copy or download?)", path.display())]
    Truncated {
        path: PathBuf,
        place: String,
        fs_bytes: u64,
        available: u64,
    },
    #[error("{place} of {} holds {found}, not an ext2/3/4 filesystem: {}", path.display(), found.advice())]
    Foreign {
        path: PathBuf,
        place: String,
        found: Foreign,
    },
    #[error("{place} of {} holds no recognisable filesystem or partition table ({})", path.display(), if *zeros { "its first 68 KiB are all zeros" } else { "unknown data" })]
    Unrecognized {
        path: PathBuf,
        place: String,
        zeros: bool,
    },
    #[error("{place} of {} has a corrupt ext superblock: {source}", path.display())]
    Corrupt {
        path: PathBuf,
        place: String,
        #[source]
        source: ParseError,
    },
    #[error("the ext filesystem in {place} of {} uses {feature}, which imgconv cannot carry: {why}", path.display())]
    Unsupported {
        path: PathBuf,
        place: String,
        feature: String,
        why: &'static str,
    },
    #[error("no guest root filesystem (an ext2/3/4 filesystem with /etc/fstab and an init) in {}: {}", path.display(), findings.join("; "))]
    NoGuestRoot {
        path: PathBuf,
        findings: Vec<String>,
    },
    #[error("the filesystem in {} was not cleanly unmounted: its journal holds transactions that were never replayed (needs_recovery). {} itself is never modified: the journal can be replayed with e2fsck in the converted copy only, or on a copy made by hand (cp the image to copy.img, run e2fsck -fy {fsck_target}) that is then converted", path.display(), path.display())]
    DirtyJournal { path: PathBuf, fsck_target: String },
    #[error("the filesystem in {} {state}, so its allocation bitmaps may be stale and files written into it could overwrite guest data ({} itself is never modified); a repair of the converted copy with e2fsck -fy, or of a copy of the image ({fsck_target}), mends that", path.display(), path.display())]
    Unclean {
        path: PathBuf,
        state: &'static str,
        fsck_target: String,
    },
    #[error("{} holds no disk {member}", path.display())]
    NoMember { path: PathBuf, member: String },
    #[error("{name:?}, given for {}, is not a Xen disk name such as xvdb, xvdb1, sdb1 or hdb1", path.display())]
    BadXenDevice { path: PathBuf, name: String },
    #[error("two source disks are named {name} ({} and {})", first.display(), second.display())]
    DuplicateXenDevice {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(transparent)]
    Partition(#[from] PartitionError),
    /// A logical volume the guest uses cannot be read (not linear, or on a physical
    /// volume that was not given).
    #[error(transparent)]
    Lvm(Box<crate::lvm::LvmError>),
    #[error(transparent)]
    ExtRead(#[from] ExtReadError),
    #[error(transparent)]
    Format(#[from] FormatError),
}

fn open_region(path: &Path, opts: &OpenOptions) -> Result<Opened, InspectError> {
    Ok(formats::open(path, opts)?)
}

/// Open another disk of the guest: its image, or the disk it names inside a container.
fn open_disk(d: &SourceDisk, opts: &OpenOptions) -> Result<Region, InspectError> {
    let opened = open_region(&d.path, opts)?;
    let Some(member) = &d.member else {
        return Ok(opened.region);
    };
    if opened.id.as_ref() == Some(member) {
        return Ok(opened.region);
    }
    opened
        .others
        .into_iter()
        .find(|m| &m.id == member)
        .map(|m| m.region)
        .ok_or_else(|| InspectError::NoMember {
            path: d.path.clone(),
            member: member.clone(),
        })
}

/// What the start of a region holds.
enum Probe {
    Ext(Box<Superblock>),
    /// The ext magic is there but the superblock does not hold together.
    BadExt(ParseError),
    Foreign(Foreign),
    Zeros,
    Unknown,
}

fn probe_region(region: &Region, path: &Path) -> Result<Probe, InspectError> {
    let head = probe::read_head(region).map_err(|source| InspectError::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source,
    })?;
    let sb_off = superblock::SUPERBLOCK_OFFSET as usize;
    if let Some(raw) = head.get(sb_off..sb_off + superblock::SUPERBLOCK_SIZE) {
        if Fields::new("ext superblock", raw).u16("s_magic", 0x38) == Ok(superblock::EXT_MAGIC) {
            return Ok(match Superblock::parse(raw) {
                Ok(sb) => Probe::Ext(Box::new(sb)),
                Err(e) => Probe::BadExt(e),
            });
        }
    }
    Ok(if let Some(f) = probe::identify(&head) {
        Probe::Foreign(f)
    } else if probe::all_zero(&head) {
        Probe::Zeros
    } else {
        Probe::Unknown
    })
}

/// Read and validate the superblock of the filesystem in `region`.
pub fn read_superblock(region: &Region) -> Result<Superblock, InspectError> {
    let path = region.path().to_path_buf();
    let place = "the region".to_string();
    match probe_region(region, &path)? {
        Probe::Ext(sb) => Ok(*sb),
        Probe::BadExt(source) => Err(InspectError::Corrupt {
            path,
            place,
            source,
        }),
        Probe::Foreign(found) => Err(InspectError::Foreign { path, place, found }),
        Probe::Zeros => Err(InspectError::Unrecognized {
            path,
            place,
            zeros: true,
        }),
        Probe::Unknown => Err(InspectError::Unrecognized {
            path,
            place,
            zeros: false,
        }),
    }
}

/// Inspect the filesystem in `region` as a bare guest root (container [`Container::Bare`],
/// `fs_offset` = the region's offset in its file). For example the output's partition 1
/// after its journal was replayed, to read the guest as it now is.
pub fn inspect_region(region: &Region) -> Result<Inspection, InspectError> {
    let path = region.path().to_path_buf();
    let place = "the region".to_string();
    let sb = read_superblock(region)?;
    let (fs, guest) = open_root(region, &sb, &path, &place)?;
    Ok(Inspection {
        image: path,
        image_size: region.source_size(),
        format: region.format(),
        vm: None,
        disk: None,
        container: Container::Bare,
        fs_offset: region.offset(),
        fs_len: fs.len(),
        fs: sb.info(),
        guest,
        xen_device: None,
        disks: Vec::new(),
        root_region: None,
        volumes: vec![{
            let mut v = Volume::new("the region", VolumeSource::Disk { disk: 0 }, 0, fs);
            v.action = VolumeAction::Root;
            v.mount = Some("/".into());
            v
        }],
        xen_config: None,
    })
}

/// Inspect the image at `path`: find the guest root filesystem, read its superblock and
/// the guest's configuration. The file is opened read-only and never written; a
/// compressed image is decompressed into the system's temporary directory.
pub fn inspect(path: &Path) -> Result<Inspection, InspectError> {
    inspect_with(path, &OpenOptions::default())
}

/// [`inspect`], with a compressed image decompressed where `opts` says.
pub fn inspect_with(path: &Path, opts: &OpenOptions) -> Result<Inspection, InspectError> {
    inspect_guest(path, opts, None, &[])
}

/// Inspect a guest made of the image at `path` (the disk holding its root, or one of the
/// disks holding the LVM2 volume group its root is on), whose Xen device name is
/// `xen_device` (guessed from the root's fstab when `None`), and its other disk images
/// `disks`: every volume of every disk is listed (the logical volumes of the LVM2
/// physical volumes among them too), matched to the guest's fstab and given its action.
/// A container holding several disks (an XVA) gives its other disks first, under the
/// names it records for them (`xvdb` for userdevice 1).
/// A logical volume that the guest mounts (or is its root) but that cannot be read is
/// refused ([`InspectError::Lvm`]). Every image is opened read-only.
pub fn inspect_guest(
    path: &Path,
    opts: &OpenOptions,
    xen_device: Option<&str>,
    disks: &[SourceDisk],
) -> Result<Inspection, InspectError> {
    let opened = open_main(path, opts)?;
    let whole = opened.region.clone();
    let main = match inspect_disk(path, &whole) {
        Ok(i) => Ok(i),
        // The root may be a logical volume on one of the disks.
        Err(e @ (InspectError::NoGuestRoot { .. } | InspectError::Foreign { .. })) => Err(e),
        Err(e) => return Err(e),
    };
    let table = match &main {
        Ok(Inspection {
            container: Container::Partitioned { table, .. },
            ..
        }) => Some(table.clone()),
        Ok(_) => None,
        Err(_) => partition::read_table(&whole)?,
    };
    let mut vols = match (&table, &main) {
        (Some(t), _) => volumes::partition_volumes(0, &whole, t, None),
        (None, Ok(i)) => vec![Volume::new(
            "the image",
            VolumeSource::Disk { disk: 0 },
            0,
            i.open_fs()?,
        )],
        (None, Err(_)) => vec![Volume::new(
            "the image",
            VolumeSource::Disk { disk: 0 },
            0,
            whole.clone(),
        )],
    };
    // The container's other disks (an XVA's other VDIs) come first, then those given.
    let mut all_disks: Vec<SourceDisk> = opened
        .others
        .iter()
        .map(|m| SourceDisk::member(path, &m.xen_device, &m.id))
        .collect();
    all_disks.extend_from_slice(disks);
    let mut extra_names = Vec::new();
    for (i, d) in all_disks.iter().enumerate() {
        let region = match opened.others.get(i) {
            Some(m) => m.region.clone(),
            None => open_disk(d, opts)?,
        };
        vols.extend(volumes::disk_volumes(i + 1, d, &region)?);
        let name =
            volumes::XenName::parse(&d.xen_device).ok_or_else(|| InspectError::BadXenDevice {
                path: d.path.clone(),
                name: d.xen_device.clone(),
            })?;
        extra_names.push((name, d.path.clone()));
    }
    let lvm_problems = volumes::add_logical_volumes(&mut vols);
    let (mut inspection, root) = match main {
        Ok(i) => {
            let root = vols.iter().position(|v| match (&i.container, &v.source) {
                (Container::Bare, VolumeSource::Disk { disk: 0 }) => true,
                (
                    Container::Partitioned { root_partition, .. },
                    VolumeSource::Partition {
                        disk: 0, number, ..
                    },
                ) => number == root_partition,
                _ => false,
            });
            (i, root)
        }
        Err(e) => {
            let (i, root) = lvm_root(path, &whole, table.clone(), &vols, e)?;
            (i, Some(root))
        }
    };
    inspection.format = whole.format();
    inspection.vm = opened.vm;
    inspection.disk = Some(whole);
    let fstab = inspection
        .open_fs()
        .ok()
        .and_then(|fs| ExtReader::open(fs, path.display().to_string()).ok())
        .and_then(|r| r.read_file("/etc/fstab", 1 << 20).ok().flatten())
        .map(|b| volumes::parse_fstab(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let partitioned = table.is_some();
    let main_name = match xen_device {
        Some(d) => {
            let d = d.strip_prefix("/dev/").unwrap_or(d);
            Some(
                volumes::XenName::parse(d)
                    .ok_or_else(|| InspectError::BadXenDevice {
                        path: path.to_path_buf(),
                        name: d.to_string(),
                    })?
                    .text(),
            )
        }
        None => volumes::guess_main_device(&fstab, partitioned),
    };
    for v in &mut vols {
        v.xen_device = match (&v.source, &main_name) {
            (
                VolumeSource::Partition {
                    disk: 0, number, ..
                },
                Some(d),
            ) => Some(format!("{d}{number}")),
            (VolumeSource::Disk { disk: 0 }, d) => d.clone(),
            _ => v.xen_device.take(),
        };
    }
    let mut names: Vec<(String, PathBuf)> = main_name
        .iter()
        .map(|n| (n.clone(), path.to_path_buf()))
        .collect();
    for (name, disk_path) in extra_names {
        // One disk (xvdb) and a partition of it (xvdb1), or one name twice, cannot both be.
        if let Some((_, first)) = names.iter().find(|(n, _)| {
            volumes::XenName::parse(n).is_some_and(|n| {
                n.letters == name.letters
                    && (n.partition.is_none() || name.partition.is_none() || n == name)
            })
        }) {
            return Err(InspectError::DuplicateXenDevice {
                name: name.text(),
                first: first.clone(),
                second: disk_path,
            });
        }
        names.push((name.text(), disk_path));
    }
    volumes::assign_actions(&mut vols, root, &fstab);
    // A logical volume the guest mounts (or swaps on) must be carried.
    if let Some(e) = vols
        .iter()
        .filter(|v| v.mount.is_some())
        .find_map(|v| v.refusal())
    {
        return Err(InspectError::Lvm(Box::new(crate::lvm::LvmError::Volume(
            e.clone(),
        ))));
    }
    inspection
        .guest
        .warnings
        .extend(lvm_problems.iter().map(ToString::to_string));
    inspection.xen_device = main_name;
    inspection.disks = all_disks;
    inspection.volumes = vols;
    Ok(inspection)
}

/// Inspect a guest whose disks come from a domain config ([`crate::xen_config::XenGuest`]):
/// its root disk as the main source under the config's device name, the config's other
/// disks and then `more` as its other disks. The config's facts become
/// [`Inspection::vm`] (they describe the machine better than a container's), the disks
/// and their notes [`Inspection::xen_config`].
pub fn inspect_xen_guest(
    guest: &crate::xen_config::XenGuest,
    opts: &OpenOptions,
    more: &[SourceDisk],
) -> Result<Inspection, InspectError> {
    let main = guest.main();
    let mut disks = guest.other_disks();
    disks.extend_from_slice(more);
    let mut inspection = inspect_guest(&main.path, opts, Some(&main.vdev), &disks)?;
    inspection.vm = Some(guest.vm.clone());
    inspection.xen_config = Some(guest.clone());
    Ok(inspection)
}

/// The guest root among the logical volumes of `vols`, when the main disk held none
/// (`not_found` says what it held): the first ext filesystem on a logical volume that is
/// a guest root. When none is, and a logical volume could not be read, the root may be
/// that one: it is refused by name.
fn lvm_root(
    path: &Path,
    whole: &Region,
    table: Option<PartitionTable>,
    vols: &[Volume],
    not_found: InspectError,
) -> Result<(Inspection, usize), InspectError> {
    let mut findings = Vec::new();
    for (i, v) in vols.iter().enumerate() {
        let (Some((vg, lv)), Some(region)) = (v.logical_volume(), v.region()) else {
            continue;
        };
        let place = format!("logical volume {vg}/{lv}");
        let Ok(Probe::Ext(sb)) = probe_region(region, path) else {
            continue;
        };
        match open_root(region, &sb, path, &place) {
            Ok((fs, guest)) => {
                let container = Container::LogicalVolume {
                    table,
                    vg: vg.to_string(),
                    lv: lv.to_string(),
                };
                let mut inspection = finish(path, whole, container, 0, &sb, fs.clone(), guest)?;
                inspection.root_region = Some(fs);
                return Ok((inspection, i));
            }
            Err(InspectError::NoGuestRoot { findings: f, .. }) => findings.extend(f),
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = vols.iter().find_map(Volume::refusal) {
        return Err(InspectError::Lvm(Box::new(crate::lvm::LvmError::Volume(
            e.clone(),
        ))));
    }
    Err(match not_found {
        InspectError::NoGuestRoot {
            path,
            findings: mut f,
        } if !findings.is_empty() => {
            f.extend(findings);
            InspectError::NoGuestRoot { path, findings: f }
        }
        InspectError::Foreign {
            path,
            found: Foreign::Lvm2,
            ..
        } if !findings.is_empty() => InspectError::NoGuestRoot { path, findings },
        e => e,
    })
}

fn open_main(path: &Path, opts: &OpenOptions) -> Result<Opened, InspectError> {
    let meta = std::fs::metadata(path).map_err(|source| InspectError::Io {
        action: "cannot stat",
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(InspectError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    open_region(path, opts)
}

fn inspect_disk(path: &Path, whole: &Region) -> Result<Inspection, InspectError> {
    let whole = whole.clone();
    if whole.is_empty() {
        return Err(InspectError::Empty {
            path: path.to_path_buf(),
        });
    }
    let place = "the image".to_string();
    match probe_region(&whole, path)? {
        Probe::Ext(sb) => {
            let (fs, guest) = open_root(&whole, &sb, path, &place)?;
            return finish(path, &whole, Container::Bare, 0, &sb, fs, guest);
        }
        Probe::BadExt(source) => {
            return Err(InspectError::Corrupt {
                path: path.to_path_buf(),
                place,
                source,
            })
        }
        _ => {}
    }
    if whole.len() < 2048 {
        return Err(match probe_region(&whole, path)? {
            Probe::Foreign(found) => InspectError::Foreign {
                path: path.to_path_buf(),
                place,
                found,
            },
            _ => InspectError::TooSmall {
                path: path.to_path_buf(),
                size: whole.len(),
            },
        });
    }
    if let Some(table) = partition::read_table(&whole)? {
        return inspect_partitioned(path, &whole, table);
    }
    Err(match probe_region(&whole, path)? {
        Probe::Foreign(found) => InspectError::Foreign {
            path: path.to_path_buf(),
            place,
            found,
        },
        Probe::Zeros => InspectError::Unrecognized {
            path: path.to_path_buf(),
            place,
            zeros: true,
        },
        _ => InspectError::Unrecognized {
            path: path.to_path_buf(),
            place,
            zeros: false,
        },
    })
}

fn inspect_partitioned(
    path: &Path,
    whole: &Region,
    table: PartitionTable,
) -> Result<Inspection, InspectError> {
    let mut findings = Vec::new();
    let mut first_foreign: Option<(usize, Foreign)> = None;
    let mut saw_ext = false;
    for entry in &table.entries {
        let place = format!("partition {}", entry.number);
        let region = whole
            .sub(entry.start, entry.len)
            .map_err(|source| InspectError::Io {
                action: "cannot read a partition of",
                path: path.to_path_buf(),
                source,
            })?;
        match probe_region(&region, path)? {
            Probe::Ext(sb) => match open_root(&region, &sb, path, &place) {
                Ok((fs, guest)) => {
                    let container = Container::Partitioned {
                        root_partition: entry.number,
                        table: table.clone(),
                    };
                    return finish(path, whole, container, entry.start, &sb, fs, guest);
                }
                Err(InspectError::NoGuestRoot { findings: f, .. }) => {
                    saw_ext = true;
                    findings.extend(f)
                }
                // A truncated or unsupported ext partition that is not the root would
                // not matter, but we cannot tell whether it is the root: report it.
                Err(e) => return Err(e),
            },
            Probe::BadExt(e) => {
                saw_ext = true;
                findings.push(format!("{place}: corrupt ext superblock ({e})"))
            }
            Probe::Foreign(f) => {
                findings.push(format!("{place}: {f}"));
                first_foreign.get_or_insert((entry.number, f));
            }
            Probe::Zeros => findings.push(format!("{place}: empty (zeros)")),
            Probe::Unknown => findings.push(format!("{place}: unrecognised data")),
        }
    }
    if table.entries.is_empty() {
        findings.push("the partition table has no partitions".into());
    }
    match first_foreign {
        Some((n, found)) if !saw_ext => Err(InspectError::Foreign {
            path: path.to_path_buf(),
            place: format!("partition {n}"),
            found,
        }),
        _ => Err(InspectError::NoGuestRoot {
            path: path.to_path_buf(),
            findings,
        }),
    }
}

/// Check an ext filesystem's features and size, open it, and make sure it is a guest root.
fn open_root(
    region: &Region,
    sb: &Superblock,
    path: &Path,
    place: &str,
) -> Result<(Region, GuestInfo), InspectError> {
    if let Some((feature, why)) = sb.unsupported_feature() {
        return Err(InspectError::Unsupported {
            path: path.to_path_buf(),
            place: place.to_string(),
            feature,
            why,
        });
    }
    if sb.fs_bytes() > region.len() {
        return Err(InspectError::Truncated {
            path: path.to_path_buf(),
            place: place.to_string(),
            fs_bytes: sb.fs_bytes(),
            available: region.len(),
        });
    }
    let fs_region = region
        .sub(0, sb.fs_bytes())
        .map_err(|source| InspectError::Io {
            action: "cannot read",
            path: path.to_path_buf(),
            source,
        })?;
    let label = format!("{} ({place})", path.display());
    let mut warnings = Vec::new();
    let reader = match ExtReader::open(fs_region.clone(), label.clone()) {
        Ok(r) => r,
        Err(ExtReadError::Journal { source, .. }) if sb.needs_recovery() => {
            warnings.push(format!(
                "the journal needs recovery and cannot be replayed in memory ({source}); the guest was inspected as it is on disk, without its last journal transactions"
            ));
            ExtReader::open_unreplayed(fs_region.clone(), label)?
        }
        Err(e) => return Err(e.into()),
    };
    if !guest::looks_like_root(&reader) {
        let fs = format!(
            "{} filesystem{}",
            sb.kind(),
            match sb.info().label.as_str() {
                "" => String::new(),
                l => format!(" labelled {l:?}"),
            }
        );
        // Say why when /etc/fstab is there but unreadable (a symlink loop, a corrupt
        // inode), rather than that it is missing.
        let finding = match reader.metadata("/etc/fstab") {
            Err(e) => format!("{place}: {fs} whose /etc/fstab cannot be read: {e}"),
            Ok(_) => format!("{place}: {fs} without /etc/fstab and an init"),
        };
        return Err(InspectError::NoGuestRoot {
            path: path.to_path_buf(),
            findings: vec![finding],
        });
    }
    let mut guest = guest::inspect_guest(&reader);
    guest.warnings.splice(0..0, warnings);
    Ok((fs_region, guest))
}

fn finish(
    path: &Path,
    whole: &Region,
    container: Container,
    fs_offset: u64,
    sb: &Superblock,
    fs_region: Region,
    guest: GuestInfo,
) -> Result<Inspection, InspectError> {
    Ok(Inspection {
        image: path.to_path_buf(),
        image_size: whole.len(),
        format: whole.format(),
        vm: None,
        disk: None,
        container,
        fs_offset,
        fs_len: fs_region.len(),
        fs: sb.info(),
        guest,
        xen_device: None,
        disks: Vec::new(),
        volumes: Vec::new(),
        xen_config: None,
        root_region: None,
    })
}
