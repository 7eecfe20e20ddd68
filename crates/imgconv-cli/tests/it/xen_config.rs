//! `--xen-config` end to end: a xen-tools-like guest made at test time from the synthetic
//! root (root fs, swap image and /home fs, and a domU config naming dom0 paths this
//! machine does not have) converts into one disk, judged by sfdisk, blkid, debugfs and
//! virt-xml-validate; inspect and the dry run show every disk and its lookup; batch names
//! config outputs after the domain; a disk found nowhere writes nothing. The real
//! xen-tools and logical-root guests boot under QEMU (ignored tier).

use crate::common::*;
use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use support::{debugfs, e2fs_spec, tool, tool_merged};

const ROOT_UUID: &str = "7c7c7c7c-0002-4000-8000-00000000f002";
const SWAP_UUID: &str = "7c7c7c7c-0001-4000-8000-00000000f001";
const HOME_UUID: &str = "7c7c7c7c-0003-4000-8000-00000000f003";
const MAC: &str = "00:16:3e:2a:4b:6c";
/// A dom0 directory no test machine has.
const DOM0: &str = "/srv/xen/imgconv-test-absent/domains";

fn donor() -> PathBuf {
    support::synthetic().join("donor-dir")
}

/// The synthetic guest root as `dir/NAME`, with `fstab` as its /etc/fstab and `uuid`.
fn root_image(dir: &Path, name: &str, fstab: &str, uuid: &str) -> PathBuf {
    let root = dir.join(name);
    fs::copy(support::synthetic().join("xen-ext4.img"), &root).unwrap();
    let host = dir.join(format!("{name}.fstab"));
    fs::write(&host, fstab).unwrap();
    let r = root.to_str().unwrap();
    for req in [
        "rm /etc/fstab".to_string(),
        format!("write {} /etc/fstab", host.display()),
    ] {
        let (rc, out) = tool_merged("debugfs", &["-w", "-R", &req, r]);
        assert_eq!(rc, 0, "{out}");
    }
    fs::remove_file(&host).unwrap();
    let (rc, out) = tool_merged("tune2fs", &["-U", uuid, r]);
    assert_eq!(rc, 0, "{out}");
    root
}

/// A xen-tools guest in `dir`: disk.img (xvda2, root), swap.img (xvda1), home.img
/// (xvdb1, /home with two files) and web1.cfg naming them under a dom0 path that does
/// not exist here. Returns the config and /home's files.
fn xen_tools_guest(dir: &Path) -> (PathBuf, Vec<(&'static str, Vec<u8>)>) {
    fs::create_dir_all(dir).unwrap();
    root_image(
        dir,
        "disk.img",
        &format!(
            "/dev/xvda2 / ext4 errors=remount-ro 0 1\n/dev/xvda1 none swap sw 0 0\nUUID={HOME_UUID} /home ext4 defaults 0 2\n"
        ),
        ROOT_UUID,
    );
    let swap = dir.join("swap.img");
    fs::File::create(&swap).unwrap().set_len(16 << 20).unwrap();
    let (rc, out) = tool_merged(
        "mkswap",
        &[
            "-q",
            "-U",
            SWAP_UUID,
            "-L",
            "web1swap",
            swap.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{out}");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("imgconv-home-marker", b"home-web1\n".to_vec()),
        (
            "alice/notes.bin",
            (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect(),
        ),
    ];
    let tree = dir.join("home.tree");
    for (p, data) in &files {
        let p = tree.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, data).unwrap();
    }
    support::mkfs(
        "ext4",
        Some(&tree),
        &dir.join("home.img"),
        24,
        &["-E", "root_owner=0:0", "-U", HOME_UUID, "-L", "web1home"],
    );
    fs::remove_dir_all(&tree).unwrap();
    // Swap listed first: the root disk is found by content, not by order.
    let cfg = dir.join("web1.cfg");
    fs::write(
        &cfg,
        format!(
            "# xen-tools style\nname = 'web1'\nmemory = '256'\nvcpus = '2'\nroot = '/dev/xvda2 ro'\nextra = 'elevator=noop console=hvc0'\n\
disk = [\n  'file:{DOM0}/web1/swap.img,xvda1,w',\n  'vdev=xvda2, target={DOM0}/web1/disk.img',\n  'file:{DOM0}/web1/home.img,xvdb1,w',\n]\n\
vif = [ 'ip=192.0.2.10 ,mac=00:16:3E:2A:4B:6C,bridge=xenbr0' ]\n"
        ),
    )
    .unwrap();
    (cfg, files)
}

/// sfdisk -J: (number, type, start sector).
fn partitions(img: &Path) -> Vec<(u32, String, u64)> {
    let (rc, out, err) = tool("sfdisk", &["-J", img.to_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let node = p["node"].as_str().unwrap();
            (
                node.trim_start_matches(img.to_str().unwrap())
                    .parse()
                    .unwrap(),
                p["type"].as_str().unwrap().to_string(),
                p["start"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn blkid_uuid(img: &Path, sector: u64) -> String {
    let off = (sector * 512).to_string();
    let (_, out, _) = tool(
        "blkid",
        &[
            "-p",
            "-O",
            &off,
            "-o",
            "value",
            "-s",
            "UUID",
            img.to_str().unwrap(),
        ],
    );
    out.trim().to_string()
}

fn notes_beside(stdout: &str, dir: &Path) {
    for (dev, file) in [
        ("xvda1", "swap.img"),
        ("xvda2", "disk.img"),
        ("xvdb1", "home.img"),
    ] {
        let want = format!(
            "{dev}: {DOM0}/web1/{file} does not exist here; using the file of that name beside the config: {}",
            dir.join(file).display()
        );
        assert!(stdout.contains(&want), "missing {want:?} in:\n{stdout}");
    }
}

#[test]
fn a_xen_config_converts_all_of_its_disks_into_one() {
    let t = tempfile::tempdir().unwrap();
    let dom = t.path().join("dom");
    let (cfg, files) = xen_tools_guest(&dom);
    let out = t.path().join("web1.raw");
    let (json, xml) = (t.path().join("web1.json"), t.path().join("web1.xml"));
    let o = imgconv()
        .args(["convert", "--xen-config"])
        .arg(&cfg)
        .arg("--donor")
        .arg(donor())
        .arg("-o")
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .arg("--libvirt-xml")
        .arg(&xml)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    notes_beside(&stdout, &dom);
    assert!(stdout.contains("root disk   xvda2:"), "{stdout}");

    // p1 root, p2 /home, p3 the guest's own swap.
    let parts = partitions(&out);
    let types: Vec<(u32, &str)> = parts.iter().map(|p| (p.0, p.1.as_str())).collect();
    assert_eq!(types, [(1, "83"), (2, "83"), (3, "82")], "{parts:?}");
    let uuids: Vec<String> = parts.iter().map(|p| blkid_uuid(&out, p.2)).collect();
    assert_eq!(uuids, [ROOT_UUID, HOME_UUID, SWAP_UUID]);
    let (rc, text) = tool_merged("e2fsck", &["-fn", &e2fs_spec(&out, parts[1].2 * 512)]);
    assert_eq!(rc, 0, "{text}");
    // /home's files are the source's.
    for (path, data) in &files {
        let dump = t.path().join("dump");
        let got = debugfs(
            &e2fs_spec(&out, parts[1].2 * 512),
            &format!("dump /{path} {}", dump.display()),
        );
        assert_eq!(&fs::read(&dump).unwrap_or_default(), data, "/{path}: {got}");
    }
    // Every UUID= of the converted fstab is a partition of the output.
    let fstab = debugfs(&e2fs_spec(&out, parts[0].2 * 512), "cat /etc/fstab");
    let named: Vec<&str> = fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_whitespace().next()?.strip_prefix("UUID="))
        .collect();
    assert_eq!(named.len(), 3, "{fstab}");
    for u in named {
        assert!(
            uuids.iter().any(|x| x == u),
            "UUID={u} is no partition: {fstab}"
        );
    }
    assert!(!fstab.lines().any(|l| l.starts_with("/dev/")), "{fstab}");

    // The report: every disk with its lookup, the machine's facts.
    let report: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let i = &report["plan"]["inspection"];
    let disks = i["xen_config"]["disks"].as_array().unwrap();
    let got: Vec<(&str, &str, bool)> = disks
        .iter()
        .map(|d| {
            (
                d["vdev"].as_str().unwrap(),
                d["found"].as_str().unwrap(),
                d["holds_root"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("xvda1", "beside-config", false),
            ("xvda2", "beside-config", true),
            ("xvdb1", "beside-config", false)
        ]
    );
    assert!(disks[2]["note"].as_str().unwrap().contains("home.img"));
    assert_eq!(i["vm"]["name"], "web1");
    assert_eq!(i["vm"]["memory_bytes"], 256u64 << 20);
    assert_eq!(i["vm"]["vcpus"], 2);
    assert_eq!(i["vm"]["nics"][0]["mac"], MAC);
    assert_eq!(
        i["vm"]["kernel_cmdline"],
        "root=/dev/xvda2 ro elevator=noop console=hvc0"
    );

    // libvirt: name, memory, vCPUs and the MAC from the config.
    let (code, text) = tool_merged("virt-xml-validate", &[xml.to_str().unwrap(), "domain"]);
    assert_eq!(code, 0, "virt-xml-validate: {text}");
    let x = fs::read_to_string(&xml).unwrap();
    for want in [
        format!("<mac address='{MAC}'/>"),
        "<name>web1</name>".into(),
        "<memory unit='MiB'>256</memory>".into(),
        "<vcpu>2</vcpu>".into(),
    ] {
        assert!(x.contains(&want), "{want} not in {x}");
    }
}

#[test]
fn inspect_and_dry_run_show_every_disk_of_a_config() {
    let t = tempfile::tempdir().unwrap();
    let dom = t.path().join("dom");
    let (cfg, _) = xen_tools_guest(&dom);
    let o = imgconv()
        .args(["inspect", "--xen-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    notes_beside(&stdout, &dom);
    assert!(
        stdout.contains(&format!("name web1, memory 256 MiB, 2 vCPUs, MAC {MAC}")),
        "{stdout}"
    );
    // Each disk's volume and what the conversion does with it.
    for want in [
        "the swap partition of the output",
        "mounted at /home",
        "guest root",
    ] {
        assert!(stdout.contains(want), "{want:?} not in:\n{stdout}");
    }
    let o = imgconv()
        .args(["inspect", "--json", "--xen-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success());
    let v = json(&o.stdout);
    let doc = t.path().join("inspect.json");
    fs::write(&doc, &o.stdout).unwrap();
    crate::schema::validate(&doc, "inspect").unwrap();
    assert_eq!(v["xen_config"]["disks"].as_array().unwrap().len(), 3);
    assert_eq!(v["vm"]["nics"][0]["mac"], MAC);
    assert_eq!(v["volumes"].as_array().unwrap().len(), 3);

    let out = t.path().join("web1.raw");
    let o = imgconv()
        .args(["convert", "--dry-run", "--xen-config"])
        .arg(&cfg)
        .arg("--donor")
        .arg(donor())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    notes_beside(&stdout, &dom);
    assert!(stdout.contains("xvdb1    -> p2"), "{stdout}");
    assert!(stdout.contains("dry run: nothing was written"));
    assert!(!out.exists());
}

#[test]
fn a_disk_found_nowhere_names_every_path_tried_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let dom = t.path().join("dom");
    let (cfg, _) = xen_tools_guest(&dom);
    fs::remove_file(dom.join("home.img")).unwrap();
    let outdir = t.path().join("out");
    fs::create_dir(&outdir).unwrap();
    for sub in ["convert", "inspect"] {
        let mut c = imgconv();
        c.arg(sub).arg("--xen-config").arg(&cfg);
        if sub == "convert" {
            c.arg("--donor")
                .arg(donor())
                .arg("-o")
                .arg(outdir.join("web1.raw"));
        }
        let o = c.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{sub}: {err}");
        for tried in [
            format!("{DOM0}/web1/home.img"),
            dom.join("home.img").display().to_string(),
        ] {
            assert!(err.contains(&tried), "{sub}: {tried} not in {err}");
        }
        assert!(err.contains("xvdb1"), "{err}");
    }
    assert_eq!(fs::read_dir(&outdir).unwrap().count(), 0);
}

#[test]
fn a_source_and_a_xen_config_together_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let o = imgconv()
        .args([
            "convert",
            "x.img",
            "--xen-config",
            "web1.cfg",
            "--donor",
            "d",
            "-o",
        ])
        .arg(t.path().join("o.raw"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--xen-config"));
}

#[test]
fn batch_names_config_outputs_after_the_domain() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("guests");
    let (web1, _) = xen_tools_guest(&dir);
    // A second domain in the same directory, one disk, root= naming another device.
    root_image(
        &dir,
        "mail-root.img",
        "/dev/xvda1 / ext4 errors=remount-ro 0 1\n",
        "7c7c7c7c-0009-4000-8000-00000000f009",
    );
    let mail = dir.join("zz-mail.cfg");
    fs::write(
        &mail,
        "name = \"mail\"\nmemory = 128\nroot = '/dev/xvdc1 ro'\ndisk = [ 'phy:/dev/vg0/absent/mail-root.img,xvda1,w' ]\n",
    )
    .unwrap();
    let out = t.path().join("out");
    let json = t.path().join("batch.json");
    let o = imgconv()
        .arg("batch")
        .arg("--dir")
        .arg(&dir)
        .arg("--donor")
        .arg(donor())
        .arg("--out-dir")
        .arg(&out)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["mail.raw", "web1.raw"]);
    let r: serde_json::Value = serde_json::from_slice(&fs::read(&json).unwrap()).unwrap();
    let sources: Vec<PathBuf> = r["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| PathBuf::from(i["source"].as_str().unwrap()))
        .collect();
    assert_eq!(sources, [web1.clone(), mail.clone()]);
    // The disk images are converted with their config, not on their own.
    let ignored: Vec<String> = r["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let p = PathBuf::from(i["path"].as_str().unwrap());
            format!(
                "{} {}",
                p.file_name().unwrap().to_string_lossy(),
                i["reason"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        ignored,
        [
            "disk.img a disk of web1.cfg, converted with it",
            "home.img a disk of web1.cfg, converted with it",
            "mail-root.img a disk of zz-mail.cfg, converted with it",
            "swap.img a disk of web1.cfg, converted with it",
        ]
    );
    // web1 carries /home and its swap; mail's root= hint was wrong and said so.
    assert_eq!(partitions(&out.join("web1.raw")).len(), 3);
    let mail_report = &r["images"][1]["conversion"]["plan"]["inspection"]["xen_config"];
    assert!(
        mail_report["notes"][0]
            .as_str()
            .unwrap()
            .contains("root= names xvdc1; the root filesystem is on xvda1"),
        "{mail_report}"
    );
}

fn real_or_skip() -> Option<PathBuf> {
    let dir = support::real();
    if dir.is_none() {
        support::skip(
            support::SkipKind::CiCanRun,
            "the real fixtures are not built (scripts/fixtures real)",
        );
    }
    dir
}

fn info(dir: &Path, key: &str) -> String {
    fs::read_to_string(dir.join("INFO"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("INFO has no {key}"))
}

/// Convert with the real donor (`source` is the convert arguments naming the guest) and
/// boot the result to its marker line, which must show /home's marker, swap active and
/// no fstab filesystem missing.
fn converts_and_boots(real: &Path, source: &[&std::ffi::OsStr], home_marker: &str) {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("guest.raw");
    let o = imgconv()
        .arg("convert")
        .args(source)
        .arg("--donor")
        .arg(real.join("bookworm-donor.img"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let log = t.path().join("serial.log");
    let v = imgconv()
        .arg("verify")
        .arg(&out)
        .args(["--boot", "--timeout", "600", "--expect"])
        .arg(format!("home={home_marker} "))
        .arg("--serial-log")
        .arg(&log)
        .output()
        .unwrap();
    let serial = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        v.status.success(),
        "{}{}\n{serial}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let marker = serial
        .lines()
        .find(|l| l.contains("IMGCONV-MARKER") && l.contains("home="))
        .unwrap_or_else(|| panic!("no marker line in:\n{serial}"));
    assert!(
        marker.contains(&format!(" home={home_marker} ")),
        "{marker}"
    );
    assert!(marker.ends_with("missing=none"), "{marker}");
    assert!(!marker.contains("swap=none"), "{marker}");
    assert!(
        marker.contains(",/home") || marker.contains("=/home"),
        "{marker}"
    );
}

#[test]
#[ignore = "boots QEMU with the real fixtures (scripts/fixtures real)"]
fn real_xen_tools_config_boots_with_home_and_swap() {
    let Some(real) = real_or_skip() else { return };
    let cfg = real.join(info(&real, "xentools_cfg"));
    converts_and_boots(
        &real,
        &["--xen-config".as_ref(), cfg.as_os_str()],
        &info(&real, "xentools_home_marker"),
    );
}

#[test]
#[ignore = "boots QEMU with the real fixtures (scripts/fixtures real)"]
fn real_logical_root_boots_with_home_and_swap() {
    let Some(real) = real_or_skip() else { return };
    let img = real.join("logical-root.img");
    converts_and_boots(
        &real,
        &[img.as_os_str()],
        &info(&real, "logical_home_marker"),
    );
}
