//! `/boot/grub/grub.cfg` for the converted guest.
//!
//! A minimal equivalent of what Debian's `grub-mkconfig` (util/grub.d/10_linux.in) writes
//! for one kernel, plus what a headless KVM guest needs: GRUB on the serial port and the
//! screen, a short timeout, a default entry and a recovery (`single`) entry, the kernel
//! told to log to both consoles (the last `console=` becomes /dev/console) and to keep
//! the old interface names (`eth0`, as the Xen guest's config expects).
//!
//! Values are checked before they are written into the script: GRUB's script language has
//! quoting, variables and `;`, so a stray character in a kernel argument could change
//! the menu. Anything outside a conservative character set is refused.

use super::BootError;

/// How the disk is partitioned: which partition map module GRUB needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PartitionMap {
    /// MBR (`part_msdos`).
    Msdos,
    /// GPT (`part_gpt`).
    Gpt,
}

impl PartitionMap {
    /// The GRUB module that reads this partition map.
    pub fn module(self) -> &'static str {
        match self {
            PartitionMap::Msdos => "part_msdos",
            PartitionMap::Gpt => "part_gpt",
        }
    }
}

/// What goes into grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GrubConfig {
    /// UUID of the root filesystem (holds `/boot`), as `blkid` prints it.
    pub root_uuid: String,
    /// Kernel version: boots `/boot/vmlinuz-<version>` and `/boot/initrd.img-<version>`.
    pub kernel_version: String,
    /// Whether `/boot/initrd.img-<version>` exists (Debian kernels need it).
    pub initrd: bool,
    /// The initrd's file name in `/boot` when it is not `initrd.img-<version>`: dracut's
    /// `initramfs-<version>.img`, SUSE's `initrd-<version>` (a guest's own kernel).
    pub initrd_file: Option<String>,
    /// Partition map of the disk.
    pub partition_map: PartitionMap,
    /// Seconds the menu waits.
    pub timeout_secs: u32,
    /// Name shown in the menu, e.g. "Debian GNU/Linux".
    pub title: String,
    /// Extra kernel arguments appended to both entries (space-separated).
    pub extra_args: String,
    /// UUID of a separate `/boot` filesystem: GRUB searches it instead of the root, and
    /// the kernel and initrd are named from its top (`/vmlinuz-<version>`).
    pub boot_uuid: Option<String>,
}

impl GrubConfig {
    /// Defaults: MBR, initrd present, 3 s timeout, title "GNU/Linux", no extra arguments.
    pub fn new(root_uuid: impl Into<String>, kernel_version: impl Into<String>) -> Self {
        GrubConfig {
            root_uuid: root_uuid.into(),
            kernel_version: kernel_version.into(),
            initrd: true,
            initrd_file: None,
            partition_map: PartitionMap::Msdos,
            timeout_secs: 3,
            title: "GNU/Linux".into(),
            extra_args: String::new(),
            boot_uuid: None,
        }
    }

    /// The filesystem GRUB searches for: the separate `/boot`, else the root.
    pub fn search_uuid(&self) -> &str {
        self.boot_uuid.as_deref().unwrap_or(&self.root_uuid)
    }

    /// The directory the kernel is in, as GRUB names it on the filesystem it searched
    /// for: `/boot`, or the top of a separate `/boot` (empty).
    pub fn boot_dir(&self) -> &'static str {
        if self.boot_uuid.is_some() {
            ""
        } else {
            "/boot"
        }
    }

    /// The kernel command line of the default entry (without the image path).
    pub fn kernel_args(&self) -> String {
        let mut args = format!(
            "root=UUID={} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0",
            self.root_uuid
        );
        if !self.extra_args.trim().is_empty() {
            args.push(' ');
            args.push_str(self.extra_args.trim());
        }
        args
    }

    /// The initrd's file name in `/boot`.
    pub fn initrd_file(&self) -> String {
        self.initrd_file
            .clone()
            .unwrap_or_else(|| format!("initrd.img-{}", self.kernel_version))
    }

    fn validate(&self) -> Result<(), BootError> {
        let bad = |field: &'static str, value: &str, why: &'static str| BootError::BadConfigValue {
            field,
            value: value.chars().take(80).collect(),
            why,
        };
        let uuid_ok = |uuid: &str| {
            uuid.len() == 36
                && uuid.char_indices().all(|(i, c)| {
                    if [8, 13, 18, 23].contains(&i) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                })
        };
        for (field, uuid) in [
            ("root_uuid", Some(&self.root_uuid)),
            ("boot_uuid", self.boot_uuid.as_ref()),
        ] {
            if let Some(uuid) = uuid.filter(|u| !uuid_ok(u)) {
                return Err(bad(
                    field,
                    uuid,
                    "not a UUID like 01234567-89ab-cdef-0123-456789abcdef",
                ));
            }
        }
        let v = &self.kernel_version;
        if v.is_empty()
            || v.len() > 200
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
        {
            return Err(bad(
                "kernel_version",
                v,
                "only letters, digits and . _ + ~ - are allowed",
            ));
        }
        if let Some(f) = &self.initrd_file {
            if f.is_empty()
                || f.len() > 255
                || !f
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c))
            {
                return Err(bad(
                    "initrd_file",
                    f,
                    "a file name in /boot: only letters, digits and . _ + ~ - are allowed",
                ));
            }
        }
        if self.title.is_empty()
            || self.title.len() > 200
            || self
                .title
                .chars()
                .any(|c| c.is_control() || "'\\".contains(c))
        {
            return Err(bad(
                "title",
                &self.title,
                "must be non-empty, without quotes, backslashes or control characters",
            ));
        }
        if self.extra_args.len() > 2000
            || self
                .extra_args
                .chars()
                .any(|c| c.is_control() || "'\"$;{}`\\|&<>#".contains(c))
        {
            return Err(bad(
                "extra_args",
                &self.extra_args,
                "kernel arguments may not contain quotes, $ ; { } ` \\ | & < > # or control characters",
            ));
        }
        if self.timeout_secs > 3600 {
            return Err(bad(
                "timeout_secs",
                &self.timeout_secs.to_string(),
                "at most 3600",
            ));
        }
        Ok(())
    }
}

/// The grub.cfg text for `cfg`.
pub fn render(cfg: &GrubConfig) -> Result<String, BootError> {
    cfg.validate()?;
    let part = cfg.partition_map.module();
    let uuid = cfg.search_uuid();
    let dir = cfg.boot_dir();
    let ver = &cfg.kernel_version;
    let args = cfg.kernel_args();
    let mut out = String::new();
    out.push_str(&format!(
        "# grub.cfg written by imgconv for the converted guest (BIOS, serial + screen).\n\
         # The guest's previous grub.cfg, if any, is kept as grub.cfg.imgconv-orig.\n\
         # Running update-grub in the guest replaces this file.\n\
         \n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set default=0\n\
         set timeout={timeout}\n\
         set timeout_style=menu\n\
         \n\
         insmod {part}\n\
         insmod ext2\n\
         search --no-floppy --fs-uuid --set=root {uuid}\n",
        timeout = cfg.timeout_secs,
    ));
    for (title, id, extra) in [
        (
            format!("{}, with Linux {ver}", cfg.title),
            "imgconv-default",
            "",
        ),
        (
            format!("{}, with Linux {ver} (recovery mode)", cfg.title),
            "imgconv-recovery",
            " single",
        ),
    ] {
        out.push_str(&format!(
            "\nmenuentry '{title}' --id {id} {{\n\
             \tinsmod gzio\n\
             \tinsmod {part}\n\
             \tinsmod ext2\n\
             \tsearch --no-floppy --fs-uuid --set=root {uuid}\n\
             \techo 'Loading Linux {ver} ...'\n\
             \tlinux {dir}/vmlinuz-{ver} {args}{extra}\n"
        ));
        if cfg.initrd {
            out.push_str(&format!(
                "\techo 'Loading initial ramdisk ...'\n\
                 \tinitrd {dir}/{}\n",
                cfg.initrd_file(),
            ));
        }
        out.push_str("}\n");
    }
    Ok(out)
}

/// The files a GRUB menu loads: the path argument of every `linux`/`linux16`/`linuxefi`
/// line and every path of every `initrd`/`initrd16`/`initrdefi` line, each with the line
/// number (from 1). A `(device)` prefix is dropped (the converted disk has one
/// filesystem); a path built from a variable (`$root/…`) cannot be known and is skipped.
pub fn named_files(cfg: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in cfg.lines().enumerate() {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else {
            continue;
        };
        let paths: Vec<&str> = match cmd {
            "linux" | "linux16" | "linuxefi" => words.next().into_iter().collect(),
            "initrd" | "initrd16" | "initrdefi" => words.collect(),
            _ => continue,
        };
        for p in paths {
            if p.contains('$') || p.starts_with('-') {
                continue;
            }
            let p = match p.strip_prefix('(') {
                Some(rest) => rest.split_once(')').map_or(p, |(_, path)| path),
                None => p,
            };
            out.push((n + 1, p.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_a_menu_loads() {
        let cfg = "menuentry 'x' {\n\tlinux16 /boot/vmlinuz-3.10 root=UUID=x ro\n\tinitrd16 /boot/initramfs-3.10.img\n}\n\tlinux ($root)/vmlinuz\n\tlinux (hd0,msdos1)/boot/vmlinuz-6.1 ro\n\tinitrd /boot/ucode.img /boot/initrd.img-6.1\n# linux /boot/commented\n";
        assert_eq!(
            named_files(cfg),
            [
                (2, "/boot/vmlinuz-3.10".to_string()),
                (3, "/boot/initramfs-3.10.img".to_string()),
                (6, "/boot/vmlinuz-6.1".to_string()),
                (7, "/boot/ucode.img".to_string()),
                (7, "/boot/initrd.img-6.1".to_string()),
            ]
        );
    }

    const UUID: &str = "0f3c5a7e-1b2d-4c6e-8f90-a1b2c3d4e5f6";

    #[test]
    fn renders_serial_entries_and_root_uuid() {
        let mut cfg = GrubConfig::new(UUID, "6.1.0-18-amd64");
        cfg.title = "Debian GNU/Linux".into();
        cfg.extra_args = "quiet".into();
        let text = render(&cfg).unwrap();
        for want in [
            "serial --unit=0 --speed=115200\n",
            "terminal_input serial console\n",
            "terminal_output serial console\n",
            "set timeout=3\n",
            "insmod part_msdos\n",
            "insmod ext2\n",
            "insmod gzio\n",
            &format!("search --no-floppy --fs-uuid --set=root {UUID}\n"),
            &format!("\tlinux /boot/vmlinuz-6.1.0-18-amd64 root=UUID={UUID} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 quiet\n"),
            &format!("\tlinux /boot/vmlinuz-6.1.0-18-amd64 root=UUID={UUID} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 quiet single\n"),
            "\tinitrd /boot/initrd.img-6.1.0-18-amd64\n",
            "menuentry 'Debian GNU/Linux, with Linux 6.1.0-18-amd64' --id imgconv-default {\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert_eq!(text.matches("menuentry ").count(), 2);
        assert_eq!(text.matches("initrd /boot").count(), 2);
        // Braces balance: every entry is closed.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn dracut_initrd_name() {
        let mut cfg = GrubConfig::new(UUID, "3.10.0-1160.el7.x86_64");
        cfg.initrd_file = Some("initramfs-3.10.0-1160.el7.x86_64.img".into());
        let text = render(&cfg).unwrap();
        assert_eq!(
            text.matches("\tinitrd /boot/initramfs-3.10.0-1160.el7.x86_64.img\n")
                .count(),
            2
        );
        cfg.initrd_file = Some("../x".into());
        assert!(render(&cfg).is_err());
    }

    #[test]
    fn a_separate_boot_is_searched_and_named_from_its_top() {
        const BOOT: &str = "3d3d3d3d-0002-4000-8000-00000000a002";
        let mut cfg = GrubConfig::new(UUID, "6.1.0");
        cfg.boot_uuid = Some(BOOT.into());
        let text = render(&cfg).unwrap();
        assert_eq!(
            text.matches(&format!("search --no-floppy --fs-uuid --set=root {BOOT}\n"))
                .count(),
            3
        );
        assert!(text.contains(&format!("\tlinux /vmlinuz-6.1.0 root=UUID={UUID} ro")));
        assert!(text.contains("\tinitrd /initrd.img-6.1.0\n"));
        assert!(!text.contains("/boot/"), "{text}");
        cfg.boot_uuid = Some("x".into());
        assert!(matches!(
            render(&cfg),
            Err(BootError::BadConfigValue {
                field: "boot_uuid",
                ..
            })
        ));
    }

    #[test]
    fn gpt_and_no_initrd() {
        let mut cfg = GrubConfig::new(UUID, "6.1.0");
        cfg.partition_map = PartitionMap::Gpt;
        cfg.initrd = false;
        cfg.timeout_secs = 1;
        let text = render(&cfg).unwrap();
        assert!(text.contains("insmod part_gpt\n") && !text.contains("part_msdos"));
        assert!(!text.contains("initrd"));
        assert!(text.contains("set timeout=1\n"));
    }

    #[test]
    fn refuses_values_that_would_change_the_script() {
        let cases: Vec<(&str, GrubConfig)> = vec![
            ("root_uuid", GrubConfig::new("not-a-uuid", "6.1")),
            (
                "root_uuid",
                GrubConfig::new(format!("{}x", &UUID[..35]), "6.1"),
            ),
            ("kernel_version", GrubConfig::new(UUID, "6.1; reboot")),
            ("kernel_version", GrubConfig::new(UUID, "")),
            ("extra_args", {
                let mut c = GrubConfig::new(UUID, "6.1");
                c.extra_args = "quiet\nmenuentry x {".into();
                c
            }),
            ("extra_args", {
                let mut c = GrubConfig::new(UUID, "6.1");
                c.extra_args = "init=$x".into();
                c
            }),
            ("title", {
                let mut c = GrubConfig::new(UUID, "6.1");
                c.title = "it's".into();
                c
            }),
        ];
        for (field, cfg) in cases {
            match render(&cfg) {
                Err(BootError::BadConfigValue { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
