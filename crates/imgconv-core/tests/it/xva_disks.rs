//! XVA exports with several disks (written by `support::xva` from xapi's layout): every
//! VDI of the VM is a block source of its own, in device order under its Xen name, read
//! through the one index of the tar (keep-alive members and odd-sized last chunks
//! included), byte for byte equal to the disk written; a compressed export reads the
//! same. A disk whose members are missing, entirely or its last chunk, is refused with a
//! typed error, never read as zeros.

use crate::support::{
    self,
    xva::{write_xva, Digests, Members, XvaDisk},
};
use imgconv_core::blockio::Region;
use imgconv_core::formats::{self, FormatError, OpenOptions};
use imgconv_core::source;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: usize = 1 << 20;

/// A raw disk of `size` bytes with random data in the 1 MiB chunks `data` (the rest zeros).
fn disk(dir: &Path, name: &str, size: usize, data: &[usize], seed: u64) -> PathBuf {
    let mut bytes = vec![0u8; size];
    for &c in data {
        let end = ((c + 1) * MIB).min(size);
        let fill = support::prng_bytes(seed + c as u64, end - c * MIB);
        bytes[c * MIB..end].copy_from_slice(&fill);
    }
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

fn read_all(r: &Region) -> Vec<u8> {
    let mut b = vec![0u8; r.len() as usize];
    r.read_exact_at(0, &mut b).unwrap();
    b
}

fn opts(dir: &Path) -> OpenOptions {
    OpenOptions {
        scratch_dir: Some(dir.to_path_buf()),
    }
}

/// Three disks, their VBDs listed out of device order and their VDI references out of
/// both: a (xvda, odd size), b (xvdb, zeros between its first and last chunk and a
/// keep-alive member among them, xxHash64), c (xvdc).
fn three_disks(dir: &Path) -> Vec<XvaDisk> {
    let a = disk(dir, "a.raw", 3 * MIB + 1000, &[0, 1, 3], 10);
    let b = disk(dir, "b.raw", 6 * MIB, &[0, 5], 20);
    let c = disk(dir, "c.raw", 2 * MIB, &[1], 30);
    vec![
        XvaDisk::new(&c, "Ref:5", 2),
        XvaDisk::new(&a, "Ref:20", 0),
        XvaDisk {
            digests: Digests::XxHash,
            keepalive_before: Some(3),
            ..XvaDisk::new(&b, "Ref:13", 1)
        },
    ]
}

#[test]
fn xva_every_disk_is_its_own_block_source_in_device_order() {
    let dir = tempfile::tempdir().unwrap();
    let disks = three_disks(dir.path());
    let xva = dir.path().join("vm.xva");
    write_xva(&xva, &disks);
    // The keep-alive shifted b's last chunk to the name 00000006.
    let listing = support::run_ok(Command::new("tar").arg("-tf").arg(&xva));
    assert!(listing.contains("Ref:13/00000006\n"), "{listing}");

    let gz = dir.path().join("vm.xva.gz");
    support::run_ok(Command::new("sh").arg("-c").arg(format!(
        "gzip -c < '{}' > '{}'",
        xva.display(),
        gz.display()
    )));
    for path in [&xva, &gz] {
        let o = formats::open(path, &opts(dir.path())).unwrap();
        assert_eq!(o.id.as_deref(), Some("Ref:20"));
        assert_eq!(read_all(&o.region), fs::read(&disks[1].raw).unwrap());
        let others: Vec<(&str, &str)> = o
            .others
            .iter()
            .map(|m| (m.xen_device.as_str(), m.id.as_str()))
            .collect();
        assert_eq!(others, [("xvdb", "Ref:13"), ("xvdc", "Ref:5")]);
        assert_eq!(
            read_all(&o.others[0].region),
            fs::read(&disks[2].raw).unwrap()
        );
        assert_eq!(
            read_all(&o.others[1].region),
            fs::read(&disks[0].raw).unwrap()
        );
        // Only b's two chunks hold data; the rest is known to be zeros.
        assert_eq!(
            o.others[0].region.data_ranges(0, 6 << 20),
            Some(vec![(0, 1 << 20), (5 << 20, 1 << 20)])
        );
        let details = o.others[0].region.format().details;
        assert!(
            details.contains("Ref:13 (xvdb)") && details.contains("xxHash64 checked"),
            "{details}"
        );
        let vm = o.vm.unwrap();
        let listed: Vec<(&str, Option<&str>, bool, bool)> = vm
            .disks
            .iter()
            .map(|d| (d.id.as_str(), d.device.as_deref(), d.bootable, d.converted))
            .collect();
        // The empty CD drive is not a disk.
        assert_eq!(
            listed,
            [
                ("Ref:20", Some("xvda"), true, true),
                ("Ref:13", Some("xvdb"), false, true),
                ("Ref:5", Some("xvdc"), false, true),
            ]
        );
    }
}

#[test]
fn xva_disk_missing_from_the_tar_is_refused_not_read_as_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let xva = dir.path().join("vm.xva");
    for (members, why) in [
        (Members::None, "has no data member in the tar"),
        // Its keep-alive member before chunk 3 says chunks 1 and 2 were zeros.
        (Members::WithoutLast, "holds data only up to byte 3145728"),
    ] {
        let mut disks = three_disks(dir.path());
        disks[2].members = members;
        write_xva(&xva, &disks);
        match formats::open(&xva, &opts(dir.path())) {
            Err(e @ FormatError::Incomplete { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("disk Ref:13 (xvdb, 6291456 bytes)") && text.contains(why),
                    "{text}"
                );
            }
            other => panic!("{members:?}: {other:?}"),
        }
        // Inspection and the conversion refuse it too, with the next step named.
        let e = source::inspect(&xva).unwrap_err();
        let e = imgconv_core::Error::from(e);
        assert_eq!(e.kind(), imgconv_core::ErrorKind::Input);
        assert_eq!(e.hint(), Some(imgconv_core::Hint::ExportAgain));
    }
}
