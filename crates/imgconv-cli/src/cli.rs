//! The command line, as clap derive types. Parsing only: no work happens here.

use crate::size::parse_size;
use clap::{Args, Parser, Subcommand, ValueEnum};
use imgconv_core::source::SourceDisk;
use std::path::PathBuf;

/// `--disk PATH=XENDEV`.
fn parse_disk(arg: &str) -> Result<SourceDisk, String> {
    SourceDisk::parse(arg)
}

/// Convert exported Xen PV guest images into raw disk images that boot under KVM/QEMU.
#[derive(Debug, Parser)]
#[command(name = "imgconv", version, about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 bad input image, 4 donor problem, \
5 output problem, 6 verification failed, 130 cancelled (see README)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Tell what a source image is: layout, filesystem, guest OS, kernels, Xen-isms.
    Inspect(InspectArgs),
    /// Convert one Xen image into a bootable raw disk image.
    Convert(ConvertArgs),
    /// Convert many images in parallel, with a summary and a JSON report.
    Batch(BatchArgs),
    /// Check a converted image: partition table, fsck, swap, GRUB files, boot code;
    /// optionally boot it under QEMU.
    Verify(VerifyArgs),
    /// Work with batch reports: `imgconv report merge A.json B.json -o all.json`.
    Report(ReportArgs),
    /// Print a shell completion script on stdout, e.g.
    /// `imgconv completions bash > /etc/bash_completion.d/imgconv`.
    Completions(CompletionsArgs),
    /// Write the manual pages (imgconv.1 and one per subcommand) into DIR.
    Manpage(ManpageArgs),
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell the script is for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManpageArgs {
    /// Directory the pages go to (created if missing), e.g. /usr/local/share/man/man1.
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The Xen guest image (bare ext2/3/4 filesystem or partitioned disk).
    #[arg(required_unless_present = "xen_config", conflicts_with = "xen_config")]
    pub source: Option<PathBuf>,
    /// A Xen domain config (/etc/xen/NAME.cfg, xl or xm syntax) instead of SOURCE: all of
    /// its disks, each image looked up as named, then beside the config.
    #[arg(long, value_name = "CFG")]
    pub xen_config: Option<PathBuf>,
    /// Print machine-readable JSON on stdout instead of the human summary.
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
    /// After the summary, print every field the inspection found.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Another disk image of the guest and its Xen device name (home.img=xvdb1, or
    /// data.img=xvdc for a partitioned disk); repeatable. With --xen-config: disks the
    /// config does not name, added after its own.
    #[arg(long = "disk", value_name = "PATH=XENDEV", value_parser = parse_disk)]
    pub disks: Vec<SourceDisk>,
}

/// When to run `e2fsck -fn` around a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsckWhen {
    /// Never.
    #[default]
    None,
    /// On the input's root filesystem, before converting (read-only).
    Pre,
    /// On the output's root filesystem, after converting.
    Post,
    /// Both.
    Both,
}

impl FsckWhen {
    pub fn pre(self) -> bool {
        matches!(self, FsckWhen::Pre | FsckWhen::Both)
    }
    pub fn post(self) -> bool {
        matches!(self, FsckWhen::Post | FsckWhen::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FirmwareArg {
    /// MBR disk with GRUB i386-pc boot code.
    Bios,
    /// GPT disk with an EFI System Partition (shim + GRUB).
    Uefi,
    /// GPT disk that boots with UEFI and with a PC BIOS.
    Hybrid,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum KernelSourceArg {
    /// The guest's own kernel when its initrd has the drivers for the bus and the root
    /// filesystem, else the donor's.
    #[default]
    Auto,
    /// The guest's own kernel (the donor's if its initrd lacks the drivers and a donor is
    /// given; refused without one).
    Guest,
    /// The donor's kernel.
    Donor,
}

impl From<KernelSourceArg> for imgconv_core::convert::KernelSource {
    fn from(k: KernelSourceArg) -> Self {
        match k {
            KernelSourceArg::Auto => imgconv_core::convert::KernelSource::Auto,
            KernelSourceArg::Guest => imgconv_core::convert::KernelSource::Guest,
            KernelSourceArg::Donor => imgconv_core::convert::KernelSource::Donor,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// A sparse raw image.
    Raw,
    /// qcow2 (version 3, zero clusters unallocated).
    Qcow2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BusArg {
    Virtio,
    Sata,
    Ide,
}

impl From<BusArg> for imgconv_core::convert::DiskBus {
    fn from(b: BusArg) -> Self {
        match b {
            BusArg::Virtio => imgconv_core::convert::DiskBus::Virtio,
            BusArg::Sata => imgconv_core::convert::DiskBus::Sata,
            BusArg::Ide => imgconv_core::convert::DiskBus::Ide,
        }
    }
}

/// Conversion settings shared by `convert` and `batch`.
#[derive(Debug, Clone, Args)]
pub struct ConversionSettings {
    /// Donor: a bootable HVM disk image, a bare filesystem image or a directory holding
    /// a kernel, its initrd and /lib/modules.
    #[arg(long, value_name = "DONOR")]
    pub donor: Option<PathBuf>,
    /// Swap partition size (0 for none), e.g. 512M, 1G.
    #[arg(long = "swap", value_name = "SIZE", value_parser = parse_size, default_value = "512M")]
    pub swap: u64,
    /// Total disk size (default: the source plus room for the graft).
    #[arg(long = "size", value_name = "SIZE", value_parser = parse_size)]
    pub size: Option<u64>,
    /// Donor kernel version to graft instead of the newest.
    #[arg(long = "kernel", value_name = "VER")]
    pub kernel: Option<String>,
    /// Keep a non-Xen kernel the guest already has instead of grafting the donor's (the
    /// same as --kernel-source guest).
    #[arg(long)]
    pub use_guest_kernel: bool,
    /// Which kernel boots the guest; the plan says which and why.
    #[arg(long, value_enum, default_value = "auto")]
    pub kernel_source: KernelSourceArg,
    /// Refuse a guest userland known not to work with the donor kernel (udev too old,
    /// module compression its tools cannot read) instead of warning.
    #[arg(long)]
    pub strict: bool,
    /// Leave cloud-init's datasources as they are (by default: NoCloud, None).
    #[arg(long)]
    pub keep_cloud_init: bool,
    /// Firmware the disk boots with.
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: FirmwareArg,
    /// Disk bus the converted guest will run on (decides device names in fstab).
    #[arg(long, value_enum, default_value = "virtio")]
    pub bus: BusArg,
    /// Container of the output disk.
    #[arg(long = "format", value_enum, default_value = "raw")]
    pub format: FormatArg,
    /// Replay a dirty journal in the output copy (the input is never touched).
    #[arg(long)]
    pub replay_journal: bool,
    /// Repair the output copy with e2fsck -fy before grafting, instead of refusing: a
    /// filesystem whose bitmaps cannot be trusted (not cleanly unmounted, or errors
    /// recorded), or files sharing blocks or owning blocks the bitmaps call free. The
    /// input is never touched.
    #[arg(long)]
    pub repair: bool,
    /// Arguments appended to the kernel command line in grub.cfg, e.g. "quiet
    /// systemd.unit=multi-user.target" (repeatable; no quotes, $ ; { } ` \ | & < > #).
    #[arg(long = "kernel-cmdline", value_name = "ARGS")]
    pub kernel_cmdline: Vec<String>,
    /// GRUB i386-pc module directory to use instead of the donor's.
    #[arg(long, value_name = "DIR")]
    pub grub_dir: Option<PathBuf>,
    /// Take GRUB and EFI boot files only from the donor (or --grub-dir), never from this
    /// machine's /usr/lib/grub or shim packages, and never build GRUB with its grub-mkimage.
    #[arg(long)]
    pub no_host_files: bool,
    /// Run `e2fsck -fn` on the input root before, the output root after, or both.
    #[arg(long, value_enum, default_value = "none")]
    pub fsck: FsckWhen,
    /// Run the fsck checks on a read-only loop device instead of the rootless
    /// `file?offset=N` form (needs root).
    #[arg(long = "loop")]
    pub use_loop: bool,
    /// Overwrite existing outputs.
    #[arg(long)]
    pub force: bool,
    /// Print only errors and the final result.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// The Xen guest image (bare ext2/3/4 filesystem or partitioned disk). Never modified.
    #[arg(required_unless_present = "xen_config", conflicts_with = "xen_config")]
    pub source: Option<PathBuf>,
    /// A Xen domain config (/etc/xen/NAME.cfg, xl or xm syntax) instead of SOURCE: all of
    /// its disks are converted into one output (the disk holding the root is found by
    /// content), each image looked up as named, then beside the config; its name,
    /// memory, vCPUs and MACs go into the report and --libvirt-xml. Never modified.
    #[arg(long, value_name = "CFG")]
    pub xen_config: Option<PathBuf>,
    /// The disk image to write (raw, or qcow2 with --format qcow2).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    #[command(flatten)]
    pub settings: ConversionSettings,
    /// Another disk image of the guest and its Xen device name (home.img=xvdb1, or
    /// data.img=xvdc for a partitioned disk); repeatable. Each of its filesystems becomes
    /// a partition of the output. Never modified. With --xen-config: disks the config does
    /// not name, added after its own.
    #[arg(long = "disk", value_name = "PATH=XENDEV", value_parser = parse_disk)]
    pub disks: Vec<SourceDisk>,
    /// Print the plan (layout, kernel, fixups) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print a unified diff of every guest file the fixups change (with --dry-run: would
    /// change): edits, new files, files moved aside, with git's a/ b/ headers.
    #[arg(long)]
    pub diff: bool,
    /// Write the conversion report (plan, changes, warnings, timings) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write a libvirt domain definition for the converted disk to FILE (`virsh define
    /// FILE`): name, memory, vCPUs and MAC addresses from the export when it records them
    /// (an XVA's ova.xml, a --xen-config), the disk on --bus, firmware per --firmware, a serial console.
    #[arg(long, value_name = "FILE")]
    pub libvirt_xml: Option<PathBuf>,
    /// Domain name in the libvirt definition (default: the export's, else OUT's stem).
    #[arg(long, value_name = "NAME", requires = "libvirt_xml")]
    pub vm_name: Option<String>,
    /// Memory in the libvirt definition (default: the export's, else 1G).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "libvirt_xml")]
    pub memory: Option<u64>,
    /// vCPUs in the libvirt definition (default: the export's, else 1).
    #[arg(long, value_name = "N", requires = "libvirt_xml",
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub vcpus: Option<u32>,
}

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// Source images, or Xen domain configs (`.cfg`: all of the guest's disks into one
    /// output named after the config's `name`); or use --dir.
    #[arg(required_unless_present = "dir", conflicts_with = "dir")]
    pub sources: Vec<PathBuf>,
    /// Convert every regular file in DIR (sorted by name, hidden files skipped).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where outputs go: <out-dir>/<stem>.raw for each source.
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Conversions run at once: 1 to 64, or `auto` (the default): starts at 1 and adds one
    /// while the measured throughput rises by 10% or more, stepping back and holding when
    /// a raise does not pay; at most the cores (at most 8) when the output directory and
    /// the sources sit on solid-state or unknown storage, at most 2 when any of them is on
    /// a rotational disk (/sys/block/*/queue/rotational); never more than the images.
    #[arg(short = 'j', long = "jobs", value_name = "N|auto", default_value = "auto",
          value_parser = parse_jobs)]
    pub jobs: Jobs,
    /// Go on with the remaining images after a failure (default: start no new ones).
    #[arg(long)]
    pub keep_going: bool,
    /// Write the batch report (one entry per image) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Convert only share K of N (K from 0): the sources sorted by path, every N-th from
    /// the K-th. N workers given the same sources and K = 0..N-1 convert disjoint shares
    /// (e.g. --shard "$JOB_COMPLETION_INDEX/8").
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<Shard>,
    /// Skip sources already converted: <out-dir>/<stem>.raw and its <stem>.report.json
    /// exist and the report matches the source's size and mtime. Writes that report
    /// beside each output it converts.
    #[arg(long)]
    pub skip_done: bool,
    #[command(flatten)]
    pub settings: ConversionSettings,
}

/// `batch -j`: a number of conversions at once, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jobs {
    /// Chosen from the cores and the storage (see `batch::auto_jobs`).
    Auto,
    /// This many.
    Count(u32),
}

/// Parse `-j`: `auto` or 1 to 64.
pub fn parse_jobs(text: &str) -> Result<Jobs, String> {
    if text.eq_ignore_ascii_case("auto") {
        return Ok(Jobs::Auto);
    }
    match text.trim().parse::<u32>() {
        Ok(n @ 1..=64) => Ok(Jobs::Count(n)),
        _ => Err(format!("{text:?} is not a number from 1 to 64, or auto")),
    }
}

/// One share of a batch: `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// Parse `K/N` with 0 <= K < N.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    let (k, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not K/N (e.g. 0/4)"))?;
    let index: u32 = k
        .trim()
        .parse()
        .map_err(|_| format!("{k:?} is not a shard number"))?;
    let count: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a shard count"))?;
    if count == 0 || index >= count {
        return Err(format!(
            "shard {index}/{count}: K must be at least 0 and below N (shards are numbered from 0)"
        ));
    }
    Ok(Shard { index, count })
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub command: ReportCommand,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Join batch reports (e.g. one per shard) into one, sources sorted by path.
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Batch reports written by `imgconv batch --json` (or its <stem>.report.json files).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// The merged report.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The converted raw disk image.
    pub image: PathBuf,
    /// Also boot it under QEMU and wait for a login prompt on the serial console.
    #[arg(long)]
    pub boot: bool,
    /// Seconds to wait for the login prompt.
    #[arg(long, value_name = "S", default_value_t = 300, requires = "boot")]
    pub timeout: u64,
    /// Boot with UEFI firmware (OVMF) instead of SeaBIOS.
    #[arg(long, requires = "boot")]
    pub uefi: bool,
    /// Disk bus QEMU attaches the image on.
    #[arg(long, value_enum, default_value = "virtio")]
    pub bus: BusArg,
    /// With --boot: wait for a console line containing TEXT instead of a login prompt;
    /// repeat it to require several lines (all must appear).
    #[arg(long, value_name = "TEXT", requires = "boot")]
    pub expect: Vec<String>,
    /// With --boot: keep the serial console in FILE.
    #[arg(long, value_name = "FILE", requires = "boot")]
    pub serial_log: Option<PathBuf>,
    /// Run e2fsck on a read-only loop device instead of `file?offset=N` (needs root).
    #[arg(long = "loop")]
    pub use_loop: bool,
    /// Print a machine-readable result on stdout.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn convert_parses_sizes_and_enums() {
        let cli = Cli::try_parse_from([
            "imgconv", "convert", "x.img", "--donor", "d.img", "-o", "o.img", "--swap", "1.5G",
            "--size", "8G", "--bus", "sata", "--fsck", "both",
        ])
        .unwrap();
        let Command::Convert(c) = cli.command else {
            panic!("not convert")
        };
        assert_eq!(c.settings.swap, 3 << 29);
        assert_eq!(c.settings.size, Some(8 << 30));
        assert_eq!(c.settings.bus, BusArg::Sata);
        assert!(c.settings.fsck.pre() && c.settings.fsck.post());
    }

    #[test]
    fn batch_needs_sources_or_dir_not_both() {
        assert!(Cli::try_parse_from(["imgconv", "batch", "--out-dir", "o"]).is_err());
        assert!(
            Cli::try_parse_from(["imgconv", "batch", "a", "--dir", "d", "--out-dir", "o"]).is_err()
        );
        assert!(Cli::try_parse_from(["imgconv", "batch", "a", "b", "--out-dir", "o"]).is_ok());
        assert!(Cli::try_parse_from(["imgconv", "batch", "--dir", "d", "--out-dir", "o"]).is_ok());
    }

    #[test]
    fn shard_is_k_of_n_from_zero() {
        assert_eq!(parse_shard("0/4"), Ok(Shard { index: 0, count: 4 }));
        assert_eq!(parse_shard("3/4"), Ok(Shard { index: 3, count: 4 }));
        for bad in ["4/4", "1/0", "-1/2", "1", "a/b", "1/2/3", ""] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
