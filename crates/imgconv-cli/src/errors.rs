//! Exit codes and the two-line error message (`error:` cause, `hint:` next step).
//!
//! Every failure the CLI reports is a [`CliError`]: a class that decides the exit code
//! (documented in README's "Exit codes" table), the cause, and a hint. Library errors are
//! classified from their variant and, for I/O errors, from the path they concern.

use imgconv_core::donor::DonorError;
use imgconv_core::e2fs_tools::ToolError;
use imgconv_core::ext::ExtError;
use imgconv_core::fixups::FixupError;
use imgconv_core::graft::GraftError;
use imgconv_core::guestfs::GuestFsError;
use imgconv_core::layout::PlanError;
use imgconv_core::output::OutputError;
use imgconv_core::source::InspectError;
use imgconv_core::stream::StreamError;
use imgconv_core::Error;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

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

/// The paths a command works on, to tell which side an I/O error is on.
#[derive(Debug, Clone, Default)]
pub struct Paths {
    pub source: Option<PathBuf>,
    pub donor: Option<PathBuf>,
    pub output: Option<PathBuf>,
}

impl Paths {
    fn side_of(&self, path: &Path) -> Option<Class> {
        let under = |p: &Option<PathBuf>| p.as_deref().is_some_and(|p| path.starts_with(p));
        if under(&self.source) {
            return Some(Class::Input);
        }
        if under(&self.donor) {
            return Some(Class::Donor);
        }
        // The temporary output lives beside the output: anything in its directory.
        if let Some(out) = &self.output {
            let dir = out.parent().filter(|d| !d.as_os_str().is_empty());
            if path.starts_with(out) || dir.is_some_and(|d| path.starts_with(d)) {
                return Some(Class::Output);
            }
        }
        None
    }

    fn side_of_text(&self, text: &str) -> Option<Class> {
        let has = |p: &Option<PathBuf>| {
            p.as_deref()
                .is_some_and(|p| text.contains(&*p.to_string_lossy()))
        };
        if has(&self.source) {
            Some(Class::Input)
        } else if has(&self.donor) {
            Some(Class::Donor)
        } else if has(&self.output) {
            Some(Class::Output)
        } else {
            None
        }
    }
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

/// Classify an `io::Error` concerning `path`.
pub fn classify_io(
    kind: std::io::ErrorKind,
    raw: Option<i32>,
    path: &Path,
    paths: &Paths,
) -> Class {
    // Space and write permission are output problems whatever file they hit first.
    if kind == std::io::ErrorKind::StorageFull
        || raw == Some(libc::ENOSPC)
        || raw == Some(libc::EDQUOT)
        || raw == Some(libc::EROFS)
        || raw == Some(libc::EFBIG)
    {
        return Class::Output;
    }
    paths.side_of(path).unwrap_or(Class::Failure)
}

/// Every output error is an output problem; an I/O error is classified by its path.
fn output_class(o: &OutputError, paths: &Paths) -> Class {
    match o {
        OutputError::Io { path, source, .. } => {
            match classify_io(source.kind(), source.raw_os_error(), path, paths) {
                Class::Failure => Class::Output,
                c => c,
            }
        }
        _ => Class::Output,
    }
}

/// libext2fs and the kernel say "no space" in a few ways.
fn out_of_space(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("no space left")
        || t.contains("could not allocate block")
        || t.contains("disk quota")
}

/// A failure inside the guest filesystem: its own structure (missing paths, symlink
/// loops, absurd sizes) is an input problem; the write engine failing is not.
fn guest_class(g: &GuestFsError) -> Class {
    match g {
        // The engine's writes reach the output image: a full output filesystem.
        GuestFsError::Engine { why, .. } if out_of_space(why) => Class::Output,
        GuestFsError::Engine { .. } => Class::Failure,
        GuestFsError::Source { .. } => Class::Donor,
        _ => Class::Input,
    }
}

/// Donor errors are donor problems, except the `--use-guest-kernel` ones, which are about
/// the guest (the source), and I/O errors, classified by path.
fn donor_class(d: &DonorError, paths: &Paths) -> Class {
    match d {
        DonorError::Io { path, source, .. } => {
            classify_io(source.kind(), source.raw_os_error(), path, paths)
        }
        DonorError::OnlyXenKernels { .. }
        | DonorError::NoGuestKernel { .. }
        | DonorError::GuestKernelNotReady { .. } => Class::Input,
        _ => Class::Donor,
    }
}

/// Turn a library error into the CLI's class, cause and hint.
/// Does any error in `err`'s chain say the disk is full? Only the output is ever written
/// (input and donor are opened read-only), so that is always the output's filesystem,
/// whichever stage was writing when it filled: since the graft runs beside the stream,
/// a boot file or a module can be the write that fails.
fn chain_out_of_space(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        let io_full = e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            io.kind() == std::io::ErrorKind::StorageFull
                || matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        });
        if io_full || out_of_space(&e.to_string()) {
            return true;
        }
        next = e.source();
    }
    false
}

pub fn from_core(err: &Error, paths: &Paths) -> CliError {
    let class = match err {
        Error::Cancelled => return CliError::cancelled(),
        _ if chain_out_of_space(err) => Class::Output,
        Error::Io { path, source, .. } => {
            classify_io(source.kind(), source.raw_os_error(), path, paths)
        }
        // Malformed on-disk data: whose data decides the class; the source by default,
        // since a corrupt source is by far the common case.
        Error::Parse(_) | Error::Partition(_) | Error::ExtRead(_) => {
            paths.side_of_text(&err.to_string()).unwrap_or(Class::Input)
        }
        Error::Inspect(e) => match e.as_ref() {
            InspectError::Io { path, source, .. } => {
                classify_io(source.kind(), source.raw_os_error(), path, paths)
            }
            _ => Class::Input,
        },
        Error::Plan(e) => match e {
            // The sizes asked for (--size, --swap) do not fit.
            PlanError::TargetTooSmall { .. } | PlanError::TooLargeForMbr { .. } => Class::Usage,
            PlanError::Write(o) => output_class(o, paths),
            _ => Class::Failure,
        },
        Error::Stream(e) => match e {
            StreamError::Cancelled => return CliError::cancelled(),
            StreamError::Write(o) => output_class(o, paths),
            StreamError::Superblock { .. }
            | StreamError::SourceTooShort { .. }
            | StreamError::InconsistentBitmap { .. } => Class::Input,
            StreamError::Read { source, path, .. } => {
                classify_io(source.kind(), source.raw_os_error(), path, paths)
            }
            StreamError::SwapTooSmall { .. } => Class::Usage,
            _ => Class::Failure,
        },
        Error::BlockCheck(e) => match e.as_ref() {
            imgconv_core::blockcheck::CheckError::Inconsistent { findings, .. } => {
                let hint = if findings.repairable() {
                    "pass --repair to run e2fsck -fy on the output copy before grafting (the input is not touched), or repair a copy of the image with e2fsck -fy and convert that"
                } else {
                    "repair a copy of the image with e2fsck -fy (it may clear the blocks named) and convert that; the input is not touched"
                };
                return CliError::new(Class::Input, err.to_string(), hint);
            }
            imgconv_core::blockcheck::CheckError::Io { path, source, .. } => {
                classify_io(source.kind(), source.raw_os_error(), path, paths)
            }
            imgconv_core::blockcheck::CheckError::Cancelled => return CliError::cancelled(),
        },
        Error::Output(o) => output_class(o, paths),
        Error::Tool(t) => match t {
            ToolError::NotExt { .. } => Class::Input,
            _ if out_of_space(&err.to_string()) => Class::Output,
            _ => Class::Failure,
        },
        Error::Guest(g) => guest_class(g),
        Error::Donor(d) => donor_class(d, paths),
        Error::Graft(g) => match g.as_ref() {
            GraftError::Cancelled => return CliError::cancelled(),
            GraftError::Donor(d) => donor_class(d, paths),
            GraftError::Guest(GuestFsError::Source { .. }) => Class::Donor,
            GraftError::Guest(g) => guest_class(g),
            _ => Class::Input,
        },
        Error::Fixup(f) => match f.as_ref() {
            FixupError::Guest { source, .. } => guest_class(source),
            // 100 backups of one guest file already exist.
            FixupError::NoBackupName { .. } => Class::Input,
            _ => Class::Failure,
        },
        // A dirty journal that must not be replayed is the source's state.
        Error::Ext(ExtError::NeedsRecovery { .. }) => Class::Input,
        Error::Ext(_) if out_of_space(&err.to_string()) => Class::Output,
        Error::Ext(_) => Class::Failure,
        Error::Boot(imgconv_core::boot::BootError::Io { path, source, .. }) => {
            classify_io(source.kind(), source.raw_os_error(), path, paths)
        }
        // --kernel-cmdline with characters grub.cfg cannot hold.
        Error::Boot(imgconv_core::boot::BootError::BadConfigValue {
            field: "extra_args",
            ..
        }) => Class::Usage,
        // GRUB files come from the donor (or --grub-dir): what is wrong with them is a
        // donor problem unless the message names the output.
        Error::Boot(_) => match paths.side_of_text(&err.to_string()) {
            Some(Class::Output) => Class::Output,
            _ => Class::Donor,
        },
        Error::Uefi(imgconv_core::boot::uefi::UefiError::Io { path, source, .. }) => {
            classify_io(source.kind(), source.raw_os_error(), path, paths)
        }
        // shim/GRUB for the ESP come from the donor (or the host): a donor problem.
        Error::Uefi(
            imgconv_core::boot::uefi::UefiError::NoEfiBootFiles { .. }
            | imgconv_core::boot::uefi::UefiError::BadEfiBinary { .. }
            | imgconv_core::boot::uefi::UefiError::DonorEsp { .. }
            | imgconv_core::boot::uefi::UefiError::IncompleteEfiModules { .. }
            | imgconv_core::boot::uefi::UefiError::Donor(_),
        ) => Class::Donor,
        Error::NoDonor => Class::Usage,
        // --strict: a donor kernel of the guest's era is what would work.
        Error::Incompatible { .. } => Class::Donor,
        // Variants added later land here until they are matched above.
        #[allow(unreachable_patterns)]
        _ => paths
            .side_of_text(&err.to_string())
            .unwrap_or(Class::Failure),
    };
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
    CliError::new(class, cause, hint_for(class, paths))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Paths {
        Paths {
            source: Some("/in/xen.img".into()),
            donor: Some("/donors/deb12".into()),
            output: Some("/out/kvm.img".into()),
        }
    }

    #[test]
    fn io_errors_are_classified_by_side_and_kind() {
        let p = paths();
        let e = |path: &str, kind| {
            from_core(
                &Error::io("cannot open", path, std::io::Error::from(kind)),
                &p,
            )
            .class
        };
        use std::io::ErrorKind::*;
        assert_eq!(e("/in/xen.img", NotFound), Class::Input);
        assert_eq!(
            e("/donors/deb12/boot/vmlinuz", PermissionDenied),
            Class::Donor
        );
        assert_eq!(e("/out/.kvm.img.tmp123", PermissionDenied), Class::Output);
        assert_eq!(e("/elsewhere", NotFound), Class::Failure);
        let full = Error::io(
            "cannot write",
            "/in/xen.img",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(from_core(&full, &p).class, Class::Output);
        // The graft runs beside the stream: the write that finds the disk full can be a
        // boot file inside the guest, whose path names neither input nor output.
        let full_in_guest = Error::Boot(imgconv_core::boot::BootError::Io {
            action: "write",
            path: "/boot/grub/i386-pc/core.img".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        });
        assert_eq!(from_core(&full_in_guest, &p).class, Class::Output);
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
