//! Xen domU configs (xl and xm syntax): the guest's disks, where their images are on this
//! machine, and the machine's name, memory, vCPUs and NICs.
//!
//! References: xl.cfg(5) (settings), xl-disk-configuration(5) (`disk` entries),
//! libxlu's lexer (`tools/libs/util/libxlu_cfg_l.l`: strings, integers, lists, `#`
//! comments, `;` or newline between settings).
//!
//! **Nothing of the file is run.** xm read its configs as Python; imgconv reads only the
//! subset xl reads: top-level `KEY = VALUE` settings whose value is a literal string,
//! integer or list. Other Python statements (`import os, re`, `if` blocks, computed
//! values such as xmexample.hvm's `device_model = '/usr/' + arch_libdir + ...`) are
//! skipped and listed in [`XenConfig::ignored`]: they are common in real xm configs and
//! almost never touch what a conversion reads, so refusing them would refuse working
//! configs. A setting imgconv *does* read ([`READ_KEYS`]) that is computed, or set inside
//! a block or after a `:`, is refused with its line: its value depends on code that is not
//! run, and guessing it could convert the wrong disk.
//!
//! Disk images are found by [`XenConfig::resolve_disks`]: a target that exists here is
//! used as named; an absolute dom0 path that does not exist here (the config was copied
//! off its dom0 with the images), or a relative one, is looked up beside the config file.

mod disk;
mod guest;
mod syntax;

pub use disk::{DevFamily, DiskArg, DiskBackend, DiskFormat, DiskSpec, XenDevice};
pub use guest::{GuestDisk, XenGuest};
pub use syntax::{MAX_DEPTH, MAX_LIST_ITEMS, MAX_STRING_BYTES};

use crate::vm::{normalise_mac, Nic, VmDisk, VmFacts};
use std::io::Read;
use std::path::{Path, PathBuf};
use syntax::{Statement, Value};

/// Largest config file read, in bytes (real ones are a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The settings imgconv reads; every other one is skipped.
pub const READ_KEYS: &[&str] = &[
    "name",
    "memory",
    "maxmem",
    "vcpus",
    "disk",
    "vif",
    "root",
    "extra",
    "cmdline",
    "bootloader",
    "kernel",
    "ramdisk",
    "builder",
    "type",
];

/// A failure reading a domU config or finding its disk images.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XenConfigError {
    /// The config file cannot be read.
    #[error("cannot read the Xen domain config {}: {source}", path.display())]
    Io {
        /// The config file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`].
    #[error("{} is larger than {max} bytes, too large for a Xen domain config", path.display())]
    TooLarge {
        /// The config file.
        path: PathBuf,
        /// The limit.
        max: u64,
    },
    /// A failure at a place in the config file, with the file named.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The config file.
        path: PathBuf,
        /// What is wrong there.
        #[source]
        source: Box<XenConfigError>,
    },
    /// A NUL byte or bytes that are not UTF-8: not a text config.
    #[error("line {line}: not text (a NUL byte or invalid UTF-8)")]
    NotText {
        /// The first line with such a byte.
        line: usize,
    },
    /// The file does not tokenize (an unclosed string or bracket, a stray character).
    #[error("line {line}: {what}")]
    Syntax {
        /// Where.
        line: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Brackets nested deeper than [`MAX_DEPTH`].
    #[error("line {line}: brackets nested deeper than {max}")]
    TooDeep {
        /// Where.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A string literal longer than [`MAX_STRING_BYTES`].
    #[error("line {line}: a string longer than {max} bytes")]
    StringTooLong {
        /// Where the string starts.
        line: usize,
        /// The limit.
        max: usize,
    },
    /// A setting imgconv reads whose value is not a literal.
    #[error("line {line}: `{key}` is {why}; imgconv reads only literal values and runs nothing of the file")]
    NotLiteral {
        /// Where.
        line: usize,
        /// The setting.
        key: String,
        /// What the value is instead.
        why: &'static str,
    },
    /// A setting imgconv reads that is set inside a Python block or after a `:`.
    #[error("line {line}: `{key}` is set conditionally (inside a Python block), so its value depends on code imgconv does not run; set it once, unconditionally")]
    Conditional {
        /// Where.
        line: usize,
        /// The setting.
        key: String,
    },
    /// A setting with a value of the wrong kind or out of range.
    #[error("line {line}: `{key}` {why}")]
    BadValue {
        /// Where.
        line: usize,
        /// The setting.
        key: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `disk` entry that does not parse.
    #[error("line {line}: disk entry '{spec}': {reason}")]
    BadDisk {
        /// Where.
        line: usize,
        /// The entry.
        spec: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A `vif` entry that does not parse.
    #[error("line {line}: vif entry '{spec}': {reason}")]
    BadVif {
        /// Where.
        line: usize,
        /// The entry.
        spec: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two disk entries give the guest the same device.
    #[error("line {line}: the guest device {vdev} is given twice")]
    DuplicateDevice {
        /// The second entry's line.
        line: usize,
        /// The device.
        vdev: XenDevice,
    },
    /// The config names no disk of the guest.
    #[error("{}: names no disk of the guest (`disk = [ ... ]`)", path.display())]
    NoDisks {
        /// The config file.
        path: PathBuf,
    },
    /// A disk's image is neither where the config says nor beside the config.
    #[error("the image of {vdev} (line {line}, '{target}') is not found; looked at: {}", looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    DiskNotFound {
        /// The config line of the entry.
        line: usize,
        /// The guest device.
        vdev: XenDevice,
        /// The target as the config names it.
        target: String,
        /// Every path tried, in order.
        looked: Vec<PathBuf>,
    },
    /// Two disks resolve to the same image (their file names are equal and both were
    /// looked up beside the config).
    #[error("{first} and {second} both resolve to {}; put each image where its entry names it", path.display())]
    SameImage {
        /// The first device.
        first: XenDevice,
        /// The second device.
        second: XenDevice,
        /// The image both found.
        path: PathBuf,
    },
    /// A disk attached through a dom0 hotplug script: its target is not a path.
    #[error("{vdev} (line {line}) is attached by the dom0 script `{script}` ('{target}'), not from an image file; give the image itself instead")]
    ScriptTarget {
        /// The config line.
        line: usize,
        /// The guest device.
        vdev: XenDevice,
        /// The script.
        script: String,
        /// The target as written.
        target: String,
    },
    /// None of the config's disks holds the guest's root filesystem.
    #[error("{}: no disk of the guest holds its root filesystem: {}", path.display(), findings.join("; "))]
    NoRootDisk {
        /// The config file.
        path: PathBuf,
        /// What each disk holds instead, one line per disk.
        findings: Vec<String>,
    },
    /// A disk whose config names an image format imgconv does not read, and whose content
    /// is not one it reads either.
    #[error("{vdev} ({}): the config says format {format}, which imgconv does not read (it reads raw, qcow2, VHD and XVA images by their content)", path.display())]
    UnreadFormat {
        /// The guest device.
        vdev: XenDevice,
        /// The image.
        path: PathBuf,
        /// The format the config names.
        format: &'static str,
    },
    /// A `PATH=XENDEV` argument that does not parse.
    #[error("disk argument `{arg}`: {reason}")]
    BadDiskArg {
        /// The argument.
        arg: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl XenConfigError {
    /// What the error concerns: a bad `PATH=XENDEV` is the options'; everything else is
    /// the source's (the config and its images are what is converted).
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            XenConfigError::BadDiskArg { .. } => crate::ErrorKind::Options,
            XenConfigError::Io { source, .. } => {
                crate::error::io_kind(source, crate::ErrorKind::Input)
            }
            XenConfigError::InFile { source, .. } => source.kind(),
            _ => crate::ErrorKind::Input,
        }
    }
}

/// `type` (xl) or `builder` (xm): how Xen ran the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestType {
    /// Paravirtualised (`type = "pv"`, `builder = "linux"`, or neither).
    Pv,
    /// PVH.
    Pvh,
    /// Fully virtualised (`type = "hvm"`, `builder = "hvm"`).
    Hvm,
}

/// One `vif` entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Vif {
    /// The entry as written.
    pub spec: String,
    /// Its line.
    pub line: usize,
    /// `mac=`, lower case and colon separated; `None` when Xen chose one at random.
    pub mac: Option<String>,
    /// `bridge=`.
    pub bridge: Option<String>,
    /// `ip=`.
    pub ip: Option<String>,
    /// `model=` (HVM: `e1000`, `rtl8139`).
    pub model: Option<String>,
}

/// A statement of the file that was not read, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Ignored {
    /// The line it starts on.
    pub line: usize,
    /// What it is.
    pub what: String,
}

/// What a domU config says about the guest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct XenConfig {
    /// The config file (images are looked up beside it).
    pub path: PathBuf,
    /// `name`.
    pub name: Option<String>,
    /// `memory`, MiB.
    pub memory_mib: Option<u64>,
    /// `maxmem`, MiB.
    pub maxmem_mib: Option<u64>,
    /// `vcpus`.
    pub vcpus: Option<u32>,
    /// The guest's disks, in config order (CD-ROM drives are in [`XenConfig::cdroms`]).
    pub disks: Vec<DiskSpec>,
    /// CD-ROM drives: not part of the guest's system, not converted.
    pub cdroms: Vec<DiskSpec>,
    /// `vif` entries, in order.
    pub vifs: Vec<Vif>,
    /// `root` (xl puts `root=` before it on the kernel command line).
    pub root: Option<String>,
    /// `extra`.
    pub extra: Option<String>,
    /// `cmdline` (xl: replaces `root` and `extra`).
    pub cmdline: Option<String>,
    /// `bootloader` (`pygrub`, `/usr/bin/pygrub`).
    pub bootloader: Option<String>,
    /// `kernel`: a dom0 path, usually absent from the guest.
    pub kernel: Option<String>,
    /// `ramdisk`: a dom0 path.
    pub ramdisk: Option<String>,
    /// `type`, or xm's `builder`.
    pub guest_type: Option<GuestType>,
    /// Statements not read (Python code, settings whose values are computed), in order.
    pub ignored: Vec<Ignored>,
}

/// How a disk's image was found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Found {
    /// The target exists here as named.
    AsNamed,
    /// The target is relative and was found relative to the config's directory.
    RelativeToConfig,
    /// The target does not exist here; its file name was found beside the config.
    BesideConfig,
}

/// A disk of the guest and the image used for it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedDisk {
    /// The config's entry.
    pub disk: DiskSpec,
    /// The image file or block device to read.
    pub path: PathBuf,
    /// Which lookup found it.
    pub found: Found,
}

impl ResolvedDisk {
    /// One line saying which image is used for the disk and which lookup found it.
    pub fn note(&self) -> String {
        let (vdev, target, path) = (self.disk.vdev, &self.disk.target, self.path.display());
        match self.found {
            Found::AsNamed => format!("{vdev}: {path}"),
            Found::RelativeToConfig => {
                format!("{vdev}: {target} is relative; using it beside the config: {path}")
            }
            Found::BesideConfig => {
                format!("{vdev}: {target} does not exist here; using the file of that name beside the config: {path}")
            }
        }
    }
}

impl XenConfig {
    /// Read and parse the config file at `path`.
    pub fn from_file(path: &Path) -> Result<XenConfig, XenConfigError> {
        let io = |source| XenConfigError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut data = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut data)
            .map_err(io)?;
        XenConfig::from_bytes(&data, path)
    }

    /// Parse a config's bytes; `path` is where it was read from (images are looked up
    /// beside it). Errors name `path`.
    pub fn from_bytes(data: &[u8], path: &Path) -> Result<XenConfig, XenConfigError> {
        if data.len() as u64 > MAX_CONFIG_BYTES {
            return Err(XenConfigError::TooLarge {
                path: path.to_path_buf(),
                max: MAX_CONFIG_BYTES,
            });
        }
        let in_file = |e| XenConfigError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        let text = match std::str::from_utf8(data) {
            Ok(t) if !t.contains('\0') => t,
            _ => {
                let good = match std::str::from_utf8(data) {
                    Ok(t) => t.find('\0').unwrap_or(0),
                    Err(e) => e.valid_up_to(),
                };
                let line = 1 + data[..good].iter().filter(|&&b| b == b'\n').count();
                return Err(in_file(XenConfigError::NotText { line }));
            }
        };
        XenConfig::parse(text, path).map_err(in_file)
    }

    /// Parse a config's text (errors carry line numbers, not the path).
    pub fn parse(text: &str, path: &Path) -> Result<XenConfig, XenConfigError> {
        let mut cfg = XenConfig {
            path: path.to_path_buf(),
            name: None,
            memory_mib: None,
            maxmem_mib: None,
            vcpus: None,
            disks: Vec::new(),
            cdroms: Vec::new(),
            vifs: Vec::new(),
            root: None,
            extra: None,
            cmdline: None,
            bootloader: None,
            kernel: None,
            ramdisk: None,
            guest_type: None,
            ignored: Vec::new(),
        };
        // Later settings replace earlier ones (xl and Python agree), so keep the last.
        let mut settings: Vec<(&'static str, usize, Value)> = Vec::new();
        for st in syntax::statements(text)? {
            match st {
                Statement::Assign {
                    key,
                    line,
                    value,
                    in_block,
                } => match (READ_KEYS.iter().copied().find(|k| *k == key), value) {
                    (Some(_), _) if in_block => {
                        return Err(XenConfigError::Conditional { line, key })
                    }
                    (Some(_), Err(why)) => {
                        return Err(XenConfigError::NotLiteral { line, key, why })
                    }
                    (Some(k), Ok(v)) => {
                        settings.retain(|(s, _, _)| *s != k);
                        settings.push((k, line, v));
                    }
                    (None, Err(_)) => cfg.ignored.push(Ignored {
                        line,
                        what: format!("`{key}` is not a literal value (not read)"),
                    }),
                    (None, Ok(_)) if in_block => cfg.ignored.push(Ignored {
                        line,
                        what: format!("`{key}` is set inside a Python block (not read)"),
                    }),
                    (None, Ok(_)) => {}
                },
                Statement::Other {
                    line,
                    assigns,
                    in_block,
                } => {
                    if let Some(key) = assigns
                        .into_iter()
                        .find(|k| READ_KEYS.contains(&k.as_str()))
                    {
                        return Err(XenConfigError::Conditional { line, key });
                    }
                    cfg.ignored.push(Ignored {
                        line,
                        what: if in_block {
                            "a statement inside a Python block (not run)".into()
                        } else {
                            "a Python statement, not a setting (not run)".into()
                        },
                    });
                }
            }
        }
        for (key, line, value) in settings {
            cfg.set(key, line, value)?;
        }
        Ok(cfg)
    }

    fn set(&mut self, key: &'static str, line: usize, value: Value) -> Result<(), XenConfigError> {
        let bad = |why| XenConfigError::BadValue { line, key, why };
        let string = |v: Value| match v {
            Value::Str(s) => Ok(s),
            _ => Err(bad("is not a string")),
        };
        // xen-tools writes numbers quoted (`memory = '512'`); xl's own parser takes both.
        let number = |v: Value| -> Result<u64, XenConfigError> {
            let n = match v {
                Value::Int(i) => u64::try_from(i).ok(),
                Value::Str(s) => s.trim().parse::<u64>().ok(),
                Value::List(_) => None,
            };
            n.filter(|n| *n > 0)
                .ok_or_else(|| bad("is not a positive integer"))
        };
        match key {
            "name" => self.name = Some(string(value)?).filter(|s| !s.is_empty()),
            "memory" => {
                self.memory_mib = Some(mib(number(value)?).ok_or_else(|| bad("is too large"))?)
            }
            "maxmem" => {
                self.maxmem_mib = Some(mib(number(value)?).ok_or_else(|| bad("is too large"))?)
            }
            "vcpus" => {
                let n = number(value)?;
                self.vcpus = Some(
                    u32::try_from(n)
                        .ok()
                        .filter(|n| *n <= 4096)
                        .ok_or_else(|| bad("is more than 4096"))?,
                );
            }
            "root" => self.root = Some(string(value)?),
            "extra" => self.extra = Some(string(value)?),
            "cmdline" => self.cmdline = Some(string(value)?),
            "bootloader" => self.bootloader = Some(string(value)?),
            "kernel" => self.kernel = Some(string(value)?),
            "ramdisk" => self.ramdisk = Some(string(value)?),
            "type" | "builder" => {
                let t = match string(value)?.as_str() {
                    "pv" | "linux" => GuestType::Pv,
                    "pvh" => GuestType::Pvh,
                    "hvm" => GuestType::Hvm,
                    _ => {
                        return Err(bad(
                            "is none of pv, pvh, hvm (type) or linux, hvm (builder)",
                        ))
                    }
                };
                // xl's `type` wins over the older `builder`.
                if key == "type" || self.guest_type.is_none() {
                    self.guest_type = Some(t);
                }
            }
            "disk" => {
                for (item, item_line) in list(value, line) {
                    let Value::Str(spec) = item else {
                        return Err(XenConfigError::BadValue {
                            line: item_line,
                            key,
                            why: "holds an entry that is not a string",
                        });
                    };
                    let d = DiskSpec::parse(&spec, item_line)?;
                    if self
                        .disks
                        .iter()
                        .chain(&self.cdroms)
                        .any(|o| o.vdev == d.vdev)
                    {
                        return Err(XenConfigError::DuplicateDevice {
                            line: item_line,
                            vdev: d.vdev,
                        });
                    }
                    if d.cdrom {
                        self.cdroms.push(d);
                    } else {
                        self.disks.push(d);
                    }
                }
            }
            "vif" => {
                for (item, item_line) in list(value, line) {
                    let Value::Str(spec) = item else {
                        return Err(XenConfigError::BadValue {
                            line: item_line,
                            key,
                            why: "holds an entry that is not a string",
                        });
                    };
                    self.vifs.push(parse_vif(spec, item_line)?);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The kernel command line Xen gave the guest: `cmdline`, or `root=ROOT EXTRA`.
    pub fn kernel_cmdline(&self) -> Option<String> {
        if let Some(c) = &self.cmdline {
            return Some(c.clone());
        }
        let parts: Vec<String> = self
            .root
            .iter()
            .map(|r| format!("root={r}"))
            .chain(self.extra.iter().cloned())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The directory images are looked up in: the config's own.
    pub fn config_dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// The image of every disk of the guest (CD-ROMs aside), in config order.
    ///
    /// A target that exists here (a file or a block device) is used as named. A relative
    /// target is looked up relative to the config's directory. An absolute target that
    /// does not exist here (a dom0 path: `/srv/xen/web1/disk.img`, `phy:/dev/vg/web1`) is
    /// looked up by its file name (`disk.img`, `web1`) beside the config. A disk found
    /// nowhere is an error listing every place looked; two disks found at one image are
    /// an error too.
    pub fn resolve_disks(&self) -> Result<Vec<ResolvedDisk>, XenConfigError> {
        if self.disks.is_empty() {
            return Err(XenConfigError::NoDisks {
                path: self.path.clone(),
            });
        }
        let mut out: Vec<ResolvedDisk> = Vec::with_capacity(self.disks.len());
        for d in &self.disks {
            let r = resolve_one(d, self.config_dir())?;
            let key = std::fs::canonicalize(&r.path).unwrap_or_else(|_| r.path.clone());
            if let Some(o) = out
                .iter()
                .find(|o| std::fs::canonicalize(&o.path).unwrap_or_else(|_| o.path.clone()) == key)
            {
                return Err(XenConfigError::SameImage {
                    first: o.disk.vdev,
                    second: d.vdev,
                    path: r.path,
                });
            }
            out.push(r);
        }
        Ok(out)
    }

    /// The machine's facts for the conversion report and the libvirt definition: name,
    /// memory, vCPUs, NICs with a MAC, and the disks (all of them converted).
    pub fn vm_facts(&self) -> VmFacts {
        VmFacts {
            origin: self.path.display().to_string(),
            name: self.name.clone(),
            memory_bytes: self.memory_mib.and_then(|m| m.checked_mul(1 << 20)),
            vcpus: self.vcpus,
            nics: self
                .vifs
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.mac.clone().map(|mac| Nic {
                        mac,
                        device: Some(i.to_string()),
                    })
                })
                .collect(),
            disks: self
                .disks
                .iter()
                .map(|d| VmDisk {
                    id: d.target.clone(),
                    device: Some(d.vdev.to_string()),
                    size: None,
                    bootable: false,
                    converted: true,
                })
                .collect(),
            kernel_cmdline: self.kernel_cmdline(),
        }
    }
}

fn mib(n: u64) -> Option<u64> {
    n.checked_mul(1 << 20).map(|_| n)
}

/// A list setting's items; a single string stands for a list of one.
fn list(value: Value, line: usize) -> Vec<(Value, usize)> {
    match value {
        Value::List(items) => items,
        other => vec![(other, line)],
    }
}

fn parse_vif(spec: String, line: usize) -> Result<Vif, XenConfigError> {
    let mut vif = Vif {
        spec: String::new(),
        line,
        mac: None,
        bridge: None,
        ip: None,
        model: None,
    };
    for item in spec.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        let v = v.trim();
        match k.trim() {
            "mac" => {
                vif.mac = Some(normalise_mac(v).ok_or_else(|| XenConfigError::BadVif {
                    line,
                    spec: spec.clone(),
                    reason: "the MAC address is not six hexadecimal pairs",
                })?);
            }
            "bridge" => vif.bridge = Some(v.to_string()),
            "ip" => vif.ip = Some(v.to_string()),
            "model" => vif.model = Some(v.to_string()),
            // Scripts, rates, backend domains, names: nothing the converted guest keeps.
            _ => {}
        }
    }
    vif.spec = spec;
    Ok(vif)
}

/// A path imgconv can read a disk from: a regular file or a block device.
fn usable(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() || m.file_type().is_block_device())
}

fn resolve_one(d: &DiskSpec, dir: &Path) -> Result<ResolvedDisk, XenConfigError> {
    if let DiskBackend::Script(script) = &d.backend {
        return Err(XenConfigError::ScriptTarget {
            line: d.line,
            vdev: d.vdev,
            script: script.clone(),
            target: d.target.clone(),
        });
    }
    let target = Path::new(&d.target);
    let mut tries: Vec<(PathBuf, Found)> = Vec::new();
    if target.is_absolute() {
        tries.push((target.to_path_buf(), Found::AsNamed));
    } else {
        tries.push((dir.join(target), Found::RelativeToConfig));
    }
    if let Some(name) = target.file_name() {
        let beside = dir.join(name);
        if tries.iter().all(|(p, _)| *p != beside) {
            tries.push((beside, Found::BesideConfig));
        }
    }
    for (path, found) in &tries {
        if usable(path) {
            return Ok(ResolvedDisk {
                disk: d.clone(),
                path: path.clone(),
                found: found.clone(),
            });
        }
    }
    Err(XenConfigError::DiskNotFound {
        line: d.line,
        vdev: d.vdev,
        target: d.target.clone(),
        looked: tries.into_iter().map(|(p, _)| p).collect(),
    })
}

#[cfg(test)]
mod tests;
