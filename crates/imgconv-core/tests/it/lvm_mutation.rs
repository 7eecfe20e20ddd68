//! LVM2 structures under mutation, without root: the heads of PVs that lvm2 made (kept in
//! `testdata/regressions/lvm/`: label, metadata area and metadata text) get bytes of the
//! label, the metadata area header or the metadata text overwritten, mostly with their
//! checksums recomputed so the damage reaches the parsers behind the checksum gate, or are
//! truncated. Each case is scanned and its volumes read through; every run ends in `Ok` or
//! a typed error, never a panic. The unmutated heads assemble as lvm2 described them.

use crate::support::Prng;
use imgconv_core::blockio::Region;
use imgconv_core::lvm::{self, crc, label, mda, LvError, Unsupported};
use std::path::{Path, PathBuf};

fn heads() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/regressions/lvm")
}

/// Scan `bytes` as the start of a 64 MiB disk and read every usable volume.
fn scan_bytes(dir: &Path, bytes: &[u8]) -> lvm::Scan {
    let p = dir.join("case.lvm");
    std::fs::write(&p, bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len((bytes.len() as u64).max(64 << 20)).unwrap();
    let r = Region::open(&p).unwrap();
    let scan = lvm::scan(&[("case".to_string(), r)]);
    let mut buf = vec![0u8; 8192];
    for v in scan.volumes() {
        if let Ok(r) = v.open() {
            assert_eq!(r.len(), v.size);
            for pos in [0, r.len() / 2, r.len().saturating_sub(100)] {
                let _ = r.read_at(pos, &mut buf);
            }
            let _ = r.data_ranges(0, r.len());
        }
    }
    scan
}

#[test]
fn kept_pv_heads_assemble_as_lvm_described_them() {
    let tmp = tempfile::tempdir().unwrap();
    let read = |name: &str| std::fs::read(heads().join(name)).unwrap();

    let s = scan_bytes(tmp.path(), &read("rhel-pv-head.lvm"));
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    let root = s.find("/dev/VolGroup00/LogVol00").unwrap();
    assert_eq!((root.size, root.piece_count()), (24 << 20, 2));

    let s = scan_bytes(tmp.path(), &read("wrap-pv-head.lvm"));
    assert_eq!(s.groups[0].name, "vgwrap");
    s.find("/dev/mapper/vgwrap-data").unwrap().open().unwrap();

    // The first of vgtwo's two disks alone.
    let s = scan_bytes(tmp.path(), &read("two-a-pv-head.lvm"));
    let g = &s.groups[0];
    assert!(g.complete().is_err());
    assert!(matches!(
        g.volume("span").unwrap().open(),
        Err(LvError::MissingPv { .. })
    ));
    g.volume("solo").unwrap().open().unwrap();

    let s = scan_bytes(tmp.path(), &read("snapthin-pv-head.lvm"));
    let kinds: Vec<_> = s
        .volumes()
        .map(|v| match v.open() {
            Err(LvError::Unsupported { kind, .. }) => kind,
            other => panic!("{}: {other:?}", v.name),
        })
        .collect();
    assert!(kinds.contains(&Unsupported::Thin), "{kinds:?}");
    assert!(kinds.contains(&Unsupported::ThinPool), "{kinds:?}");
}

/// Where a head's structures are: the label sector, the metadata area header, the text.
struct Layout {
    label: usize,
    mda: usize,
    text: Vec<(usize, usize)>,
}

fn layout(bytes: &[u8]) -> Layout {
    let l = label::find(&bytes[..2048]).unwrap().unwrap();
    let area = l.metadata_areas[0];
    let at = area.offset as usize;
    let h = mda::MdaHeader::parse(&bytes[at..at + 512], area.offset, area.size).unwrap();
    let t = h.current_text().unwrap().unwrap();
    Layout {
        label: l.sector as usize * 512,
        mda: at,
        text: t
            .pieces
            .iter()
            .filter(|p| p.1 > 0)
            .map(|&(o, n)| (o as usize, n as usize))
            .collect(),
    }
}

/// Put back the checksums a mutation broke: the text's (in raw_locn 0), then the header's,
/// then the label's.
fn fix_checksums(b: &mut [u8], l: &Layout) {
    let mut text = Vec::new();
    for &(o, n) in &l.text {
        text.extend_from_slice(&b[o..o + n]);
    }
    let c = crc::calc(crc::INITIAL, &text);
    b[l.mda + 56..l.mda + 60].copy_from_slice(&c.to_le_bytes());
    let c = crc::calc(crc::INITIAL, &b[l.mda + 4..l.mda + 512]);
    b[l.mda..l.mda + 4].copy_from_slice(&c.to_le_bytes());
    let c = crc::calc(crc::INITIAL, &b[l.label + 20..l.label + 512]);
    b[l.label + 16..l.label + 20].copy_from_slice(&c.to_le_bytes());
}

#[test]
fn mutated_pv_heads_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Prng::from_label("lvm-mutation");
    let mut cases = 0;
    let mut reached_text = 0;
    for name in [
        "rhel-pv-head.lvm",
        "wrap-pv-head.lvm",
        "two-a-pv-head.lvm",
        "snapthin-pv-head.lvm",
    ] {
        let pristine = std::fs::read(heads().join(name)).unwrap();
        let l = layout(&pristine);
        for _ in 0..150 {
            let mut b = pristine.clone();
            let (o, n) = *rng.pick(&l.text);
            let target = match rng.below(4) {
                0 => l.label..l.label + 512,
                1 => l.mda..l.mda + 512,
                _ => o..o + n,
            };
            for _ in 0..1 + rng.below(3) {
                let at = target.start + rng.below(target.len() as u64) as usize;
                b[at] = match rng.below(6) {
                    0 => 0,
                    1 => 0xff,
                    2 => *rng.pick(b"{}[]=\"#\n-9"),
                    _ => rng.below(256) as u8,
                };
            }
            if rng.chance(4, 5) {
                fix_checksums(&mut b, &l);
            }
            if rng.chance(1, 10) {
                b.truncate(rng.below(b.len() as u64) as usize);
            }
            let r = std::panic::catch_unwind(|| scan_bytes(tmp.path(), &b));
            let scan = r.unwrap_or_else(|_| {
                let keep = tmp.path().join(format!("panic-{name}"));
                std::fs::write(&keep, &b).unwrap();
                panic!(
                    "{name}: a mutation panicked (input kept at {})",
                    keep.display()
                )
            });
            if !scan.groups.is_empty()
                || scan
                    .problems
                    .iter()
                    .any(|e| e.to_string().contains("metadata text line"))
            {
                reached_text += 1;
            }
            cases += 1;
        }
    }
    assert_eq!(cases, 600);
    assert!(
        reached_text > 200,
        "only {reached_text} cases got past the checksums"
    );
}
