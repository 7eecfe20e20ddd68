//! LVM2 read from images that lvm2's own tools made (`scripts/fixtures lvm`, root): each
//! volume read through `lvm::open` holds what was written into the extents LVM reported,
//! lvm2's `pvck --dump headers` and `lvs` agree with what the reader finds, and every
//! volume LVM builds other than linear ones is refused by name.

use crate::support::{self, SkipKind};
use imgconv_core::blockio::Region;
use imgconv_core::lvm::{self, label, mda, LvError, LvmError, Unsupported};
use imgconv_core::partition;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The LVM fixture directory, built once per test process; `None` (after a visible skip)
/// when this process is not root or the build fails for want of loop devices.
pub(crate) fn fixtures() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = DIR.get_or_init(|| {
        if !support::is_root() {
            return Err("needs root (loop devices) to build the LVM fixtures".into());
        }
        let root = support::repo_root();
        let out = Command::new(root.join("scripts/fixtures"))
            .arg("lvm")
            .current_dir(&root)
            .output()
            .expect("run scripts/fixtures lvm");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "scripts/fixtures lvm failed:\n{stderr}"
        );
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    });
    match r {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            support::skip(SkipKind::CiCanRun, why);
            None
        }
    }
}

/// `(place, region)` for the whole image and each of its partitions.
fn places(image: &Path) -> Vec<(String, Region)> {
    let whole = Region::open(image).unwrap();
    let name = image.file_name().unwrap().to_string_lossy().into_owned();
    let mut out = vec![(name.clone(), whole.clone())];
    if let Some(t) = partition::read_table(&whole).unwrap() {
        for e in &t.entries {
            out.push((
                format!("{name} p{}", e.number),
                whole.sub(e.start, e.len).unwrap(),
            ));
        }
    }
    out
}

fn json(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    v["report"][0][kind].as_array().unwrap().clone()
}

fn field<'a>(row: &'a serde_json::Value, name: &str) -> &'a str {
    row[name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {row}"))
}

/// `pvck --dump headers` lines as (key, first word of the value).
fn pvck(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next().unwrap_or("").to_string()))
        })
        .collect()
}

fn pvck_value(dump: &[(String, String)], key: &str) -> String {
    dump.iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("{key} not in the pvck dump"))
        .1
        .clone()
}

fn assert_region_equals_file(r: &Region, file: &Path) {
    let want = std::fs::read(file).unwrap();
    assert_eq!(r.len(), want.len() as u64, "{}", file.display());
    let mut buf = vec![0u8; 1 << 20];
    for (i, chunk) in want.chunks(buf.len()).enumerate() {
        let b = &mut buf[..chunk.len()];
        r.read_exact_at((i << 20) as u64, b).unwrap();
        assert!(b == chunk, "{}: MiB {i} differs", file.display());
    }
}

/// Copy a region into a new file of `dir`.
fn copy_out(r: &Region, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let mut buf = vec![0u8; 1 << 20];
    let f = std::fs::File::create(&p).unwrap();
    let mut at = 0;
    while at < r.len() {
        let n = r.read_at(at, &mut buf).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &buf[..n], at).unwrap();
        at += n as u64;
    }
    p
}

#[test]
fn rhel_layout_root_and_swap_read_as_lvm_wrote_them() {
    let Some(dir) = fixtures() else { return };
    let image = dir.join("lvm-rhel.img");
    let scan = lvm::scan(&places(&image));
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    assert_eq!(scan.pvs.len(), 1);
    assert_eq!(scan.pvs[0].place, "lvm-rhel.img p2");
    let pvs = json(&dir.join("lvm-rhel.pvs.json"), "pv");
    assert_eq!(scan.pvs[0].uuid, field(&pvs[0], "pv_uuid"));
    let g = &scan.groups[0];
    assert_eq!((g.name.as_str(), g.extent_size), ("VolGroup00", 4 << 20));
    let names: Vec<_> = g.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["LogVol00", "LogVol01"]);

    let root_lv = scan.find("/dev/mapper/VolGroup00-LogVol00").unwrap();
    assert_eq!(root_lv.piece_count(), 2);
    let root = lvm::open(root_lv).unwrap();
    assert_eq!(root.format().kind, "lvm");
    // The whole volume is what the builder wrote into LvM's extents...
    assert_region_equals_file(&root, &dir.join("lvm-rhel-LogVol00.ext4"));
    // ...and each segment is where `lvs` and `pvs` put it, out of order on the PV.
    let p2 = places(&image).remove(2).1;
    let pe_start: u64 = field(&pvs[0], "pe_start").parse().unwrap();
    let segs = json(&dir.join("lvm-rhel.lvs.json"), "seg");
    let mut firsts = Vec::new();
    for s in segs.iter().filter(|s| field(s, "lv_name") == "LogVol00") {
        let start: u64 = field(s, "seg_start").parse().unwrap();
        let ranges = field(s, "seg_pe_ranges");
        let pe: u64 = ranges
            .split(':')
            .nth(1)
            .unwrap()
            .split('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        firsts.push(pe);
        let mut ours = vec![0u8; 64 << 10];
        let mut theirs = vec![0u8; 64 << 10];
        for off in [0u64, 4 << 20] {
            root.read_exact_at(start + off, &mut ours).unwrap();
            p2.read_exact_at(pe_start + pe * g.extent_size + off, &mut theirs)
                .unwrap();
            assert!(ours == theirs, "segment at {start}+{off} ({ranges})");
        }
    }
    assert_eq!(firsts, [0, 4], "LogVol01 sits between LogVol00's segments");

    // Outside tools judge a copy made through the reader.
    let tmp = tempfile::tempdir().unwrap();
    let copy = copy_out(&root, tmp.path(), "root.ext4");
    let spec = copy.display().to_string();
    support::assert_e2fsck_clean(&spec);
    let (_, uuid, _) = support::tool("blkid", &["-p", "-o", "value", "-s", "UUID", &spec]);
    assert_eq!(uuid.trim(), "1f0e2d3c-4b5a-4978-8695-a4b3c2d1e0f9");
    assert_eq!(
        support::debugfs(&spec, "cat /etc/lvm-marker"),
        "root filesystem on LVM: VolGroup00/LogVol00\n"
    );
    let oracle = dir.join("lvm-rhel-LogVol00.ext4").display().to_string();
    let big = support::debugfs(&spec, "cat /srv/big.bin");
    assert!(big.len() > 10 << 20, "{} bytes", big.len());
    assert!(
        big == support::debugfs(&oracle, "cat /srv/big.bin"),
        "the 12 MiB file crossing the segments differs"
    );

    let swap_lv = scan.find("/dev/VolGroup00/LogVol01").unwrap();
    let swap = copy_out(&swap_lv.open().unwrap(), tmp.path(), "swap");
    let (_, out, _) = support::tool(
        "blkid",
        &["-p", "-o", "export", &swap.display().to_string()],
    );
    assert!(out.contains("TYPE=swap"), "{out}");
    assert!(
        out.contains("UUID=3b1c2d3e-4f50-4162-9374-8596a7b8c9da"),
        "{out}"
    );
}

#[test]
fn label_and_metadata_area_agree_with_pvck() {
    let Some(dir) = fixtures() else { return };
    for (image, place) in [("lvm-rhel.img", 2usize), ("lvm-wrap.img", 0)] {
        let r = places(&dir.join(image)).remove(place).1;
        let dump = pvck(&dir.join(image.replace(".img", ".pvck.txt")));
        let head = r.read_vec(0, 2048, 2048).unwrap();
        let l = label::find(&head).unwrap().unwrap();
        assert_eq!(
            l.sector.to_string(),
            pvck_value(&dump, "label_header.sector")
        );
        assert_eq!(l.pv_uuid, pvck_value(&dump, "pv_header.pv_uuid"));
        assert_eq!(
            l.device_size.to_string(),
            pvck_value(&dump, "pv_header.device_size")
        );
        let area = l.metadata_areas[0];
        assert_eq!(
            area.offset.to_string(),
            pvck_value(&dump, "pv_header.disk_locn[2].offset")
        );
        let h = mda::MdaHeader::parse(
            &r.read_vec(area.offset, 512, 512).unwrap(),
            area.offset,
            area.size,
        )
        .unwrap();
        assert_eq!(h.size.to_string(), pvck_value(&dump, "mda_header_1.size"));
        let slot = h.raw_locns[0];
        assert_eq!(
            slot.offset.to_string(),
            pvck_value(&dump, "mda_header_1.raw_locn[0].offset")
        );
        assert_eq!(
            format!("{:#x}", slot.checksum),
            pvck_value(&dump, "mda_header_1.raw_locn[0].checksum")
        );
        let loc = h.current_text().unwrap().unwrap();
        let wrapped = std::fs::read_to_string(dir.join(image.replace(".img", ".pvck.txt")))
            .unwrap()
            .contains("# commit wrapped");
        assert_eq!(loc.pieces[1].1 > 0, wrapped, "{image}");
        if image == "lvm-wrap.img" {
            assert!(wrapped, "the builder made the metadata wrap");
        }
        let pv = lvm::PhysicalVolume::read(image, &r).unwrap().unwrap();
        // "metadata text at N crc C # vgname V seqno S"
        let text = std::fs::read_to_string(dir.join(image.replace(".img", ".pvck.txt"))).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("metadata text at"))
            .unwrap();
        let seqno: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(pv.metadata[0].seqno, seqno, "{image}");
    }
}

#[test]
fn wrapped_metadata_volume_reads_back() {
    let Some(dir) = fixtures() else { return };
    let scan = lvm::scan(&places(&dir.join("lvm-wrap.img")));
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    let data = scan.find("/dev/vgwrap/data").unwrap();
    assert_region_equals_file(&data.open().unwrap(), &dir.join("lvm-wrap-data.bin"));
}

#[test]
fn two_pvs_striped_refused_and_spanning_volume_needs_both() {
    let Some(dir) = fixtures() else { return };
    let a = places(&dir.join("lvm-two-a.img"));
    let b = places(&dir.join("lvm-two-b.img"));
    let pvs = json(&dir.join("lvm-two.pvs.json"), "pv");
    let both = lvm::scan(&[a.clone(), b].concat());
    assert!(both.problems.is_empty(), "{:?}", both.problems);
    let g = &both.groups[0];
    g.complete().unwrap();
    let span = g.volume("span").unwrap();
    assert_eq!(span.piece_count(), 2);
    assert_region_equals_file(&span.open().unwrap(), &dir.join("lvm-two-span.bin"));
    g.volume("solo").unwrap().open().unwrap();
    let e = g.volume("stripes").unwrap().open().unwrap_err();
    assert_eq!(
        e.to_string(),
        "logical volume vgtwo/stripes is striped (2 stripes); only linear volumes can be converted"
    );

    // Only the first disk: the group is incomplete; the volume on both disks is refused
    // naming the missing PV and where LVM last saw it; the one on the first disk reads.
    let one = lvm::scan(&a);
    let g = &one.groups[0];
    let (b_uuid, b_dev) = (field(&pvs[1], "pv_uuid"), field(&pvs[1], "pv_name"));
    let e = g.complete().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("volume group vgtwo spans physical volume {b_uuid} (last seen as {b_dev}), which is not among the disks given")
    );
    let e = g.volume("span").unwrap().open().unwrap_err();
    assert_eq!(
        e,
        LvError::MissingPv {
            vg: "vgtwo".into(),
            lv: "span".into(),
            pv_uuid: b_uuid.into(),
            device: b_dev.into()
        }
    );
    let err = imgconv_core::Error::from(e);
    assert_eq!(err.kind(), imgconv_core::ErrorKind::Input);
    assert!(err.to_string().contains("vgtwo/span"), "{err}");
    assert!(matches!(
        g.volume("stripes").unwrap().open(),
        Err(LvError::Unsupported {
            kind: Unsupported::Striped { stripes: 2 },
            ..
        })
    ));
    g.volume("solo").unwrap().open().unwrap();
}

#[test]
fn snapshot_and_thin_volumes_are_refused_by_name() {
    let Some(dir) = fixtures() else { return };
    let scan = lvm::scan(&places(&dir.join("lvm-snapthin.img")));
    assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    // What the reader offers is what `lvs` lists without `-a`.
    let mut listed: Vec<String> = json(&dir.join("lvm-snapthin.lvs.json"), "seg")
        .iter()
        .map(|s| field(s, "lv_name").to_string())
        .filter(|n| !n.starts_with('['))
        .collect();
    listed.sort();
    let mut offered: Vec<String> = scan.volumes().map(|v| v.name.clone()).collect();
    offered.sort();
    assert_eq!(offered, listed);
    for (name, says) in [
        ("snap", "vgsnap/snap is a snapshot of root"),
        ("root", "vgsnap/root is the origin of snapshot(s) snap"),
        ("pool", "vgsnap/pool is a thin pool"),
        ("thin1", "vgsnap/thin1 is a thin volume"),
    ] {
        let v = scan.find(&format!("/dev/vgsnap/{name}")).unwrap();
        let e = v.open().unwrap_err();
        assert!(e.to_string().contains(says), "{name}: {e}");
        assert!(v.usable().is_err());
    }
}

#[test]
fn damaged_label_and_metadata_are_typed_errors() {
    let Some(dir) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = std::fs::read(dir.join("lvm-wrap.img")).unwrap();
    let r = Region::open(&dir.join("lvm-wrap.img")).unwrap();
    let head = r.read_vec(0, 2048, 2048).unwrap();
    let l = label::find(&head).unwrap().unwrap();
    let h = mda::MdaHeader::parse(
        &r.read_vec(l.metadata_areas[0].offset, 512, 512).unwrap(),
        l.metadata_areas[0].offset,
        l.metadata_areas[0].size,
    )
    .unwrap();
    let text_at = h.current_text().unwrap().unwrap().pieces[1].0 as usize + 10;
    for (at, structure) in [
        (512 + 100, "LVM2 label"),
        (
            l.metadata_areas[0].offset as usize + 50,
            "LVM2 metadata area header",
        ),
        (text_at, "LVM2 metadata text"),
    ] {
        let mut b = src.clone();
        b[at] ^= 0x01;
        let p = tmp.path().join("damaged.img");
        std::fs::write(&p, &b).unwrap();
        let scan = lvm::scan(&places(&p));
        assert!(scan.groups.is_empty());
        match &scan.problems[..] {
            [e @ LvmError::Corrupt {
                source: lvm::Corrupt::Checksum { structure: s, .. },
                ..
            }] => {
                assert_eq!(*s, structure);
                assert!(e.to_string().contains("damaged.img"), "{e}");
            }
            other => panic!("{structure}: {other:?}"),
        }
    }
}

#[test]
fn every_pv_blkid_finds_is_found_with_its_uuid() {
    let Some(dir) = fixtures() else { return };
    let rows: Vec<_> = support::manifest(&dir)
        .into_iter()
        .filter(|r| r.fs_type == "LVM2_member")
        .collect();
    assert_eq!(rows.len(), 5);
    for row in rows {
        let scan = lvm::scan(&places(&dir.join(&row.image)));
        let found: Vec<_> = scan.pvs.iter().map(|p| p.uuid.as_str()).collect();
        assert_eq!(found, [row.uuid.as_str()], "{}", row.image);
        assert!(scan.pvs[0].vg.is_some(), "{}", row.image);
    }
}
