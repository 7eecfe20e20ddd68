//! The QEMU boot harness of the integration tests: one place that knows the machines, the
//! firmware (SeaBIOS on `pc`; OVMF on q35 with a read-only pflash CODE and a private copy
//! of the VARS store, as real UEFI hypervisors run it), the serial log and how to wait on it.
//!
//! QEMU writes the guest's serial output to the log one byte at a time, as the guest sends
//! it; a reader can see half a line. So the wait is for a *complete* line (ended by `\n`)
//! holding one of the strings asked for, and the lines returned are complete ones: never
//! judge a line QEMU is still writing. Only after QEMU has exited is a last unfinished line
//! taken as it is (nothing more will come).

use std::fs::{self, File};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// How long a boot without a kernel (firmware and GRUB only) may take under TCG on a loaded
/// machine before the test gives up. A safety net, not a measure: the harness returns as
/// soon as the line it waits for is complete.
pub const GRUB_BOOT_LIMIT: Duration = Duration::from_secs(300);

/// The firmware QEMU boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS on the `pc` machine, the disk on IDE.
    SeaBios,
    /// OVMF without Secure Boot (OVMF_CODE_4M.fd) on q35, the disk on virtio.
    Ovmf,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled (OVMF_CODE_4M.secboot.fd
    /// + OVMF_VARS_4M.ms.fd, SMM on): only a Microsoft-signed shim may run.
    OvmfSecureBoot,
}

/// What the serial console showed.
#[derive(Debug)]
pub struct BootLog {
    /// The whole serial log as read last (possibly ending in a line still being written).
    pub text: String,
    /// The first complete line holding one of the strings waited for.
    pub line: Option<String>,
    /// Seconds from start to the end of the wait.
    pub seconds: f64,
    /// QEMU's exit status if it stopped by itself before the wait ended.
    pub exited: Option<ExitStatus>,
}

impl BootLog {
    /// The first complete line containing `needle`.
    pub fn line_with(&self, needle: &str) -> Option<&str> {
        complete_lines(&self.text, self.exited.is_some()).find(|l| l.contains(needle))
    }
}

/// The lines of `text` that are finished: all but a last one without `\n`, unless `all`.
fn complete_lines(text: &str, all: bool) -> impl Iterator<Item = &str> {
    let done = if all {
        text
    } else {
        text.rfind('\n').map_or("", |end| &text[..end])
    };
    done.lines()
}

/// Boot `disk` (never written: `-snapshot`) with `firmware` and wait until a complete serial
/// line contains one of `until`, QEMU stops by itself, or `limit` passes. QEMU is killed by
/// its own handle at the end. A reboot of the guest stops QEMU (`-no-reboot`).
pub fn boot(disk: &Path, firmware: Firmware, until: &[&str], limit: Duration) -> BootLog {
    boot_with(disk, firmware, until, limit, false)
}

/// [`boot`], with `reboots` letting the guest reboot inside the same QEMU (the `-snapshot`
/// overlay, and so what the guest wrote, survives the reset) and 1 GiB of memory for a
/// guest that runs its own tools (update-grub) before rebooting.
pub fn boot_with(
    disk: &Path,
    firmware: Firmware,
    until: &[&str],
    limit: Duration,
    reboots: bool,
) -> BootLog {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serial.log");
    let mut cmd = super::command("qemu-system-x86_64");
    cmd.args(["-nographic", "-accel", "tcg"]);
    if reboots {
        cmd.args(["-m", "1024"]);
    } else {
        cmd.args(["-m", "512", "-no-reboot"]);
    }
    cmd.arg("-snapshot");
    let (code, vars_template) = match firmware {
        Firmware::SeaBios => ("", ""),
        Firmware::Ovmf => (OVMF_CODE, OVMF_VARS),
        Firmware::OvmfSecureBoot => (OVMF_CODE_SECBOOT, OVMF_VARS_MS),
    };
    if firmware == Firmware::SeaBios {
        cmd.args(["-machine", "pc", "-drive"])
            .arg(format!("file={},format=raw,if=ide", disk.display()));
    } else {
        assert!(
            Path::new(code).exists() && Path::new(vars_template).exists(),
            "{code} is needed: install ovmf (scripts/setup)"
        );
        // OVMF writes its variables: each boot gets its own copy of the template.
        let vars = dir.path().join("vars.fd");
        fs::copy(vars_template, &vars).unwrap();
        if firmware == Firmware::OvmfSecureBoot {
            // The Secure Boot build keeps its variables in SMM-protected flash.
            cmd.args([
                "-machine",
                "q35,smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
            ]);
        } else {
            cmd.args(["-machine", "q35"]);
        }
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", disk.display()));
    }
    let mut child = cmd
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .stdin(Stdio::null())
        .stdout(File::create(dir.path().join("qemu.out")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 is needed for the boot tests: run scripts/setup");
    let started = Instant::now();
    let read_log = || String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    let found = |text: &str, all: bool| {
        complete_lines(text, all)
            .find(|l| until.iter().any(|u| l.contains(u)))
            .map(str::to_owned)
    };
    let (text, line, exited) = loop {
        // Whether QEMU stopped is asked before the log is read: once it has, the log is
        // final and a last unfinished line is all there will be.
        let exited = child.try_wait().unwrap();
        let text = read_log();
        let line = found(&text, exited.is_some());
        if line.is_some() || exited.is_some() || started.elapsed() > limit {
            break (text, line, exited);
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    // Our own child, by its handle (never by name).
    let _ = child.kill();
    let _ = child.wait();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{firmware:?} boot of {}: {} after {seconds:.1} s{}",
        disk.display(),
        line.as_deref().unwrap_or("nothing awaited"),
        exited.map_or(String::new(), |s| format!(" (qemu exited: {s})"))
    );
    BootLog {
        text,
        line,
        seconds,
        exited,
    }
}
