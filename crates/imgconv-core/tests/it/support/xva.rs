//! An XVA writer for the tests (the core's and, loaded by path, the CLI's), from the layout
//! `xe vm-export` writes (xapi's `stream_vdi`): `ova.xml` first (XML-RPC value syntax: the
//! VM, its VBDs, VDIs and VIF, and an empty CD drive), then each disk in the order of its
//! VDI reference: a member `Ref:N/NNNNNNNN` for every 1 MiB chunk that is not all zeros
//! (the first and the last always), each followed by its `.checksum` (SHA-1) or `.xxhash`
//! (xxHash64) member. A disk may carry xapi's keep-alive (an empty member that takes a
//! chunk number, so the chunks after it are named one higher), or lose members, to make
//! incomplete exports.

use sha1::{Digest as _, Sha1};
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The VM's MAC address, as `inspect` reports it (ova.xml has it in upper case).
pub const MAC: &str = "00:16:3e:5a:01:7f";
const CHUNK: usize = 1 << 20;

/// Which digest members a disk carries.
#[derive(Clone, Copy, Debug)]
pub enum Digests {
    Sha1,
    XxHash,
}

/// Which of a disk's members are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Members {
    /// As an export writes them.
    All,
    /// All but the last chunk (and its digest): an export cut short.
    WithoutLast,
    /// None: the disk is in ova.xml only.
    None,
}

/// One disk of the VM.
#[derive(Clone, Debug)]
pub struct XvaDisk {
    /// The raw disk image written.
    pub raw: PathBuf,
    /// The VDI's reference, which names its members (`Ref:7`).
    pub vdi: String,
    /// The VBD's `userdevice` (0 is xvda).
    pub userdevice: u32,
    pub bootable: bool,
    pub digests: Digests,
    /// Write a keep-alive member just before the chunk at this index of the disk.
    pub keepalive_before: Option<usize>,
    pub members: Members,
}

impl XvaDisk {
    /// Disk `raw` as VDI `vdi` on `userdevice` (bootable when 0), SHA-1 digests.
    pub fn new(raw: &Path, vdi: &str, userdevice: u32) -> Self {
        XvaDisk {
            raw: raw.to_path_buf(),
            vdi: vdi.to_string(),
            userdevice,
            bootable: userdevice == 0,
            digests: Digests::Sha1,
            keepalive_before: None,
            members: Members::All,
        }
    }
}

fn m(n: &str, v: &str) -> String {
    format!("<member><name>{n}</name><value>{v}</value></member>")
}

fn obj(class: &str, id: &str, fields: &[String]) -> String {
    format!(
        "<value><struct>{}{}{}</struct></value>",
        m("class", class),
        m("id", id),
        m("snapshot", &format!("<struct>{}</struct>", fields.concat()))
    )
}

fn refs(r: &[String]) -> String {
    let values: String = r.iter().map(|r| format!("<value>{r}</value>")).collect();
    format!("<array><data>{values}</data></array>")
}

/// The `ova.xml` of VM `web-01` with `disks` (their VBDs listed in the order given) and
/// an empty CD drive.
pub fn ova_xml(disks: &[XvaDisk]) -> String {
    let vbd = |i: usize| format!("Ref:{}", 100 + i);
    let mut vbds: Vec<String> = (0..disks.len()).map(vbd).collect();
    vbds.push("Ref:99".into());
    let mut objects = vec![obj(
        "VM",
        "Ref:1",
        &[
            m("name_label", "web-01"),
            m("memory_static_max", "805306368"),
            m("VCPUs_max", "3"),
            m("PV_bootloader", "pygrub"),
            m("VBDs", &refs(&vbds)),
            m("VIFs", &refs(&["Ref:9".into()])),
        ],
    )];
    for (i, d) in disks.iter().enumerate() {
        let size = fs::metadata(&d.raw).unwrap().len();
        objects.push(obj(
            "VBD",
            &vbd(i),
            &[
                m("VM", "Ref:1"),
                m("VDI", &d.vdi),
                m("device", ""),
                m("userdevice", &d.userdevice.to_string()),
                m("bootable", if d.bootable { "true" } else { "false" }),
                m("empty", "false"),
                m("type", "Disk"),
            ],
        ));
        objects.push(obj(
            "VDI",
            &d.vdi,
            &[
                m("name_label", &format!("web-01 disk {i}")),
                m("virtual_size", &size.to_string()),
            ],
        ));
    }
    objects.push(obj(
        "VBD",
        "Ref:99",
        &[
            m("VM", "Ref:1"),
            m("VDI", "OpaqueRef:NULL"),
            m("userdevice", "3"),
            m("bootable", "false"),
            m("empty", "true"),
            m("type", "CD"),
        ],
    ));
    objects.push(obj(
        "VIF",
        "Ref:9",
        &[m("device", "0"), m("MAC", &MAC.to_ascii_uppercase())],
    ));
    format!(
        "<value><struct>{}{}</struct></value>",
        m(
            "version",
            &format!("<struct>{}</struct>", m("export_vsn", "2"))
        ),
        m(
            "objects",
            &format!("<array><data>{}</data></array>", objects.concat())
        )
    )
}

fn add(tar: &mut tar::Builder<fs::File>, name: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_ustar();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, bytes).unwrap();
}

fn add_with_digest(tar: &mut tar::Builder<fs::File>, name: &str, bytes: &[u8], d: Digests) {
    add(tar, name, bytes);
    match d {
        Digests::Sha1 => {
            let hex: String = Sha1::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            add(tar, &format!("{name}.checksum"), hex.as_bytes());
        }
        Digests::XxHash => {
            // xapi writes the xxHash64 in upper case.
            let h = xxhash_rust::xxh64::xxh64(bytes, 0);
            add(
                tar,
                &format!("{name}.xxhash"),
                format!("{h:016X}").as_bytes(),
            );
        }
    }
}

/// Write the XVA of VM `web-01` with `disks` to `out`.
pub fn write_xva(out: &Path, disks: &[XvaDisk]) {
    let file = fs::File::create(out).unwrap();
    let mut tar = tar::Builder::new(file);
    add(&mut tar, "ova.xml", ova_xml(disks).as_bytes());
    let mut order: Vec<&XvaDisk> = disks.iter().collect();
    order.sort_by(|a, b| a.vdi.cmp(&b.vdi));
    for d in order {
        if d.members == Members::None {
            continue;
        }
        let src = fs::File::open(&d.raw).unwrap();
        let size = src.metadata().unwrap().len() as usize;
        let n = size.div_ceil(CHUNK);
        let mut buf = vec![0u8; CHUNK];
        let mut shift = 0;
        for i in 0..n {
            if d.keepalive_before == Some(i) {
                add_with_digest(&mut tar, &format!("{}/{:08}", d.vdi, i), &[], d.digests);
                shift += 1;
            }
            let len = (size - i * CHUNK).min(CHUNK);
            let chunk = &mut buf[..len];
            src.read_exact_at(chunk, (i * CHUNK) as u64).unwrap();
            let last = i + 1 == n;
            if last && d.members == Members::WithoutLast {
                break;
            }
            if chunk.iter().all(|&b| b == 0) && i != 0 && !last {
                continue;
            }
            add_with_digest(
                &mut tar,
                &format!("{}/{:08}", d.vdi, i + shift),
                chunk,
                d.digests,
            );
        }
    }
    tar.into_inner().unwrap().flush().unwrap();
}
