//! LVM2 inside a guest's disk images, read without device-mapper and without root.
//!
//! A physical volume (PV) is a partition or disk whose first sectors hold an LVM2 label
//! ([`label`]); the label points at metadata areas ([`mda`]) holding the volume group's
//! description as text ([`text`]). A volume group (VG) is assembled from the PVs found
//! (each named by its UUID in the metadata; when the copies disagree the one with the
//! highest `seqno` wins), and each linear logical volume (LV) becomes a [`Region`] that
//! reads its extents from the PVs in order ([`open`]). Everything else LVM can build
//! (striped, mirrored, RAID, thin, snapshot, cache volumes) is refused with an
//! [`LvError`] naming the volume and its type; a volume on a PV that was not given is
//! refused naming the PV. See `docs/lvm.md` for the format facts and what converting
//! ("flattening") means for the guest.

pub mod crc;
pub mod label;
pub mod mda;
pub mod text;

#[cfg(test)]
mod tests;

use crate::blockio::{BlockSource, Region, SourceFormat};
use crate::bytes::ParseError;
use label::PvLabel;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use text::Section;

/// LVM's sector, the unit of `extent_size` and `pe_start` in the metadata.
pub const SECTOR: u64 = 512;

/// A PV label or metadata area that cannot be trusted.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    /// A field is truncated or holds an impossible value.
    #[error(transparent)]
    Field(#[from] ParseError),
    /// A stored checksum differs from the one computed over the data.
    #[error("{structure}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum {
        /// The structure.
        structure: &'static str,
        /// The checksum on disk.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A location or size that does not fit where it must.
    #[error("{0}")]
    Bounds(String),
    /// The metadata text does not parse.
    #[error(transparent)]
    Text(#[from] text::TextError),
}

/// What kind of volume LVM made, when it is not one this reader maps.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Unsupported {
    /// Striped over several PVs or areas (`type = "striped"`, `stripe_count` > 1).
    Striped {
        /// `stripe_count`.
        stripes: u64,
    },
    /// A mirror (`type = "mirror"`).
    Mirror,
    /// A RAID volume (`type = "raid1"`, `"raid5_ls"`, ...).
    Raid {
        /// The segment type.
        level: String,
    },
    /// A thin volume (`type = "thin"`).
    Thin,
    /// A thin pool (`type = "thin-pool"`).
    ThinPool,
    /// A snapshot: its blocks are the copy-on-write store of an origin.
    Snapshot {
        /// The origin volume.
        origin: String,
    },
    /// The origin of snapshots.
    SnapshotOrigin {
        /// The snapshot volumes.
        snapshots: Vec<String>,
    },
    /// A cached volume or cache pool (`cache`, `cache-pool`, `writecache`).
    Cache {
        /// The segment type.
        segment_type: String,
    },
    /// Any other segment type (`vdo`, `integrity`, `error`, `zero`, ...).
    Other {
        /// The segment type.
        segment_type: String,
    },
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Striped { stripes } => write!(f, "striped ({stripes} stripes)"),
            Unsupported::Mirror => write!(f, "mirrored"),
            Unsupported::Raid { level } => write!(f, "a RAID volume ({level})"),
            Unsupported::Thin => write!(f, "a thin volume"),
            Unsupported::ThinPool => write!(f, "a thin pool"),
            Unsupported::Snapshot { origin } => write!(f, "a snapshot of {origin}"),
            Unsupported::SnapshotOrigin { snapshots } => {
                write!(f, "the origin of snapshot(s) {}", snapshots.join(", "))
            }
            Unsupported::Cache { segment_type } => write!(f, "a cache volume ({segment_type})"),
            Unsupported::Other { segment_type } => {
                write!(f, "of segment type {segment_type:?}")
            }
        }
    }
}

/// Why one logical volume cannot be read. Kept per volume: the others of the group stay
/// usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LvError {
    /// The volume is not linear.
    #[error("logical volume {vg}/{lv} is {kind}; only linear volumes can be converted")]
    Unsupported {
        /// Volume group name.
        vg: String,
        /// Volume name.
        lv: String,
        /// What it is.
        kind: Unsupported,
    },
    /// The volume has extents on a PV that is not among the disks given.
    #[error(
        "logical volume {vg}/{lv} lies partly on physical volume {pv_uuid} (last seen as {device}), which is not among the disks given"
    )]
    MissingPv {
        /// Volume group name.
        vg: String,
        /// Volume name.
        lv: String,
        /// The PV's UUID as the metadata writes it.
        pv_uuid: String,
        /// The device name the metadata last recorded for the PV.
        device: String,
    },
    /// The volume's description is inconsistent.
    #[error("logical volume {vg}/{lv}: {why}")]
    Corrupt {
        /// Volume group name.
        vg: String,
        /// Volume name.
        lv: String,
        /// What is wrong.
        why: String,
    },
}

/// A failure reading LVM2 structures.
#[derive(Debug, thiserror::Error)]
pub enum LvmError {
    /// Reading a PV failed.
    #[error("cannot read the LVM physical volume in {place}: {source}")]
    Io {
        /// Where the PV is (as the caller named it).
        place: String,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// A PV label or metadata area is damaged.
    #[error("damaged LVM physical volume in {place}: {source}")]
    Corrupt {
        /// Where the PV is.
        place: String,
        /// What is damaged.
        #[source]
        source: Corrupt,
    },
    /// The same PV UUID is on two of the disks given.
    #[error("LVM physical volume {pv_uuid} is in both {place} and {other}")]
    DuplicatePv {
        /// The PV UUID.
        pv_uuid: String,
        /// The place ignored.
        place: String,
        /// The place used.
        other: String,
    },
    /// The volume group's metadata parses but does not describe a usable group.
    #[error("volume group {vg} (metadata in {place}): {why}")]
    Metadata {
        /// Volume group name.
        vg: String,
        /// Where the metadata copy used was.
        place: String,
        /// What is wrong.
        why: String,
    },
    /// A PV of the volume group is not among the disks given.
    #[error(
        "volume group {vg} spans physical volume {pv_uuid} (last seen as {device}), which is not among the disks given"
    )]
    MissingPv {
        /// Volume group name.
        vg: String,
        /// The PV's UUID as the metadata writes it.
        pv_uuid: String,
        /// The device name the metadata last recorded for the PV.
        device: String,
    },
    /// One volume cannot be read.
    #[error(transparent)]
    Volume(#[from] LvError),
}

/// One copy of a volume group's metadata, as found on a PV.
#[derive(Debug, Clone)]
pub struct MetadataCopy {
    /// The VG name (the name of the text's first section).
    pub vg_name: String,
    /// The VG UUID (`id`).
    pub vg_id: String,
    /// `seqno`: higher is newer.
    pub seqno: u64,
    /// The VG's section.
    pub vg: Section,
}

/// A PV found in a partition or disk.
#[derive(Debug, Clone)]
pub struct PhysicalVolume {
    /// Where it is, as the caller named it.
    pub place: String,
    /// Its bytes.
    pub region: Region,
    /// Its label.
    pub label: PvLabel,
    /// The metadata copies its areas hold (none for a PV made with no metadata areas, or
    /// one in no volume group).
    pub metadata: Vec<MetadataCopy>,
}

impl PhysicalVolume {
    /// Read the PV in `region`: `Ok(None)` when it holds no LVM2 label. Of several metadata
    /// areas a damaged one is skipped when another is intact (as LVM does); when none is
    /// intact the first failure is returned.
    pub fn read(place: &str, region: &Region) -> Result<Option<Self>, LvmError> {
        let io_err = |source| LvmError::Io {
            place: place.to_string(),
            source,
        };
        let corrupt = |source| LvmError::Corrupt {
            place: place.to_string(),
            source,
        };
        let head_len = region
            .len()
            .min((label::SCAN_SECTORS * label::SECTOR_SIZE) as u64);
        let head = region.read_vec(0, head_len, head_len).map_err(io_err)?;
        let Some(label) = label::find(&head).map_err(corrupt)? else {
            return Ok(None);
        };
        let mut metadata = Vec::new();
        let mut first_err = None;
        for area in &label.metadata_areas {
            match read_copy(region, area) {
                Ok(Some(c)) => metadata.push(c),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if metadata.is_empty() {
            if let Some(e) = first_err {
                return Err(match e {
                    ReadFail::Io(e) => io_err(e),
                    ReadFail::Corrupt(c) => corrupt(c),
                });
            }
        }
        Ok(Some(PhysicalVolume {
            place: place.to_string(),
            region: region.clone(),
            label,
            metadata,
        }))
    }

    /// The PV UUID in the dashed form the metadata uses.
    pub fn uuid(&self) -> String {
        dashed_uuid(&self.label.pv_uuid)
    }
}

enum ReadFail {
    Io(io::Error),
    Corrupt(Corrupt),
}

impl From<Corrupt> for ReadFail {
    fn from(c: Corrupt) -> Self {
        ReadFail::Corrupt(c)
    }
}

/// The metadata copy in one metadata area of a PV.
fn read_copy(region: &Region, area: &label::DiskArea) -> Result<Option<MetadataCopy>, ReadFail> {
    if area
        .offset
        .checked_add(area.size)
        .is_none_or(|end| end > region.len())
    {
        return Err(Corrupt::Bounds(format!(
            "metadata area of {} bytes at {} lies beyond the end of the {}-byte volume",
            area.size,
            area.offset,
            region.len()
        ))
        .into());
    }
    let head = region
        .read_vec(area.offset, mda::HEADER_SIZE, mda::HEADER_SIZE)
        .map_err(ReadFail::Io)?;
    let header = mda::MdaHeader::parse(&head, area.offset, area.size)?;
    let Some(loc) = header.current_text()? else {
        return Ok(None);
    };
    let mut bytes = Vec::with_capacity(loc.len() as usize);
    for (at, len) in loc.pieces {
        bytes.extend(
            region
                .read_vec(at, len, text::MAX_TEXT as u64)
                .map_err(ReadFail::Io)?,
        );
    }
    loc.verify(&bytes)?;
    let top = text::parse(&bytes).map_err(Corrupt::from)?;
    let Some((name, vg)) = top.sections().next() else {
        return Err(Corrupt::Bounds("the metadata text holds no volume group".into()).into());
    };
    let vg_id = vg
        .str("id")
        .ok_or_else(|| Corrupt::Bounds(format!("volume group {name} has no id")))?
        .to_string();
    let seqno = vg
        .int("seqno")
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| Corrupt::Bounds(format!("volume group {name} has no valid seqno")))?;
    Ok(Some(MetadataCopy {
        vg_name: name.to_string(),
        vg_id,
        seqno,
        vg: vg.clone(),
    }))
}

/// `bHIoxVyq75dE949C...` as `bHIoxV-yq75-dE94-...` (lvm2 `id_write_format`: groups of
/// 6, 4, 4, 4, 4, 4 and 6 characters).
pub fn dashed_uuid(plain: &str) -> String {
    let mut out = String::with_capacity(38);
    let mut rest = plain;
    for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
        let (a, b) = rest.split_at(n.min(rest.len()));
        if i > 0 && !a.is_empty() {
            out.push('-');
        }
        out.push_str(a);
        rest = b;
    }
    out.push_str(rest);
    out
}

fn plain_uuid(dashed: &str) -> String {
    dashed.chars().filter(|&c| c != '-').collect()
}

/// A PV of a volume group, as its metadata describes it, and where it was found.
#[derive(Debug, Clone)]
pub struct GroupPv {
    /// Its key in the metadata (`pv0`, `pv1`, ...).
    pub key: String,
    /// Its UUID, dashed.
    pub uuid: String,
    /// The device name the metadata last recorded (a hint only).
    pub device: Option<String>,
    /// Where the first extent starts, in bytes from the PV's start.
    pub pe_start: u64,
    /// Its number of extents.
    pub pe_count: u64,
    /// Where it was found, when it was.
    pub found: Option<(String, Region)>,
}

/// A piece of a logical volume: `len` bytes at `lv_offset` of the volume are `len` bytes at
/// `pv_offset` of `pv`.
#[derive(Debug, Clone)]
struct Piece {
    lv_offset: u64,
    len: u64,
    pv: Region,
    pv_offset: u64,
}

/// A logical volume that the guest may use.
#[derive(Debug, Clone)]
pub struct LogicalVolume {
    /// Its volume group's name.
    pub vg: String,
    /// Its name.
    pub name: String,
    /// Its UUID (`id`), dashed.
    pub uuid: String,
    /// Its size in bytes (all its extents).
    pub size: u64,
    /// Its segment types in order, for display (`striped`, `thin`, ...).
    pub segment_types: Vec<String>,
    layout: Result<Vec<Piece>, LvError>,
}

impl LogicalVolume {
    /// `/dev/VG/LV`.
    pub fn dev_path(&self) -> String {
        format!("/dev/{}/{}", self.vg, self.name)
    }

    /// `/dev/mapper/VG-LV`, with each dash inside the names doubled.
    pub fn mapper_path(&self) -> String {
        format!(
            "/dev/mapper/{}-{}",
            self.vg.replace('-', "--"),
            self.name.replace('-', "--")
        )
    }

    /// Whether `device` (from fstab, `root=`, ...) names this volume: `/dev/VG/LV` or
    /// `/dev/mapper/VG-LV`.
    pub fn is_named_by(&self, device: &str) -> bool {
        parse_device_name(device).is_some_and(|(vg, lv)| vg == self.vg && lv == self.name)
    }

    /// `Ok` when the volume can be read, else why not.
    pub fn usable(&self) -> Result<(), &LvError> {
        self.layout.as_ref().map(|_| ())
    }

    /// How many pieces of PV the volume is made of (0 when it cannot be read).
    pub fn piece_count(&self) -> usize {
        self.layout.as_ref().map_or(0, Vec::len)
    }

    /// The volume's bytes, read from its PVs. See [`open`].
    pub fn open(&self) -> Result<Region, LvError> {
        let pieces = self.layout.as_ref().map_err(Clone::clone)?;
        let first = pieces.first().map(|p| p.pv.path().display().to_string());
        let path = PathBuf::from(format!(
            "{} (LVM volume {}/{})",
            first.unwrap_or_default(),
            self.vg,
            self.name
        ));
        let source = LvSource {
            name: format!("{}/{}", self.vg, self.name),
            size: self.size,
            pieces: pieces.clone(),
        };
        Ok(Region::whole(Arc::new(source), &path))
    }
}

/// A [`Region`] over a linear logical volume: its segments concatenated in order, read
/// from the PVs they lie on. The region's path names the image of the first PV and the
/// volume (it is not a file to open).
pub fn open(lv: &LogicalVolume) -> Result<Region, LvError> {
    lv.open()
}

/// `/dev/VG/LV` or `/dev/mapper/VG-LV` as `(VG, LV)`. In a mapper name a single dash
/// separates the two names and a doubled dash stands for a dash inside one.
pub fn parse_device_name(device: &str) -> Option<(String, String)> {
    if let Some(rest) = device.strip_prefix("/dev/mapper/") {
        let mut vg = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '-' {
                if chars.peek() == Some(&'-') {
                    chars.next();
                    vg.push('-');
                } else {
                    let lv_raw: String = chars.collect();
                    // The LV part keeps doubled dashes only; a single one would be a
                    // device-mapper layer suffix (`-real`, `-cow`), not a volume.
                    let lv = lv_raw.replace("--", "\u{0}");
                    if lv.contains('-') || lv.is_empty() || vg.is_empty() {
                        return None;
                    }
                    return Some((vg, lv.replace('\u{0}', "-")));
                }
            } else {
                vg.push(c);
            }
        }
        return None;
    }
    let rest = device.strip_prefix("/dev/")?;
    let (vg, lv) = rest.split_once('/')?;
    if vg.is_empty() || lv.is_empty() || lv.contains('/') || vg == "mapper" {
        return None;
    }
    Some((vg.to_string(), lv.to_string()))
}

/// A volume group assembled from the PVs found.
#[derive(Debug, Clone)]
pub struct VolumeGroup {
    /// Its name.
    pub name: String,
    /// Its UUID, dashed.
    pub uuid: String,
    /// The `seqno` of the metadata used.
    pub seqno: u64,
    /// Where the metadata used was read.
    pub metadata_place: String,
    /// The extent size in bytes.
    pub extent_size: u64,
    /// Its PVs, found or not.
    pub pvs: Vec<GroupPv>,
    /// Its visible volumes (internal ones, such as a thin pool's data or a mirror's legs,
    /// are not offered), each usable or not.
    pub volumes: Vec<LogicalVolume>,
}

impl VolumeGroup {
    /// `Ok` when every PV of the group was found; else the first one missing.
    pub fn complete(&self) -> Result<(), LvmError> {
        match self.pvs.iter().find(|p| p.found.is_none()) {
            None => Ok(()),
            Some(p) => Err(LvmError::MissingPv {
                vg: self.name.clone(),
                pv_uuid: p.uuid.clone(),
                device: p
                    .device
                    .clone()
                    .unwrap_or_else(|| "an unknown device".into()),
            }),
        }
    }

    /// The volume named `name`.
    pub fn volume(&self, name: &str) -> Option<&LogicalVolume> {
        self.volumes.iter().find(|v| v.name == name)
    }

    /// Build the group from its metadata `vg` (named `name`), with `found` the PVs by
    /// plain UUID.
    fn from_metadata(
        copy: &MetadataCopy,
        place: &str,
        found: &HashMap<String, (String, Region)>,
    ) -> Result<Self, LvmError> {
        let name = copy.vg_name.clone();
        let vg = &copy.vg;
        let bad = |why: String| LvmError::Metadata {
            vg: name.clone(),
            place: place.to_string(),
            why,
        };
        let extent_sectors = vg
            .int("extent_size")
            .filter(|&s| s > 0 && s <= i64::from(u32::MAX))
            .ok_or_else(|| bad("no valid extent_size".into()))?;
        let extent_size = extent_sectors as u64 * SECTOR;
        let mut pvs = Vec::new();
        if let Some(section) = vg.section("physical_volumes") {
            for (key, pv) in section.sections() {
                let uuid = pv
                    .str("id")
                    .ok_or_else(|| bad(format!("{key} has no id")))?
                    .to_string();
                let int = |field: &str| {
                    pv.int(field)
                        .and_then(|v| u64::try_from(v).ok())
                        .ok_or_else(|| bad(format!("{key} has no valid {field}")))
                };
                let pe_start = int("pe_start")?
                    .checked_mul(SECTOR)
                    .ok_or_else(|| bad(format!("{key}: pe_start is too large")))?;
                let pe_count = int("pe_count")?;
                let missing = pv.str_list("flags").contains(&"MISSING");
                pvs.push(GroupPv {
                    key: key.to_string(),
                    found: if missing {
                        None
                    } else {
                        found.get(&plain_uuid(&uuid)).cloned()
                    },
                    uuid,
                    device: pv.str("device").map(str::to_string),
                    pe_start,
                    pe_count,
                });
            }
        }
        let mut volumes = Vec::new();
        if let Some(lvs) = vg.section("logical_volumes") {
            let snapshots = snapshot_roles(lvs);
            for (lv_name, lv) in lvs.sections() {
                // What `lvs` lists: visible volumes, except that a snapshot is shown under
                // the name of its hidden copy-on-write volume (lvm2
                // `lib/metadata/snapshot_manip.c`), not as the visible `snapshotN`
                // volume that ties it to its origin.
                let is_cow = matches!(snapshots.get(lv_name), Some(Unsupported::Snapshot { .. }));
                let ties_snapshot = segments(lv).any(|s| s.str("type") == Some("snapshot"));
                let visible = lv.str_list("status").contains(&"VISIBLE");
                if !(is_cow || (visible && !ties_snapshot)) {
                    continue;
                }
                volumes.push(logical_volume(
                    &name,
                    extent_size,
                    &pvs,
                    lv_name,
                    lv,
                    snapshots.get(lv_name),
                ));
            }
        }
        Ok(VolumeGroup {
            name: name.clone(),
            uuid: copy.vg_id.clone(),
            seqno: copy.seqno,
            metadata_place: place.to_string(),
            extent_size,
            pvs,
            volumes,
        })
    }
}

/// The segment sections of a volume (`segment1`, `segment2`, ...).
fn segments(lv: &Section) -> impl Iterator<Item = &Section> {
    lv.sections()
        .filter(|(k, _)| k.starts_with("segment"))
        .map(|(_, s)| s)
}

/// Volumes that are snapshots (their `snapshot` segment's `cow_store` or
/// `merging_store`) or origins (its `origin`), by name.
fn snapshot_roles(lvs: &Section) -> HashMap<&str, Unsupported> {
    let mut roles: HashMap<&str, Unsupported> = HashMap::new();
    for (_, lv) in lvs.sections() {
        for seg in segments(lv) {
            if seg.str("type") != Some("snapshot") {
                continue;
            }
            let origin = seg.str("origin").unwrap_or("?");
            let cow = seg
                .str("cow_store")
                .or_else(|| seg.str("merging_store"))
                .unwrap_or("?");
            roles.insert(
                cow,
                Unsupported::Snapshot {
                    origin: origin.to_string(),
                },
            );
            if let Unsupported::SnapshotOrigin { snapshots } = roles
                .entry(origin)
                .or_insert(Unsupported::SnapshotOrigin { snapshots: vec![] })
            {
                snapshots.push(cow.to_string());
            }
        }
    }
    roles
}

/// Classify a segment type: `Ok(())` for linear, else what it is.
fn classify(seg: &Section) -> Result<(), Unsupported> {
    let ty = seg.str("type").unwrap_or("");
    match ty {
        "striped" | "linear" => match seg.int("stripe_count").unwrap_or(1) {
            1 => Ok(()),
            n => Err(Unsupported::Striped {
                stripes: u64::try_from(n).unwrap_or(0),
            }),
        },
        "mirror" => Err(Unsupported::Mirror),
        "thin" => Err(Unsupported::Thin),
        "thin-pool" => Err(Unsupported::ThinPool),
        "snapshot" => Err(Unsupported::Snapshot {
            origin: seg.str("origin").unwrap_or("?").to_string(),
        }),
        "cache" | "cache-pool" | "writecache" => Err(Unsupported::Cache {
            segment_type: ty.to_string(),
        }),
        t if t.starts_with("raid") => Err(Unsupported::Raid {
            level: t.to_string(),
        }),
        t => Err(Unsupported::Other {
            segment_type: t.to_string(),
        }),
    }
}

fn logical_volume(
    vg: &str,
    extent_size: u64,
    pvs: &[GroupPv],
    name: &str,
    lv: &Section,
    role: Option<&Unsupported>,
) -> LogicalVolume {
    let segs: Vec<&Section> = segments(lv).collect();
    let extents: u64 = segs
        .iter()
        .filter_map(|s| s.int("extent_count").and_then(|c| u64::try_from(c).ok()))
        .fold(0u64, u64::saturating_add);
    LogicalVolume {
        vg: vg.to_string(),
        name: name.to_string(),
        uuid: lv.str("id").unwrap_or("").to_string(),
        size: extents.saturating_mul(extent_size),
        segment_types: segs
            .iter()
            .map(|s| s.str("type").unwrap_or("?").to_string())
            .collect(),
        layout: layout(vg, extent_size, pvs, name, lv, &segs, role),
    }
}

/// The pieces of a linear volume, or why it has none.
fn layout(
    vg: &str,
    extent_size: u64,
    pvs: &[GroupPv],
    name: &str,
    lv: &Section,
    segs: &[&Section],
    role: Option<&Unsupported>,
) -> Result<Vec<Piece>, LvError> {
    let unsupported = |kind| LvError::Unsupported {
        vg: vg.to_string(),
        lv: name.to_string(),
        kind,
    };
    let corrupt = |why: String| LvError::Corrupt {
        vg: vg.to_string(),
        lv: name.to_string(),
        why,
    };
    if let Some(role) = role {
        return Err(unsupported(role.clone()));
    }
    for seg in segs {
        classify(seg).map_err(unsupported)?;
    }
    if segs.is_empty() {
        return Err(corrupt("it has no segments".into()));
    }
    if let Some(count) = lv.int("segment_count") {
        if u64::try_from(count) != Ok(segs.len() as u64) {
            return Err(corrupt(format!(
                "segment_count is {count} but {} segments are described",
                segs.len()
            )));
        }
    }
    // (start extent, extent count, PV, first PE on it), in volume order.
    let mut runs = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let n = i + 1;
        let field = |f: &str| {
            seg.int(f)
                .and_then(|v| u32::try_from(v).ok())
                .map(u64::from)
                .ok_or_else(|| corrupt(format!("segment {n} has no valid {f}")))
        };
        let start = field("start_extent")?;
        let count = field("extent_count")?;
        let stripes = seg.value("stripes").and_then(text::Value::as_list);
        let (pv_key, pe) = match stripes {
            Some([text::Value::Str(k), text::Value::Int(pe)]) => (k.as_str(), *pe),
            _ => {
                return Err(corrupt(format!(
                    "segment {n} does not name one PV and extent in `stripes`"
                )))
            }
        };
        let pe = u64::try_from(pe).map_err(|_| corrupt(format!("segment {n}: negative extent")))?;
        let pv = pvs
            .iter()
            .find(|p| p.key == pv_key)
            .ok_or_else(|| corrupt(format!("segment {n} names {pv_key}, which the group lacks")))?;
        if count == 0 || pe.checked_add(count).is_none_or(|e| e > pv.pe_count) {
            return Err(corrupt(format!(
                "segment {n} ({count} extents from extent {pe}) lies outside {pv_key} ({} extents)",
                pv.pe_count
            )));
        }
        runs.push((start, count, pv, pe));
    }
    runs.sort_by_key(|r| r.0);
    let mut pieces = Vec::with_capacity(runs.len());
    let mut next = 0u64;
    for (start, count, pv, pe) in runs {
        if start != next {
            return Err(corrupt(format!(
                "its segments do not follow each other (extent {start} where {next} was expected)"
            )));
        }
        next += count;
        let Some((_, region)) = &pv.found else {
            return Err(LvError::MissingPv {
                vg: vg.to_string(),
                lv: name.to_string(),
                pv_uuid: pv.uuid.clone(),
                device: pv
                    .device
                    .clone()
                    .unwrap_or_else(|| "an unknown device".into()),
            });
        };
        let bytes = |e: u64| e.checked_mul(extent_size);
        let (Some(lv_offset), Some(len), Some(pv_offset)) = (
            bytes(start),
            bytes(count),
            bytes(pe).and_then(|b| b.checked_add(pv.pe_start)),
        ) else {
            return Err(corrupt("its extents lie beyond any disk".into()));
        };
        if pv_offset
            .checked_add(len)
            .is_none_or(|end| end > region.len())
        {
            return Err(corrupt(format!(
                "extents {pe}..{} lie beyond the end of {} ({} bytes)",
                pe + count,
                pv.key,
                region.len()
            )));
        }
        pieces.push(Piece {
            lv_offset,
            len,
            pv: region.clone(),
            pv_offset,
        });
    }
    Ok(pieces)
}

/// A linear volume as a [`BlockSource`].
#[derive(Debug)]
struct LvSource {
    name: String,
    size: u64,
    /// In volume order, contiguous from 0 to `size`.
    pieces: Vec<Piece>,
}

impl LvSource {
    /// The index of the piece holding byte `pos`.
    fn piece_at(&self, pos: u64) -> usize {
        self.pieces.partition_point(|p| p.lv_offset + p.len <= pos)
    }
}

impl BlockSource for LvSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0usize;
        let mut i = self.piece_at(pos);
        while done < buf.len() {
            let at = pos + done as u64;
            let p = self.pieces.get(i).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read at {at} lies beyond LVM volume {}", self.name),
                )
            })?;
            let within = at - p.lv_offset;
            let n = (p.len - within).min((buf.len() - done) as u64) as usize;
            p.pv.read_exact_at(p.pv_offset + within, &mut buf[done..done + n])?;
            done += n;
            i += 1;
        }
        Ok(())
    }

    fn format(&self) -> SourceFormat {
        SourceFormat {
            kind: "lvm",
            details: format!(
                "LVM logical volume {}, {} bytes in {} piece(s)",
                self.name,
                self.size,
                self.pieces.len()
            ),
        }
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        let end = pos.saturating_add(len).min(self.size);
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut i = self.piece_at(pos);
        while let Some(p) = self.pieces.get(i) {
            if p.lv_offset >= end {
                break;
            }
            let s = pos.max(p.lv_offset);
            let e = end.min(p.lv_offset + p.len);
            for (rs, rl) in p.pv.data_ranges(p.pv_offset + (s - p.lv_offset), e - s)? {
                let Some(ls) = rs.checked_sub(p.pv_offset).map(|o| o + p.lv_offset) else {
                    continue;
                };
                match out.last_mut() {
                    Some((os, ol)) if *os + *ol == ls => *ol += rl,
                    _ => out.push((ls, rl)),
                }
            }
            i += 1;
        }
        Some(out)
    }
}

/// A PV found by [`scan`], for listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundPv {
    /// Where it is.
    pub place: String,
    /// Its UUID, dashed.
    pub uuid: String,
    /// The volume group its newest metadata copy names, if any.
    pub vg: Option<String>,
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Every PV found.
    pub pvs: Vec<FoundPv>,
    /// The volume groups assembled from them (some volumes may be unusable: see
    /// [`LogicalVolume::usable`]; a group may lack PVs: see [`VolumeGroup::complete`]).
    pub groups: Vec<VolumeGroup>,
    /// Places whose PV could not be read, and groups whose metadata is unusable.
    pub problems: Vec<LvmError>,
}

impl Scan {
    /// The volume a guest names `/dev/VG/LV` or `/dev/mapper/VG-LV`.
    pub fn find(&self, device: &str) -> Option<&LogicalVolume> {
        let (vg, lv) = parse_device_name(device)?;
        self.groups
            .iter()
            .filter(|g| g.name == vg)
            .find_map(|g| g.volume(&lv))
    }

    /// Every volume of every group.
    pub fn volumes(&self) -> impl Iterator<Item = &LogicalVolume> {
        self.groups.iter().flat_map(|g| g.volumes.iter())
    }
}

/// Look for PVs in `places` (partitions and whole disks, named as the caller wants them
/// named in messages) and assemble their volume groups. Nothing here fails as a whole: a
/// place whose PV is damaged, or a group whose metadata is unusable, is kept in
/// [`Scan::problems`], and a volume that cannot be read carries its own error.
pub fn scan(places: &[(String, Region)]) -> Scan {
    let mut out = Scan::default();
    let mut pvs: Vec<PhysicalVolume> = Vec::new();
    for (place, region) in places {
        match PhysicalVolume::read(place, region) {
            Ok(Some(pv)) => {
                if let Some(first) = pvs.iter().find(|p| p.label.pv_uuid == pv.label.pv_uuid) {
                    out.problems.push(LvmError::DuplicatePv {
                        pv_uuid: pv.uuid(),
                        place: place.clone(),
                        other: first.place.clone(),
                    });
                    continue;
                }
                pvs.push(pv);
            }
            Ok(None) => {}
            Err(e) => out.problems.push(e),
        }
    }
    let found: HashMap<String, (String, Region)> = pvs
        .iter()
        .map(|p| (p.label.pv_uuid.clone(), (p.place.clone(), p.region.clone())))
        .collect();
    // The newest copy of each group's metadata, groups in the order first seen.
    let mut order: Vec<&str> = Vec::new();
    let mut best: HashMap<&str, (&MetadataCopy, &str)> = HashMap::new();
    for pv in &pvs {
        for copy in &pv.metadata {
            match best.get(copy.vg_id.as_str()) {
                Some((b, _)) if b.seqno >= copy.seqno => {}
                prev => {
                    if prev.is_none() {
                        order.push(&copy.vg_id);
                    }
                    best.insert(&copy.vg_id, (copy, &pv.place));
                }
            }
        }
    }
    for pv in &pvs {
        let newest = pv.metadata.iter().max_by_key(|c| c.seqno);
        out.pvs.push(FoundPv {
            place: pv.place.clone(),
            uuid: pv.uuid(),
            vg: newest.map(|c| {
                best.get(c.vg_id.as_str())
                    .map_or(&c.vg_name, |b| &b.0.vg_name)
                    .clone()
            }),
        });
    }
    for id in order {
        let (copy, place) = best[id];
        match VolumeGroup::from_metadata(copy, place, &found) {
            Ok(g) => out.groups.push(g),
            Err(e) => out.problems.push(e),
        }
    }
    // A PV that carries no metadata itself belongs to the group whose metadata lists it.
    for f in &mut out.pvs {
        if f.vg.is_none() {
            f.vg = out
                .groups
                .iter()
                .find(|g| {
                    g.pvs
                        .iter()
                        .any(|p| plain_uuid(&p.uuid) == plain_uuid(&f.uuid))
                })
                .map(|g| g.name.clone());
        }
    }
    out
}
