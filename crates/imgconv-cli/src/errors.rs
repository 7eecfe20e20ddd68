//! Exit codes and the two-line error message (`error:` cause, `hint:` next step).
//!
//! Every failure the CLI reports is a [`CliError`]: a class that decides the exit code
//! (documented in README's "Exit codes" table), the cause, and a hint. A library error's
//! class comes from its [`ErrorKind`], which the library decides where it knows which
//! file it was working on; its hint from the library's [`Hint`], put in the CLI's flags.

use imgconv_core::tool::ToolError;
use imgconv_core::{Error, ErrorKind, Hint};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Process exit codes. Stable: scripts depend on them (README "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Class {
    /// 1: anything not covered below (a tool missing or failing, an internal error).
    Failure,
    /// 2: wrong arguments (clap's own errors use 2 too).
    Usage,
    /// 3: the source image is unsupported, corrupt, truncated, dirty or unreadable.
    Input,
    /// 4: the donor has no usable kernel/initrd/modules/GRUB, or cannot be read.
    Donor,
    /// 5: the output cannot be written: exists, no space, permission, missing directory.
    Output,
    /// 6: a check failed: fsck found errors, the boot test did not reach a login prompt.
    Verify,
    /// 130: interrupted (Ctrl-C / SIGTERM).
    Cancelled,
}

impl Class {
    /// The process exit status for this class.
    pub fn code(self) -> i32 {
        match self {
            Class::Failure => 1,
            Class::Usage => 2,
            Class::Input => 3,
            Class::Donor => 4,
            Class::Output => 5,
            Class::Verify => 6,
            Class::Cancelled => 130,
        }
    }
}

/// A failure as the CLI reports it.
#[derive(Debug, Clone)]
pub struct CliError {
    pub class: Class,
    /// What went wrong (first line).
    pub cause: String,
    /// What to do next (second line).
    pub hint: String,
}

impl CliError {
    pub fn new(class: Class, cause: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            class,
            cause: cause.into(),
            hint: hint.into(),
        }
    }

    pub fn cancelled() -> Self {
        CliError::new(
            Class::Cancelled,
            "interrupted",
            "nothing was left behind; run the command again to start over",
        )
    }

    /// Print the two lines on stderr.
    pub fn print(&self) {
        let (red, yellow, reset) = if colour_stderr() {
            ("\x1b[1;31m", "\x1b[33m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        eprintln!("imgconv: {red}error:{reset} {}", self.cause);
        if !self.hint.is_empty() {
            eprintln!("imgconv: {yellow}hint:{reset} {}", self.hint);
        }
    }
}

/// Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org).
pub fn colour_stderr() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

/// The paths a command works on, for the hints.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub source: Option<PathBuf>,
    pub output: Option<PathBuf>,
}

fn hint_for(class: Class, paths: &Paths) -> String {
    let show = |p: &Option<PathBuf>, dflt: &str| {
        p.as_deref()
            .map_or_else(|| dflt.to_string(), |p| p.display().to_string())
    };
    match class {
        Class::Input => format!(
            "check the source with `imgconv inspect {}`; imgconv takes a bare ext2/3/4 filesystem \
             or a partitioned disk holding one",
            show(&paths.source, "SRC")
        ),
        Class::Donor => {
            "check the donor: it needs /boot/vmlinuz-VER, its initrd and /lib/modules/VER \
             (choose one with --kernel), and GRUB i386-pc modules (or pass --grub-dir)"
                .into()
        }
        Class::Output => format!(
            "check free space and permissions where {} goes, or choose another -o",
            show(&paths.output, "the output")
        ),
        Class::Verify => "the filesystem or boot check failed; see the messages above".into(),
        Class::Cancelled => "nothing was left behind; run the command again to start over".into(),
        Class::Usage => "see `imgconv help`".into(),
        Class::Failure => {
            "run again; if it persists, report it with the command line and this message".into()
        }
    }
}

/// The library's next step, in the CLI's flags.
fn hint_text(hint: Hint) -> Option<&'static str> {
    Some(match hint {
        Hint::ReplayJournal => {
            "re-run with --replay-journal to replay the journal in the converted copy only, \
             or replay it with e2fsck -fy on a copy of the image and convert that"
        }
        Hint::Overwrite => "pass --force to overwrite it, or choose another -o",
        Hint::GiveDonor => {
            "pass --donor with a bootable HVM image of a similar distribution (or a directory \
             with an unpacked kernel), or --use-guest-kernel to keep a non-Xen kernel the guest has"
        }
        Hint::ConvertWithDonor => "convert with a donor (--donor) instead of --use-guest-kernel",
        Hint::DonorOrOtherBus => {
            "give a donor (--donor) to boot the donor's kernel instead, or choose a --bus its \
             initrd has drivers for"
        }
        Hint::GrowDisk => "give a larger --size, or a smaller --swap",
        Hint::PlainKernelCmdline => {
            "drop quotes, backquotes and $ ; { } \\ | & < > # from --kernel-cmdline"
        }
        Hint::Repair => {
            "re-run with --repair: e2fsck -fy repairs the converted copy before anything is \
             grafted into it (the source is never modified)"
        }
        Hint::RepairCopyByHand => {
            "repair a copy of the image with e2fsck -fy (it may clear the blocks named) and \
             convert that; the input is not touched"
        }
        Hint::GiveGrubFiles => {
            "pass --grub-dir with GRUB's i386-pc modules, use a donor that has GRUB, or drop \
             --no-host-files"
        }
        Hint::LargerDevice => "give a larger device, or a smaller --size or --swap",
        Hint::ReleaseDevice => {
            "unmount it and its partitions, release what holds it (swapoff, vgchange -an VG, \
             mdadm --stop, losetup -d), or choose another -o"
        }
        Hint::RawForDevice => "leave out --format qcow2: a device gets a raw disk",
        Hint::OtherOutput => "the source is only ever read: choose another -o",
        Hint::GiveMissingDisk => {
            "give the disk image holding that physical volume too (--disk PATH=XENDEV): the \
             volume group is read from all the disks given"
        }
        Hint::LinearVolume => {
            "make the volume linear inside the guest (lvconvert, or move its files to a linear \
             volume) and export the image again"
        }
        Hint::MakeRoomInBoot => {
            "on a copy of the image, remove old kernels from the guest's /boot or repair it \
             with e2fsck -fy so that it can be grown, and convert that copy"
        }
        Hint::ExportAgain => {
            "export the VM again (xe vm-export) and check the copy arrived whole: every disk \
             of an export ends with its last 1 MiB chunk"
        }
        _ => return None,
    })
}

/// The exit class of a library error kind.
pub fn class_of(kind: ErrorKind) -> Class {
    match kind {
        ErrorKind::Input => Class::Input,
        ErrorKind::Donor => Class::Donor,
        ErrorKind::Output => Class::Output,
        ErrorKind::Options => Class::Usage,
        ErrorKind::Cancelled => Class::Cancelled,
        _ => Class::Failure,
    }
}

/// An outside tool's failure, in the CLI's terms: a missing tool names its package, a
/// loop device names the flag that asked for it.
pub fn from_tool(e: &ToolError) -> CliError {
    match e {
        ToolError::Cancelled { .. } => CliError::cancelled(),
        ToolError::NotInstalled { package, .. } => CliError::new(
            Class::Failure,
            e.to_string(),
            format!("install it (apt-get install {package}) and run again"),
        ),
        ToolError::Spawn { .. } => CliError::new(
            Class::Failure,
            e.to_string(),
            "check that it is installed and executable",
        ),
        ToolError::LoopNeedsRoot => CliError::new(
            Class::Usage,
            e.to_string(),
            "run as root, or drop --loop: the default `file?offset=N` check needs no privileges",
        ),
        ToolError::LoopAttach { .. } => CliError::new(
            Class::Failure,
            e.to_string(),
            "check that loop devices are available (modprobe loop; ls /dev/loop*), or drop --loop",
        ),
        ToolError::Path { .. } => CliError::new(Class::Failure, e.to_string(), "check $TMPDIR"),
        other => CliError::new(class_of(other.kind()), other.to_string(), ""),
    }
}

/// Turn a library error into the CLI's class, cause and hint: the class comes from
/// [`Error::kind`], the hint from [`Error::hint`] or else the class.
pub fn from_core(err: &Error, paths: &Paths) -> CliError {
    let class = class_of(err.kind());
    if class == Class::Cancelled {
        if let Error::DeviceWiped { wiped, .. } = err {
            return CliError::new(
                Class::Cancelled,
                format!("interrupted; {wiped}"),
                "run the command again to start over",
            );
        }
        return CliError::cancelled();
    }
    let mut cause = err.to_string();
    // Include the chain of sources that Display does not already show.
    let mut src = std::error::Error::source(err);
    while let Some(s) = src {
        let text = s.to_string();
        if !cause.contains(&text) {
            cause.push_str(": ");
            cause.push_str(&text);
        }
        src = s.source();
    }
    let hint = err
        .hint()
        .and_then(hint_text)
        .map_or_else(|| hint_for(class, paths), str::to_string);
    CliError::new(class, cause, hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use imgconv_core::donor::DonorError;
    use imgconv_core::fixups::FixupError;
    use imgconv_core::graft::GraftError;
    use imgconv_core::guestfs::GuestFsError;

    fn paths() -> Paths {
        Paths {
            source: Some("/in/xen.img".into()),
            output: Some("/out/kvm.img".into()),
        }
    }

    #[test]
    fn io_errors_are_classified_by_what_the_library_was_doing() {
        let p = paths();
        use imgconv_core::boot::BootError;
        use std::io::{Error as IoError, ErrorKind::*};
        let class = |e: Error| from_core(&e, &p).class;
        assert_eq!(
            class(Error::io("cannot open", "/in/xen.img", NotFound.into())),
            Class::Input
        );
        let donor_io = DonorError::io(
            "reading",
            "/donors/deb12/boot/vmlinuz",
            PermissionDenied.into(),
        );
        assert_eq!(class(Error::from(donor_io)), Class::Donor);
        let boot_write = BootError::OutputIo {
            action: "writing the boot code to",
            source: PermissionDenied.into(),
        };
        assert_eq!(class(Error::Boot(boot_write)), Class::Output);
        // Only the output is written: a full disk is the output's, whatever was read or
        // written when it filled.
        let full = Error::io(
            "cannot write",
            "/in/xen.img",
            IoError::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(class(full), Class::Output);
        // The graft runs beside the stream: the write that finds the disk full can be a
        // boot file inside the guest.
        let full_in_guest = Error::Boot(BootError::Io {
            action: "write",
            path: "/boot/grub/i386-pc/core.img".into(),
            source: IoError::from_raw_os_error(libc::ENOSPC),
        });
        assert_eq!(class(full_in_guest), Class::Output);
    }

    #[test]
    fn hints_name_the_flags() {
        let p = paths();
        let exists = imgconv_core::output::OutputError::Exists {
            path: "/out/kvm.img".into(),
        };
        let e = from_core(&Error::from(exists), &p);
        assert_eq!(e.class, Class::Output);
        assert!(!e.cause.contains("--force"), "{}", e.cause);
        assert!(e.hint.contains("--force"), "{}", e.hint);
        let e = from_core(&Error::NoDonor, &p);
        assert_eq!(e.class, Class::Usage);
        assert!(
            e.hint.contains("--donor") && e.hint.contains("--use-guest-kernel"),
            "{}",
            e.hint
        );
    }

    #[test]
    fn cancelled_is_130_and_codes_are_stable() {
        assert_eq!(from_core(&Error::Cancelled, &paths()).class.code(), 130);
        let codes: Vec<i32> = [
            Class::Failure,
            Class::Usage,
            Class::Input,
            Class::Donor,
            Class::Output,
            Class::Verify,
        ]
        .iter()
        .map(|c| c.code())
        .collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn donor_graft_and_fixup_errors_are_classified() {
        let p = paths();
        let no_kernel = DonorError::NoUsableKernel {
            donor: "/donors/deb12".into(),
            found: vec!["vmlinuz-6.1.0-9-amd64 (no initrd)".into()],
        };
        let e = from_core(&Error::from(no_kernel), &p);
        assert_eq!(e.class, Class::Donor);
        assert!(e.cause.contains("no usable kernel"), "{}", e.cause);
        assert!(e.hint.contains("--kernel"), "{}", e.hint);
        let xen_only = DonorError::OnlyXenKernels {
            found: vec!["4.9.0-xen".into()],
        };
        assert_eq!(from_core(&Error::from(xen_only), &p).class, Class::Input);
        assert_eq!(
            from_core(&Error::Graft(Box::new(GraftError::Cancelled)), &p).class,
            Class::Cancelled
        );
        let lp = GuestFsError::SymlinkLoop {
            path: "/etc/fstab".into(),
        };
        let fx = FixupError::Guest {
            step: "fstab",
            path: "/etc/fstab".into(),
            source: lp,
        };
        assert_eq!(from_core(&Error::from(fx), &p).class, Class::Input);
    }

    #[test]
    fn every_error_has_a_hint() {
        let e = from_core(
            &Error::io(
                "cannot open",
                "/in/xen.img",
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ),
            &paths(),
        );
        assert!(e.cause.contains("/in/xen.img"), "{}", e.cause);
        assert!(e.hint.contains("imgconv inspect /in/xen.img"), "{}", e.hint);
    }
}
