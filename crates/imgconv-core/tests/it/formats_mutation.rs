//! Container headers under mutation: small valid XVA, VHD (fixed and dynamic) and qcow2
//! images (made with the tar crate and `qemu-img convert`) have bytes of their metadata
//! overwritten at random, then are opened and read through. Every run ends in `Ok` or a
//! typed error, never a panic; the kept regression inputs end in the errors they name.

use crate::support;
use imgconv_core::formats::{self, FormatError, OpenOptions};
use std::fs;
use std::path::Path;
use std::process::Command;

fn open_and_read(path: &Path) {
    let opts = OpenOptions {
        scratch_dir: Some(path.parent().unwrap().to_path_buf()),
    };
    if let Ok(o) = formats::open(path, &opts) {
        for r in std::iter::once(o.region).chain(o.others.into_iter().map(|m| m.region)) {
            let mut buf = vec![0u8; 64 << 10];
            let mut at = 0;
            while at < r.len().min(4 << 20) {
                let _ = r.read_at(at, &mut buf);
                at += buf.len() as u64;
            }
            let _ = r.data_ranges(0, r.len());
            let _ = r.format();
        }
    }
}

/// Sample images of each container, from the same 2 MiB disk with data in it.
fn samples(dir: &Path) -> Vec<(String, Vec<u8>, Vec<std::ops::Range<usize>>)> {
    let raw = dir.join("d.raw");
    let mut disk = vec![0u8; 2 << 20];
    disk[4096..4096 + 200_000].copy_from_slice(&support::prng_bytes(7, 200_000));
    fs::write(&raw, &disk).unwrap();
    let mut out = Vec::new();
    for (name, args) in [
        ("q.qcow2", &["-O", "qcow2", "-o", "cluster_size=4096"][..]),
        (
            "z.qcow2",
            &["-O", "qcow2", "-c", "-o", "cluster_size=4096"][..],
        ),
        ("d.vhd", &["-O", "vpc", "-o", "subformat=dynamic"][..]),
        ("f.vhd", &["-O", "vpc", "-o", "subformat=fixed"][..]),
    ] {
        let p = dir.join(name);
        support::run_ok(
            Command::new("qemu-img")
                .arg("convert")
                .args(args)
                .arg(&raw)
                .arg(&p),
        );
        let bytes = fs::read(&p).unwrap();
        let n = bytes.len();
        // Header and tables at the front, the VHD footer at the end.
        let regions = vec![0..n.min(16 << 10), n.saturating_sub(512)..n];
        out.push((name.to_string(), bytes, regions));
    }
    // An XVA of two disks: ova.xml, then each disk's non-zero 1 MiB chunks with their
    // SHA-1 (the second disk one short chunk).
    let small = support::prng_bytes(8, 4096);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, name, bytes).unwrap();
    };
    let m = |n: &str, v: &str| format!("<member><name>{n}</name><value>{v}</value></member>");
    let obj = |c: &str, i: &str, f: String| {
        format!(
            "<value><struct>{}{}{}</struct></value>",
            m("class", c),
            m("id", i),
            m("snapshot", &format!("<struct>{f}</struct>"))
        )
    };
    let xml = format!(
        "<value><struct>{}</struct></value>",
        m(
            "objects",
            &format!(
                "<array><data>{}{}{}{}{}</data></array>",
                obj(
                    "VM",
                    "Ref:1",
                    m(
                        "VBDs",
                        "<array><data><value>Ref:2</value><value>Ref:4</value></data></array>"
                    )
                ),
                obj("VBD", "Ref:2", m("VDI", "Ref:3") + &m("bootable", "true")),
                obj("VDI", "Ref:3", m("virtual_size", &disk.len().to_string())),
                obj("VBD", "Ref:4", m("VDI", "Ref:5") + &m("userdevice", "1")),
                obj("VDI", "Ref:5", m("virtual_size", &small.len().to_string())),
            )
        )
    );
    add("ova.xml", xml.as_bytes());
    for (i, c) in disk.chunks(1 << 20).enumerate() {
        use sha1_smol_free::hex_sha1;
        add(&format!("Ref:3/{i:08}"), c);
        add(&format!("Ref:3/{i:08}.checksum"), hex_sha1(c).as_bytes());
    }
    add("Ref:5/00000000", &small);
    add(
        "Ref:5/00000000.checksum",
        sha1_smol_free::hex_sha1(&small).as_bytes(),
    );
    let bytes = tar.into_inner().unwrap();
    let n = bytes.len();
    out.push((
        "x.xva".into(),
        bytes,
        vec![0..4096, (1 << 20) + 1024..(1 << 20) + 2048, n - 8192..n],
    ));
    out
}

/// SHA-1 through `sha1sum`, so the test's digest does not share code with the reader.
mod sha1_smol_free {
    pub fn hex_sha1(data: &[u8]) -> String {
        use std::io::Write;
        let mut c = std::process::Command::new("sha1sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(data).unwrap();
        let out = c.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }
}

#[test]
fn mutated_container_metadata_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = support::Prng::from_label("formats-mutation");
    let mut cases = 0;
    for (name, pristine, regions) in samples(dir.path()) {
        let p = dir.path().join(format!("m-{name}"));
        fs::write(&p, &pristine).unwrap();
        open_and_read(&p);
        for _ in 0..150 {
            let mut b = pristine.clone();
            for _ in 0..1 + rng.below(4) {
                let r = rng.pick(&regions).clone();
                if r.is_empty() {
                    continue;
                }
                let at = r.start + rng.below((r.end - r.start) as u64) as usize;
                b[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.below(256) as u8,
                };
            }
            fs::write(&p, &b).unwrap();
            let r = std::panic::catch_unwind(|| open_and_read(&p));
            assert!(
                r.is_ok(),
                "{name}: a mutation panicked (input kept at {})",
                p.display()
            );
            cases += 1;
        }
    }
    assert!(cases >= 750, "{cases}");
}

#[test]
fn kept_container_regressions_end_in_the_errors_they_name() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/regressions/formats");
    let scratch = tempfile::tempdir().unwrap();
    let opts = OpenOptions {
        scratch_dir: Some(scratch.path().to_path_buf()),
    };
    match formats::open(&dir.join("qcow2-l2-entry-past-eof.qcow2"), &opts) {
        Err(FormatError::Corrupt { what, .. }) => {
            assert!(what.contains("past the end of the file"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    match formats::open(&dir.join("gzip-truncated.img.gz"), &opts) {
        Err(FormatError::Corrupt { what, .. }) => {
            assert!(what.contains("does not decompress"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    assert!(
        fs::read_dir(scratch.path()).unwrap().next().is_none(),
        "scratch left behind"
    );
    match formats::open(&dir.join("xva-second-disk-missing.xva"), &opts) {
        Err(FormatError::Incomplete { disk, what, .. }) => {
            assert_eq!(disk, "disk Ref:5 (xvdb, 8192 bytes)");
            assert!(what.contains("no data member"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    let xva = formats::open(&dir.join("xva-chunk-sha1-mismatch.xva"), &opts).unwrap();
    assert_eq!(xva.region.format().kind, "xva");
    let mut b = [0u8; 16];
    let e = xva.region.read_exact_at(0, &mut b).unwrap_err();
    assert!(e.to_string().contains("Ref:3/00000000"), "{e}");
}
