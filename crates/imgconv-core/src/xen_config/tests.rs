use super::*;

fn parse(text: &str) -> XenConfig {
    XenConfig::parse(text, Path::new("/etc/xen/test.cfg")).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> XenConfigError {
    XenConfig::parse(text, Path::new("/etc/xen/test.cfg")).expect_err("must be refused")
}

fn vdevs(disks: &[DiskSpec]) -> Vec<String> {
    disks.iter().map(|d| d.vdev.to_string()).collect()
}

/// What xen-tools' xl.tmpl writes for a guest with images in a directory (quoted numbers,
/// `vdev=, target=` entries, root listed first).
const XEN_TOOLS_XL: &str = r#"#
# Configuration file for the Xen instance web1, created
# by xen-tools 4.9.2 on Mon Jan  8 10:00:00 2024.
#

#
#  Kernel + memory size
#
kernel = '/boot/vmlinuz-6.1.0-18-amd64'
ramdisk = '/boot/initrd.img-6.1.0-18-amd64'
cmdline = 'root=/dev/xvda2 ro console=hvc0'
vcpus = '2'
memory = '512'
maxmem = '1024'
type = 'pv'

#
#  Disk device(s).
#
disk = [
                  'vdev=xvda2, target=/srv/xen/domains/web1/disk.img',
                  'vdev=xvda1, target=/srv/xen/domains/web1/swap.img',
              ]

#
#  Hostname
#
name = 'web1'

#
#  Networking
#
dhcp = 'dhcp'
vif = [ 'mac=00:16:3E:2A:4B:6C,bridge=xenbr0' ]

#
#  Behaviour
#
on_poweroff = 'destroy'
on_reboot   = 'restart'
on_crash    = 'restart'
"#;

#[test]
fn xen_tools_xl_config() {
    let c = parse(XEN_TOOLS_XL);
    assert_eq!(c.name.as_deref(), Some("web1"));
    assert_eq!(
        (c.memory_mib, c.maxmem_mib, c.vcpus),
        (Some(512), Some(1024), Some(2))
    );
    assert_eq!(c.guest_type, Some(GuestType::Pv));
    assert_eq!(c.kernel.as_deref(), Some("/boot/vmlinuz-6.1.0-18-amd64"));
    assert_eq!(
        c.ramdisk.as_deref(),
        Some("/boot/initrd.img-6.1.0-18-amd64")
    );
    assert_eq!(
        c.kernel_cmdline().as_deref(),
        Some("root=/dev/xvda2 ro console=hvc0")
    );
    assert_eq!(vdevs(&c.disks), ["xvda2", "xvda1"]);
    assert_eq!(c.disks[0].target, "/srv/xen/domains/web1/disk.img");
    assert_eq!(c.disks[0].line, 21);
    assert_eq!(c.disks[1].line, 22);
    assert_eq!(c.vifs.len(), 1);
    assert_eq!(c.vifs[0].mac.as_deref(), Some("00:16:3e:2a:4b:6c"));
    assert_eq!(c.vifs[0].bridge.as_deref(), Some("xenbr0"));
    assert!(c.ignored.is_empty(), "{:?}", c.ignored);
}

/// xen-tools' older xm.tmpl: `file:` entries, `root` + `extra`, ip and mac in one vif.
#[test]
fn xen_tools_xm_config() {
    let c = parse(
        "kernel  = '/boot/vmlinuz-2.6.32-5-xen-amd64'\nramdisk = '/boot/initrd.img-2.6.32-5-xen-amd64'\nmemory  = '256'\n\nroot    = '/dev/xvda2 ro'\ndisk    = [ 'file:/home/xen/domains/db1/disk.img,xvda2,w', 'file:/home/xen/domains/db1/swap.img,xvda1,w' ]\nname    = 'db1'\nvif  = [ 'ip=192.168.1.20 ,mac=00:16:3E:00:AB:01' ]\nextra = 'elevator=noop'\n",
    );
    assert_eq!(
        c.kernel_cmdline().as_deref(),
        Some("root=/dev/xvda2 ro elevator=noop")
    );
    assert_eq!(c.memory_mib, Some(256));
    assert_eq!(vdevs(&c.disks), ["xvda2", "xvda1"]);
    assert_eq!(c.disks[1].backend, DiskBackend::File);
    assert_eq!(c.vifs[0].ip.as_deref(), Some("192.168.1.20"));
    assert_eq!(c.vifs[0].mac.as_deref(), Some("00:16:3e:00:ab:01"));
    assert_eq!(c.guest_type, None);
}

/// A CentOS pygrub guest on dom0 logical volumes, xm style with double quotes.
#[test]
fn xm_pygrub_on_logical_volumes() {
    let c = parse(
        "name = \"centos5\"\nuuid = \"0b5d6e9a-6f00-4c7d-9d3c-3f1e2c0b9a11\"\nmaxmem = 1024\nmemory = 1024\nvcpus = 2\nbootloader = \"/usr/bin/pygrub\"\non_poweroff = \"destroy\"\non_reboot = \"restart\"\non_crash = \"restart\"\nvfb = [  ]\ndisk = [ \"phy:/dev/VolGroup00/centos5-disk,xvda,w\", \"phy:/dev/VolGroup00/centos5-data,xvdb,w\" ]\nvif = [ \"mac=00:16:36:4f:0a:1b,bridge=xenbr0,script=vif-bridge\" ]\n",
    );
    assert_eq!(c.bootloader.as_deref(), Some("/usr/bin/pygrub"));
    assert_eq!(vdevs(&c.disks), ["xvda", "xvdb"]);
    assert!(c.disks.iter().all(|d| d.backend == DiskBackend::Phy));
    assert_eq!(c.disks[0].target, "/dev/VolGroup00/centos5-disk");
    assert_eq!(c.vcpus, Some(2));
}

/// Xen's own xmexample.hvm: Python imports and a computed device model are skipped and
/// listed; the settings read are literal. The CD-ROM is not a disk of the guest.
#[test]
fn xm_hvm_example_with_python() {
    let c = parse(
        "import os, re\narch_libdir = 'lib'\narch = os.uname()[4]\nif os.uname()[0] == 'Linux' and re.search('64', arch):\n    arch_libdir = 'lib64'\nkernel = \"/usr/lib/xen/boot/hvmloader\"\nbuilder='hvm'\nmemory = 128\nname = \"ExampleHVMDomain\"\nvif = [ 'type=ioemu, bridge=xenbr0, model=e1000' ]\ndisk = [ 'file:/var/images/min-el3-i386.img,hda,w', ',hdc:cdrom,r' ]\ndevice_model = '/usr/' + arch_libdir + '/xen/bin/qemu-dm'\nsdl=0\nvnc=1\nserial='pty'\n",
    );
    assert_eq!(c.guest_type, Some(GuestType::Hvm));
    assert_eq!(vdevs(&c.disks), ["hda"]);
    assert_eq!(vdevs(&c.cdroms), ["hdc"]);
    assert_eq!(c.vifs[0].mac, None);
    assert_eq!(c.vifs[0].model.as_deref(), Some("e1000"));
    let lines: Vec<usize> = c.ignored.iter().map(|i| i.line).collect();
    assert_eq!(lines, [1, 3, 4, 5, 12], "{:?}", c.ignored);
    assert!(c.ignored[0].what.contains("not run"));
    assert!(c.ignored[4].what.contains("device_model"));
    // No MAC: the NIC is not in the facts (Xen chose one at random at each start).
    assert!(c.vm_facts().nics.is_empty());
}

/// xl syntax from xl.cfg(5) and xl-disk-configuration(5): positional entries, a CD-ROM,
/// `;` between settings, hex numbers, a list without a trailing comma.
#[test]
fn xl_positional_and_keyed_disks() {
    let c = parse(
        "name = \"guest\"; memory = 0x400\nvcpus = 4\ntype = \"hvm\"\ndisk = [ '/dev/vg/guest-volume,,hda', '/root/image.iso,,hdc,cdrom',\n         'format=qcow2, vdev=xvdb, access=ro, target=/var/lib/xen/images/data.qcow2' ]\n",
    );
    assert_eq!(c.memory_mib, Some(1024));
    assert_eq!(vdevs(&c.disks), ["hda", "xvdb"]);
    assert_eq!(c.disks[1].format, DiskFormat::Qcow2);
    assert!(c.disks[1].read_only);
    assert_eq!(c.disks[1].line, 5);
    assert_eq!(vdevs(&c.cdroms), ["hdc"]);
}

#[test]
fn later_settings_replace_earlier_ones_and_type_beats_builder() {
    let c = parse("memory = 256\ntype = 'pvh'\nbuilder = 'hvm'\nmemory = 512\ndisk = ['/a,raw,xvda,w']\ndisk = ['/b,raw,xvdb,w']\n");
    assert_eq!(c.memory_mib, Some(512));
    assert_eq!(c.guest_type, Some(GuestType::Pvh));
    assert_eq!(vdevs(&c.disks), ["xvdb"]);
}

#[test]
fn facts_map_into_vm_facts() {
    let c = parse(XEN_TOOLS_XL);
    let f = c.vm_facts();
    assert_eq!(f.origin, "/etc/xen/test.cfg");
    assert_eq!(f.name.as_deref(), Some("web1"));
    assert_eq!(f.memory_bytes, Some(512 << 20));
    assert_eq!(f.vcpus, Some(2));
    assert_eq!(
        f.nics,
        [Nic {
            mac: "00:16:3e:2a:4b:6c".into(),
            device: Some("0".into())
        }]
    );
    let devices: Vec<_> = f.disks.iter().map(|d| d.device.clone().unwrap()).collect();
    assert_eq!(devices, ["xvda2", "xvda1"]);
    assert!(f.disks.iter().all(|d| d.converted));
}

#[test]
fn malformed_configs_are_typed_errors_with_line_numbers() {
    let cases: &[(&str, usize, &str)] = &[
        ("name = 'web1'\nmemory = '512\n", 2, "never closed"),
        (
            "name = 'a'\n\ndisk = [ 'file:/x,xvda,w',\n",
            3,
            "never closed",
        ),
        ("memory = 512 * 2\n", 1, "literal"),
        ("memory = mem\n", 1, "literal"),
        ("memory = 1.5\n", 1, "integer"),
        ("memory = 'lots'\n", 1, "positive integer"),
        ("memory = 0\n", 1, "positive integer"),
        ("vcpus = 100000\n", 1, "4096"),
        ("name = 5\n", 1, "not a string"),
        ("type = 'xen'\n", 1, "none of"),
        ("\ndisk = [ 5 ]\n", 2, "not a string"),
        (
            "disk = [\n 'file:/a,xvda,w',\n 'file:/b,xvda,w' ]\n",
            3,
            "twice",
        ),
        ("disk = [\n\n 'file:/a' ]\n", 3, "no guest device"),
        ("vif = [ 'mac=00:16:3e:zz:00:01' ]\n", 1, "MAC"),
        (
            "import os\nif os.path.exists('/x'):\n    disk = ['file:/x,xvda,w']\n",
            3,
            "conditionally",
        ),
        ("if 1: memory = 512\n", 1, "conditionally"),
        ("a = 1 \\ 2\n", 1, "backslash"),
        ("x = )\n", 1, "closes nothing"),
    ];
    for (text, line, needle) in cases {
        let e = err(text);
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("line {line}:")), "{text:?}: {msg}");
        assert!(msg.contains(needle), "{text:?}: {msg}");
        assert_eq!(e.kind(), crate::ErrorKind::Input);
    }
}

#[test]
fn huge_nested_and_binary_inputs_are_bounded() {
    let p = Path::new("/etc/xen/big.cfg");
    let big = vec![b'#'; MAX_CONFIG_BYTES as usize + 1];
    assert!(matches!(
        XenConfig::from_bytes(&big, p),
        Err(XenConfigError::TooLarge { .. })
    ));
    let deep = format!("name='x'\ndisk = {}\n", "[".repeat(MAX_DEPTH + 1));
    let e = XenConfig::from_bytes(deep.as_bytes(), p).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("/etc/xen/big.cfg: line 2: brackets nested deeper than {MAX_DEPTH}")
    );
    let long = format!(
        "disk = [ {} ]\n",
        "'file:/x,xvda,w',".repeat(MAX_LIST_ITEMS + 1)
    );
    assert!(err(&long).to_string().contains("longer than"));
    let e = XenConfig::from_bytes(b"name = 'x'\nmemory = 5\0\n", p).unwrap_err();
    assert!(
        e.to_string()
            .ends_with("line 2: not text (a NUL byte or invalid UTF-8)"),
        "{e}"
    );
    let e = XenConfig::from_bytes(b"\n\n\xff\xfe", p).unwrap_err();
    assert!(e.to_string().contains("line 3: not text"), "{e}");
    // A million-line list of blank lines and commas is still linear work.
    let lines = format!("vif = [\n{}]\n", "\n".repeat(500_000));
    assert!(parse(&lines).vifs.is_empty());
}

fn touch(p: &Path) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"x").unwrap();
}

#[test]
fn disks_are_found_as_named_relative_or_beside_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let elsewhere = tempfile::tempdir().unwrap();
    let named = elsewhere.path().join("root.img");
    touch(&named);
    touch(&d.join("images/data.img"));
    touch(&d.join("home.img"));
    touch(&d.join("web1-swap"));
    let text = format!(
        "disk = [ 'file:{},xvda1,w', 'images/data.img,raw,xvdb,w', 'vdev=xvdc, target=/srv/xen/web1/home.img', 'phy:/dev/vg0/web1-swap,xvdd,w', '/iso/x.iso,,hdc,cdrom' ]\n",
        named.display()
    );
    let cfg = XenConfig::parse(&text, &d.join("web1.cfg")).unwrap();
    let r = cfg.resolve_disks().unwrap();
    let got: Vec<(PathBuf, Found)> = r
        .iter()
        .map(|r| (r.path.clone(), r.found.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (named.clone(), Found::AsNamed),
            (d.join("images/data.img"), Found::RelativeToConfig),
            (d.join("home.img"), Found::BesideConfig),
            (d.join("web1-swap"), Found::BesideConfig),
        ]
    );
    assert_eq!(r[0].note(), format!("xvda1: {}", named.display()));
    assert!(
        r[2].note()
            .contains("/srv/xen/web1/home.img does not exist here"),
        "{}",
        r[2].note()
    );
    assert!(r[2].note().contains("beside the config"), "{}", r[2].note());
}

#[test]
fn a_missing_disk_names_every_place_looked() {
    let dir = tempfile::tempdir().unwrap();
    let cfg_path = dir.path().join("web1.cfg");
    let cfg = XenConfig::parse(
        "disk = [ 'file:/srv/xen/web1/disk.img,xvda2,w' ]\n",
        &cfg_path,
    )
    .unwrap();
    match cfg.resolve_disks() {
        Err(XenConfigError::DiskNotFound {
            line: 1, looked, ..
        }) => {
            assert_eq!(
                looked,
                [
                    PathBuf::from("/srv/xen/web1/disk.img"),
                    dir.path().join("disk.img")
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    // A directory of that name is not an image.
    std::fs::create_dir(dir.path().join("disk.img")).unwrap();
    assert!(matches!(
        cfg.resolve_disks(),
        Err(XenConfigError::DiskNotFound { .. })
    ));
    let cfg = XenConfig::parse("name = 'x'\n", &cfg_path).unwrap();
    assert!(matches!(
        cfg.resolve_disks(),
        Err(XenConfigError::NoDisks { .. })
    ));
    let cfg = XenConfig::parse("disk = [ 'drbd:web1,xvda,w' ]\n", &cfg_path).unwrap();
    let e = cfg.resolve_disks().unwrap_err();
    assert!(e.to_string().contains("script `drbd`"), "{e}");
}

#[test]
fn two_disks_found_at_one_image_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    touch(&dir.path().join("disk.img"));
    let cfg = XenConfig::parse(
        "disk = [ 'file:/srv/a/disk.img,xvda,w', 'file:/srv/b/disk.img,xvdb,w' ]\n",
        &dir.path().join("x.cfg"),
    )
    .unwrap();
    let e = cfg.resolve_disks().unwrap_err();
    assert!(matches!(e, XenConfigError::SameImage { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with("xvda and xvdb both resolve to"),
        "{e}"
    );
}

#[test]
fn a_missing_config_is_an_input_io_error() {
    let e = XenConfig::from_file(Path::new("/nonexistent/web1.cfg")).unwrap_err();
    assert!(matches!(e, XenConfigError::Io { .. }));
    assert_eq!(e.kind(), crate::ErrorKind::Input);
    assert!(e.to_string().contains("/nonexistent/web1.cfg"));
}

/// Byte flips, insertions and cuts of real configs end in a config or a typed error, never
/// a panic (the fuzz target `xen_config` does the same at length).
#[test]
fn mutated_configs_never_panic() {
    let seeds = [XEN_TOOLS_XL.as_bytes(), b"import os\nif 1:\n    x = 2\nname = 'a'; disk = [ 'tap:aio:/p,xvda1,w', ',hdc:cdrom,r', 'vdev=xvdb, target=/q,r' ]\n"];
    let alphabet = b"[](){}'\",=:;#\\\n x0a9\0\xff";
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let p = Path::new("/nonexistent-dir/m.cfg");
    for i in 0..4000 {
        let mut data = seeds[i % seeds.len()].to_vec();
        for _ in 0..1 + next(4) {
            let at = next(data.len() + 1);
            match next(3) {
                0 if at < data.len() => data[at] = alphabet[next(alphabet.len())],
                1 => data.insert(at, alphabet[next(alphabet.len())]),
                _ => data.truncate(at.max(1)),
            }
        }
        if let Ok(c) = XenConfig::from_bytes(&data, p) {
            let _ = c.resolve_disks();
            let _ = c.vm_facts();
        }
    }
}
