//! The boot test: start a converted disk under QEMU and wait for lines on its serial
//! console. The one QEMU harness of the project: `imgconv verify --boot`, the integration
//! tests and the end-to-end script all boot through [`boot`].
//!
//! - The disk is never written: QEMU runs with `-snapshot`, so what the guest writes
//!   (update-grub, journals, logs) goes to a temporary overlay that survives a reboot of
//!   the guest inside the same QEMU ([`BootOptions::reboots`]) and is gone afterwards.
//! - Firmware: SeaBIOS on the `pc` machine (q35 for SATA); UEFI is OVMF as real UEFI
//!   hypervisors run it: q35, the firmware code in a read-only pflash and the variable
//!   store in a second, writable pflash — a private copy of OVMF's VARS template. The
//!   Secure Boot variant boots OVMF's Secure Boot build with Microsoft's keys enrolled and
//!   SMM on, so only a Microsoft-signed shim runs.
//! - The serial console goes to a temporary file, read as it grows, at most
//!   [`SERIAL_CAP`] bytes (a guest that floods its console cannot fill the disk or the
//!   memory). QEMU writes it a byte at a time as the guest sends it, so a reader can see
//!   half a line: only *complete* lines (ended by `\n`) are matched, and a last unfinished
//!   line only once it has stopped growing for a poll or QEMU has exited (a login prompt
//!   never ends with a newline).
//! - The QEMU process is supervised by the library's process runner ([`crate::tool`]):
//!   killed and reaped on every way out, and the caller's
//!   [`Progress::is_cancelled`](crate::Progress::is_cancelled) is polled while it runs.

use crate::hardware::DiskBus;
use crate::progress::Progress;
use crate::tool::{ToolCommand, ToolError};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Lines that count as a successful boot when the caller expects nothing in particular:
/// a login prompt, or the test fixtures' marker line.
pub const DEFAULT_EXPECT: [&str; 2] = ["login:", "IMGCONV-MARKER"];

/// Most bytes of serial console read before the boot test gives up.
pub const SERIAL_CAP: u64 = 16 << 20;

/// How often the serial log and QEMU are looked at.
const POLL: Duration = Duration::from_millis(250);

/// OVMF's code and variable-store template, as Debian's `ovmf` package installs them
/// (4 MiB flash first, then the older 2 MiB one).
pub const OVMF_PAIRS: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// OVMF's Secure Boot build and the variable store with Microsoft's keys enrolled.
pub const OVMF_SECURE_BOOT: (&str, &str) = (
    "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
);

/// The firmware the disk boots with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootFirmware {
    /// SeaBIOS (QEMU's default BIOS).
    Bios,
    /// OVMF without Secure Boot.
    Uefi,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled.
    UefiSecureBoot,
}

/// KVM or TCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when `/dev/kvm` is usable and is not the `kvm_pvm` software variant (which runs
    /// firmware and GRUB but hangs a stock kernel after "Probing EDD"), TCG otherwise.
    Auto,
    /// Hardware virtualisation.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

impl Accel {
    /// The accelerator [`Accel::Auto`] stands for on this machine.
    pub fn resolve(self) -> Accel {
        match self {
            Accel::Auto => {
                let usable = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/kvm")
                    .is_ok();
                if usable && !Path::new("/sys/module/kvm_pvm").exists() {
                    Accel::Kvm
                } else {
                    Accel::Tcg
                }
            }
            other => other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            _ => "tcg",
        }
    }
}

/// How to boot, and what to wait for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BootOptions {
    /// The disk image.
    pub image: PathBuf,
    /// Its format as QEMU names it: `raw` or `qcow2`.
    pub format: String,
    /// The controller the disk sits on.
    pub bus: DiskBus,
    /// The firmware.
    pub firmware: BootFirmware,
    /// Give up after this long.
    pub timeout: Duration,
    /// Every entry must be found in a complete console line; an entry is a list of
    /// alternatives (`["login:", "IMGCONV-MARKER"]` is either). Empty: [`DEFAULT_EXPECT`].
    pub expect: Vec<Vec<String>>,
    /// Lines that end the wait at once as a failure (a guest script reporting its own
    /// failure, firmware refusing a binary).
    pub fail_on: Vec<String>,
    /// Let the guest reboot inside the same QEMU (its writes survive in the snapshot
    /// overlay); otherwise a reboot ends QEMU (`-no-reboot`).
    pub reboots: bool,
    /// A NIC on QEMU's user network (DHCP, no way out to the host's network).
    pub network: bool,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The QEMU binary.
    pub qemu: PathBuf,
    /// KVM or TCG.
    pub accel: Accel,
    /// Keep the serial log here (it is also returned, up to [`SERIAL_CAP`]).
    pub serial_log: Option<PathBuf>,
}

impl BootOptions {
    /// Boot `image` (raw) on virtio with SeaBIOS, a NIC, 1 GiB, waiting up to 300 s for a
    /// login prompt or the marker line.
    pub fn new(image: impl Into<PathBuf>) -> Self {
        BootOptions {
            image: image.into(),
            format: "raw".into(),
            bus: DiskBus::Virtio,
            firmware: BootFirmware::Bios,
            timeout: Duration::from_secs(300),
            expect: Vec::new(),
            fail_on: Vec::new(),
            reboots: false,
            network: true,
            memory_mib: 1024,
            qemu: PathBuf::from("qemu-system-x86_64"),
            accel: Accel::Auto,
            serial_log: None,
        }
    }

    /// Set [`BootOptions::format`].
    pub fn with_format(mut self, format: impl Into<String>) -> Self {
        self.format = format.into();
        self
    }
    /// Set [`BootOptions::bus`].
    pub fn with_bus(mut self, bus: DiskBus) -> Self {
        self.bus = bus;
        self
    }
    /// Set [`BootOptions::firmware`].
    pub fn with_firmware(mut self, firmware: BootFirmware) -> Self {
        self.firmware = firmware;
        self
    }
    /// Set [`BootOptions::timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
    /// Add one line to wait for, given as its alternatives.
    pub fn expect_any<S: Into<String>>(
        mut self,
        alternatives: impl IntoIterator<Item = S>,
    ) -> Self {
        self.expect
            .push(alternatives.into_iter().map(Into::into).collect());
        self
    }
    /// Add a line that ends the wait as a failure.
    pub fn fail_on(mut self, text: impl Into<String>) -> Self {
        self.fail_on.push(text.into());
        self
    }
    /// Set [`BootOptions::reboots`].
    pub fn with_reboots(mut self, reboots: bool) -> Self {
        self.reboots = reboots;
        self
    }
    /// Set [`BootOptions::network`].
    pub fn with_network(mut self, network: bool) -> Self {
        self.network = network;
        self
    }
    /// Set [`BootOptions::memory_mib`].
    pub fn with_memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }
    /// Set [`BootOptions::qemu`].
    pub fn with_qemu(mut self, qemu: impl Into<PathBuf>) -> Self {
        self.qemu = qemu.into();
        self
    }
    /// Set [`BootOptions::accel`].
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }
    /// Set [`BootOptions::serial_log`].
    pub fn with_serial_log(mut self, path: impl Into<PathBuf>) -> Self {
        self.serial_log = Some(path.into());
        self
    }

    fn expectations(&self) -> Vec<Vec<String>> {
        if self.expect.is_empty() {
            vec![DEFAULT_EXPECT.iter().map(|s| s.to_string()).collect()]
        } else {
            self.expect.clone()
        }
    }
}

/// What a boot showed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootResult {
    /// Every expected line was seen, and no failure line.
    pub ok: bool,
    /// "kvm" or "tcg".
    pub accel: String,
    /// The QEMU machine: "pc" or "q35".
    pub machine: String,
    /// "SeaBIOS", or the OVMF code image booted from pflash.
    pub firmware: String,
    /// Seconds until the wait ended.
    pub seconds: f64,
    /// For each expectation, the first complete line that met it (`None`: not seen).
    pub matched: Vec<Option<String>>,
    /// What the first expectation found: the alternative it waited for (`login:`,
    /// `IMGCONV-MARKER`, or the `--expect` text).
    pub marker: Option<String>,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// The last lines of the serial console.
    pub console_tail: String,
    /// The serial console as read (up to [`SERIAL_CAP`] bytes).
    #[serde(skip)]
    pub console: String,
}

impl BootResult {
    /// The first complete line of the console containing `needle`.
    pub fn line_with(&self, needle: &str) -> Option<&str> {
        complete_lines(&self.console, true).find(|l| l.contains(needle))
    }
}

/// Why the boot test could not run.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU could not start, or its supervision failed.
    #[error(transparent)]
    Tool(#[from] ToolError),
    /// The QEMU binary is not installed (not on PATH, or not at the path given).
    #[error("{program} is not installed: apt-get install qemu-system-x86")]
    NotInstalled {
        /// The binary looked for, as given.
        program: String,
    },
    /// The firmware files are not installed.
    #[error("the OVMF firmware is not installed (no {path}): apt-get install ovmf")]
    Firmware {
        /// The file looked for.
        path: String,
    },
    /// A temporary file for the serial log or the variable store could not be made.
    #[error("cannot {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The caller cancelled; QEMU was killed and reaped.
    #[error("cancelled")]
    Cancelled,
}

impl QemuError {
    /// What this error concerns.
    pub fn kind(&self) -> crate::ErrorKind {
        match self {
            QemuError::Tool(t) => t.kind(),
            QemuError::Cancelled => crate::ErrorKind::Cancelled,
            _ => crate::ErrorKind::Tool,
        }
    }
}

/// Find the QEMU binary `program`: a path (with a `/`) that is a file, or a name looked
/// up on PATH. Lets a caller say QEMU is missing before spending time on other work.
pub fn locate(program: &Path) -> Result<PathBuf, QemuError> {
    let found = if program.as_os_str().as_encoded_bytes().contains(&b'/') {
        Some(program.to_path_buf()).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| QemuError::NotInstalled {
        program: program.display().to_string(),
    })
}

fn io(action: &'static str) -> impl FnOnce(std::io::Error) -> QemuError {
    move |source| QemuError::Io { action, source }
}

/// The lines of `text` that are finished: all but a last one without `\n`, unless `all`.
fn complete_lines(text: &str, all: bool) -> impl Iterator<Item = &str> {
    let done = if all {
        text
    } else {
        text.rfind('\n').map_or("", |end| &text[..end])
    };
    // A serial console ends its lines with CR LF.
    done.lines().map(|l| l.strip_suffix('\r').unwrap_or(l))
}

/// A path as a value of QEMU's `-drive file=`: commas separate options there, so a comma
/// in the path is doubled.
fn drive_file(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// The OVMF code image for `firmware` and a private, writable copy of its variables.
fn ovmf_flash(firmware: BootFirmware) -> Result<(PathBuf, tempfile::NamedTempFile), QemuError> {
    let (code, vars) = match firmware {
        BootFirmware::UefiSecureBoot => {
            let (c, v) = OVMF_SECURE_BOOT;
            for p in [c, v] {
                if !Path::new(p).is_file() {
                    return Err(QemuError::Firmware { path: p.into() });
                }
            }
            (c, v)
        }
        _ => OVMF_PAIRS
            .into_iter()
            .find(|(c, v)| Path::new(c).is_file() && Path::new(v).is_file())
            .ok_or_else(|| QemuError::Firmware {
                path: OVMF_PAIRS[0].0.into(),
            })?,
    };
    let copy = tempfile::Builder::new()
        .prefix("imgconv-ovmf-vars-")
        .suffix(".fd")
        .tempfile()
        .and_then(|f| std::fs::copy(vars, f.path()).map(|_| f))
        .map_err(io("copy the OVMF variable store"))?;
    Ok((PathBuf::from(code), copy))
}

/// Boot `opts.image` and wait until every expected line was seen, a failure line shows,
/// QEMU stops by itself, the console passes [`SERIAL_CAP`] or the timeout passes.
/// `Ok` with `ok == false` is a boot that did not get there; `Err` is a boot test that
/// could not run.
pub fn boot(opts: &BootOptions, progress: &dyn Progress) -> Result<BootResult, QemuError> {
    let accel = opts.accel.resolve();
    let log = tempfile::Builder::new()
        .prefix("imgconv-serial-")
        .suffix(".log")
        .tempfile()
        .map_err(io("create the serial log"))?;
    let ovmf = match opts.firmware {
        BootFirmware::Bios => None,
        fw => Some(ovmf_flash(fw)?),
    };
    let machine = match (opts.firmware, opts.bus) {
        (BootFirmware::UefiSecureBoot, _) => "q35,smm=on",
        (BootFirmware::Uefi, _) | (BootFirmware::Bios, DiskBus::Sata) => "q35",
        _ => "pc",
    };
    let if_name = match opts.bus {
        DiskBus::Virtio => "virtio",
        // On q35 `if=ide` drives sit on the ICH9 AHCI (SATA) controller.
        DiskBus::Sata | DiskBus::Ide => "ide",
    };
    let mut args: Vec<String> = vec![
        "-machine".into(),
        machine.into(),
        "-m".into(),
        opts.memory_mib.to_string(),
        "-smp".into(),
        "2".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-snapshot".into(),
        "-serial".into(),
        format!("file:{}", log.path().display()),
        "-drive".into(),
        format!(
            "file={},format={},if={if_name}",
            drive_file(&opts.image),
            opts.format
        ),
    ];
    if !opts.reboots {
        args.push("-no-reboot".into());
    }
    if opts.network {
        args.push("-nic".into());
        args.push("user,model=e1000,restrict=on".into());
    }
    match accel {
        Accel::Kvm => args.extend(["-accel", "kvm", "-cpu", "host"].map(String::from)),
        _ => args.extend(["-accel", "tcg,thread=multi"].map(String::from)),
    }
    let firmware = match &ovmf {
        Some((code, vars)) => {
            if opts.firmware == BootFirmware::UefiSecureBoot {
                args.extend(
                    ["-global", "driver=cfi.pflash01,property=secure,value=on"].map(String::from),
                );
            }
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                drive_file(code)
            ));
            args.push("-drive".into());
            args.push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                drive_file(vars.path())
            ));
            format!("OVMF ({})", code.display())
        }
        None => "SeaBIOS".to_string(),
    };
    // QEMU's own messages go to a file: a pipe nobody reads could fill and stall it.
    let errlog = tempfile::tempfile().map_err(io("create a temporary file"))?;
    let errlog_w = errlog.try_clone().map_err(io("create a temporary file"))?;
    let mut serial = std::fs::File::open(log.path()).map_err(io("read the serial log"))?;
    // Killed and reaped when `running` is dropped, whatever path we leave by.
    let mut running = ToolCommand::with_program("qemu-system-x86_64", &opts.qemu)
        .args(&args)
        .spawn(Stdio::null(), Stdio::from(errlog_w))?;
    let started = Instant::now();
    let expect = opts.expectations();
    let mut bytes: Vec<u8> = Vec::new();
    let mut seen = usize::MAX;
    let mut buf = vec![0u8; 64 << 10];
    let finish = |ok: bool, reason: Option<String>, text: String, matched: Vec<Option<String>>| {
        let result = BootResult {
            ok,
            accel: accel.name().into(),
            machine: machine.split(',').next().unwrap_or(machine).into(),
            firmware: firmware.clone(),
            seconds: started.elapsed().as_secs_f64(),
            marker: expect
                .first()
                .zip(matched.first())
                .and_then(|(alts, line)| {
                    let line = line.as_deref()?;
                    alts.iter().find(|a| line.contains(a.as_str())).cloned()
                }),
            matched,
            reason,
            console_tail: crate::tool::tail_lines(&text, 15),
            console: text,
        };
        if let Some(keep) = &opts.serial_log {
            let _ = std::fs::write(keep, result.console.as_bytes());
        }
        result
    };
    loop {
        std::thread::sleep(POLL);
        // Whether QEMU stopped is asked before the log is read: once it has, the log is
        // final and a last unfinished line is all there will be.
        let exited = running.try_wait()?;
        while (bytes.len() as u64) < SERIAL_CAP {
            let want = buf.len().min((SERIAL_CAP - bytes.len() as u64) as usize);
            match serial.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // A last line without its newline counts once QEMU has exited, or once it has not
        // grown for a whole poll: a prompt (`login: `) never gets a newline, while a line
        // QEMU is still writing grows from one poll to the next.
        let done = exited.is_some() || bytes.len() == seen;
        seen = bytes.len();
        let matched: Vec<Option<String>> = expect
            .iter()
            .map(|alts| {
                complete_lines(&text, done)
                    .find(|l| alts.iter().any(|a| l.contains(a.as_str())))
                    .map(str::to_string)
            })
            .collect();
        let failed = complete_lines(&text, done)
            .find(|l| opts.fail_on.iter().any(|f| l.contains(f.as_str())))
            .map(str::to_string);
        if let Some(line) = failed {
            let reason = format!("the console showed a failure: {line}");
            return Ok(finish(false, Some(reason), text, matched));
        }
        if matched.iter().all(Option::is_some) {
            return Ok(finish(true, None, text, matched));
        }
        let wanted = || {
            expect
                .iter()
                .zip(&matched)
                .filter(|(_, m)| m.is_none())
                .map(|(alts, _)| format!("{:?}", alts.join("\" or \"")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if progress.is_cancelled() {
            return Err(QemuError::Cancelled);
        }
        if bytes.len() as u64 >= SERIAL_CAP {
            let reason = format!(
                "the serial console passed {} MiB without {}",
                SERIAL_CAP >> 20,
                wanted()
            );
            return Ok(finish(false, Some(reason), text, matched));
        }
        if let Some(status) = exited {
            let mut stderr = String::new();
            let mut e = &errlog;
            let _ = e.rewind();
            let _ = e.read_to_string(&mut stderr);
            let reason = format!(
                "qemu exited ({status}) before {}: {}",
                wanted(),
                crate::tool::tail_lines(&stderr, 3)
            );
            return Ok(finish(false, Some(reason), text, matched));
        }
        if started.elapsed() >= opts.timeout {
            let reason = format!(
                "no {} on the serial console within {} s",
                wanted(),
                opts.timeout.as_secs()
            );
            return Ok(finish(false, Some(reason), text, matched));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_finished_lines_count_until_qemu_has_exited() {
        let text = "first line\nIMGCONV-MARK";
        assert_eq!(
            complete_lines(text, false).collect::<Vec<_>>(),
            ["first line"]
        );
        assert_eq!(
            complete_lines(text, true).collect::<Vec<_>>(),
            ["first line", "IMGCONV-MARK"]
        );
        assert_eq!(complete_lines("no newline yet", false).count(), 0);
    }

    #[test]
    fn commas_in_drive_paths_are_doubled() {
        assert_eq!(drive_file(Path::new("/a,b/c.img")), "/a,,b/c.img");
    }

    #[test]
    fn default_expectation_is_a_login_prompt_or_the_marker() {
        let o = BootOptions::new("x.img");
        assert_eq!(o.expectations(), vec![vec!["login:", "IMGCONV-MARKER"]]);
        let o = o.expect_any(["boot=2"]);
        assert_eq!(o.expectations(), vec![vec!["boot=2"]]);
    }

    /// A QEMU that cannot start is an error naming the package, not a failed boot.
    #[test]
    fn a_missing_qemu_is_an_error() {
        let o = BootOptions::new("x.img").with_qemu("/nonexistent/qemu-system-x86_64");
        match boot(&o, &crate::NoProgress) {
            Err(QemuError::Tool(ToolError::NotInstalled { package, .. })) => {
                assert_eq!(package, "qemu-system-x86")
            }
            other => panic!("{other:?}"),
        }
    }
}
