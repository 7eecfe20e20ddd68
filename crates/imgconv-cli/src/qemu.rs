//! The QEMU boot smoke test: boot the image with `-snapshot` (never written), serial
//! console to a temporary log, and wait for a `login:` prompt (or the test fixtures'
//! `IMGCONV-MARKER` line). The qemu process is always killed by PID at the end.
//!
//! Acceleration: KVM when /dev/kvm is usable and is not the `kvm_pvm` software variant
//! (which cannot boot Linux), TCG otherwise; `IMGCONV_ACCEL=kvm|tcg` forces a choice.
//! `IMGCONV_QEMU` names another qemu binary.
//!
//! Firmware: SeaBIOS on the `pc` machine (q35 for SATA). UEFI is OVMF as real UEFI
//! hypervisors run it: the q35 machine, the firmware code in a read-only pflash and the
//! variable store in a second, writable pflash — a private copy of OVMF's VARS template,
//! deleted afterwards (the same as scripts/boot-check --uefi).

use crate::cli::BusArg;
use crate::errors::{Class, CliError};
use crate::signals;
use crate::tools;
use imgconv_core::tool::ToolCommand;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What the serial console must show for the boot to count.
pub const SUCCESS_MARKERS: [&str; 2] = ["login:", "IMGCONV-MARKER"];

/// The result of a boot test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BootResult {
    pub ok: bool,
    /// "kvm" or "tcg".
    pub accel: String,
    /// The QEMU machine: "pc" or "q35".
    pub machine: String,
    /// "SeaBIOS", or the OVMF code image booted from pflash.
    pub firmware: String,
    /// Seconds until the marker (or until giving up).
    pub seconds: f64,
    /// The marker seen, if any.
    pub marker: Option<String>,
    /// Why it failed, if it did.
    pub reason: Option<String>,
    /// The last lines of the serial console.
    pub console_tail: String,
}

/// The qemu binary to run.
pub fn qemu_binary() -> String {
    std::env::var("IMGCONV_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// Find the qemu binary on PATH (or as given), or say how to install it.
pub fn locate() -> Result<PathBuf, CliError> {
    let name = qemu_binary();
    let found = if name.contains('/') {
        Some(PathBuf::from(&name)).filter(|p| p.is_file())
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(&name))
                .find(|p| p.is_file())
        })
    };
    found.ok_or_else(|| {
        CliError::new(
            Class::Failure,
            format!("{name} is not installed: apt-get install qemu-system-x86"),
            "install QEMU (apt-get install qemu-system-x86), or verify without --boot",
        )
    })
}

/// "kvm" or "tcg", by the rules in the module doc.
pub fn choose_accel() -> &'static str {
    match std::env::var("IMGCONV_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    let kvm_usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    if kvm_usable && !pvm {
        "kvm"
    } else {
        "tcg"
    }
}

/// OVMF's code and variable-store template, as the Debian package installs them (4 MiB
/// flash first, then the older 2 MiB one).
const OVMF_PAIRS: [(&str, &str); 2] = [
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// The OVMF code image to boot and a private, writable copy of its variable store.
fn ovmf_flash() -> Result<(PathBuf, tempfile::NamedTempFile), CliError> {
    let (code, vars) = OVMF_PAIRS
        .into_iter()
        .find(|(code, vars)| Path::new(code).is_file() && Path::new(vars).is_file())
        .ok_or_else(|| {
            CliError::new(
                Class::Failure,
                format!(
                    "OVMF firmware is not installed (no {}): apt-get install ovmf",
                    OVMF_PAIRS[0].0
                ),
                "install ovmf, or boot without --uefi",
            )
        })?;
    let copy = tempfile::Builder::new()
        .prefix("imgconv-ovmf-vars-")
        .suffix(".fd")
        .tempfile()
        .and_then(|f| std::fs::copy(vars, f.path()).map(|_| f))
        .map_err(|e| {
            CliError::new(
                Class::Failure,
                format!("cannot copy the OVMF variable store {vars}: {e}"),
                "check $TMPDIR",
            )
        })?;
    Ok((PathBuf::from(code), copy))
}

/// A path as a value of QEMU's `-drive file=`: commas separate options there, so a comma in
/// the path is doubled.
fn drive_file(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

/// Most bytes of serial console read before the boot test gives up: a guest that floods
/// its console must not fill $TMPDIR.
const SERIAL_CAP: u64 = 64 << 20;

/// Bytes of the console kept in memory: enough for the tail shown and for a marker that
/// straddles two reads.
const SERIAL_WINDOW: usize = 64 << 10;

/// The serial log, read as it grows: only the new bytes on each poll, the last
/// [`SERIAL_WINDOW`] bytes kept.
struct SerialFollower {
    file: std::fs::File,
    read: u64,
    window: Vec<u8>,
}

impl SerialFollower {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(SerialFollower {
            file: std::fs::File::open(path)?,
            read: 0,
            window: Vec::new(),
        })
    }

    /// Read what was appended since the last call (at most up to the cap).
    fn poll(&mut self) {
        use std::io::Read;
        let mut buf = [0u8; 64 << 10];
        while self.read < SERIAL_CAP {
            let want = buf.len().min((SERIAL_CAP - self.read) as usize);
            match self.file.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    self.read += n as u64;
                    self.window.extend_from_slice(&buf[..n]);
                    if self.window.len() > 2 * SERIAL_WINDOW {
                        self.window.drain(..self.window.len() - SERIAL_WINDOW);
                    }
                }
            }
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.window).into_owned()
    }

    fn full(&self) -> bool {
        self.read >= SERIAL_CAP
    }
}

/// Boot `image` and wait for a login prompt for at most `timeout`.
pub fn boot(
    image: &Path,
    format: &str,
    bus: BusArg,
    uefi: bool,
    timeout: Duration,
) -> Result<BootResult, CliError> {
    let qemu = locate()?;
    let accel = choose_accel();
    let log = tempfile::Builder::new()
        .prefix("imgconv-serial-")
        .suffix(".log")
        .tempfile()
        .map_err(|e| {
            CliError::new(
                Class::Failure,
                format!("cannot create the serial log: {e}"),
                "check $TMPDIR",
            )
        })?;
    // Before qemu starts: the variable store must outlive it (dropped after the guard).
    let ovmf = if uefi { Some(ovmf_flash()?) } else { None };
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let machine = match (bus, &ovmf) {
        (_, Some(_)) | (BusArg::Sata, None) => "q35",
        _ => "pc",
    };
    let if_name = match bus {
        BusArg::Virtio => "virtio",
        // On q35 `if=ide` drives sit on the ICH9 AHCI (SATA) controller.
        BusArg::Sata | BusArg::Ide => "ide",
    };
    let mut push = |a: String| args.push(a.into());
    for a in ["-machine", machine, "-m", "1024", "-smp", "2"] {
        push(a.to_string());
    }
    for a in ["-nodefaults", "-display", "none", "-no-reboot", "-snapshot"] {
        push(a.to_string());
    }
    push("-serial".into());
    push(format!("file:{}", log.path().display()));
    push("-drive".into());
    push(format!(
        "file={},format={format},if={if_name}",
        drive_file(image)
    ));
    if accel == "kvm" {
        for a in ["-accel", "kvm", "-cpu", "host"] {
            push(a.to_string());
        }
    } else {
        push("-accel".into());
        push("tcg,thread=multi".into());
    }
    let firmware = match &ovmf {
        Some((code, vars)) => {
            push("-drive".into());
            push(format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                drive_file(code)
            ));
            push("-drive".into());
            push(format!(
                "if=pflash,format=raw,unit=1,file={}",
                drive_file(vars.path())
            ));
            format!("OVMF ({})", code.display())
        }
        None => "SeaBIOS".to_string(),
    };
    // qemu's own messages go to a file: a pipe nobody reads could fill and stall it.
    let errlog = tempfile::tempfile().map_err(|e| {
        CliError::new(
            Class::Failure,
            format!("cannot create a temporary file: {e}"),
            "check $TMPDIR",
        )
    })?;
    let errlog_w = errlog.try_clone().map_err(|e| {
        CliError::new(
            Class::Failure,
            format!("cannot create a temporary file: {e}"),
            "check $TMPDIR",
        )
    })?;
    let mut follower = SerialFollower::open(log.path()).map_err(|e| {
        CliError::new(
            Class::Failure,
            format!("cannot read the serial log: {e}"),
            "check $TMPDIR",
        )
    })?;
    // Killed and reaped when `running` is dropped, whatever path we leave by.
    let mut running = tools::spawn(
        ToolCommand::with_program("qemu-system-x86_64", &qemu).args(&args),
        Stdio::null(),
        Stdio::from(errlog_w),
    )?;
    let started = Instant::now();
    let result =
        |ok: bool, marker: Option<&str>, reason: Option<String>, console: &str| BootResult {
            ok,
            accel: accel.to_string(),
            machine: machine.to_string(),
            firmware: firmware.clone(),
            seconds: started.elapsed().as_secs_f64(),
            marker: marker.map(str::to_string),
            reason,
            console_tail: tools::tail(console, 15),
        };
    loop {
        std::thread::sleep(Duration::from_millis(250));
        follower.poll();
        let text = follower.text();
        if let Some(m) = SUCCESS_MARKERS.iter().find(|m| text.contains(*m)) {
            return Ok(result(true, Some(m), None, &text));
        }
        if signals::cancelled() {
            return Err(CliError::cancelled());
        }
        if follower.full() {
            return Ok(result(
                false,
                None,
                Some(format!(
                    "the serial console passed {} MiB without a login prompt",
                    SERIAL_CAP >> 20
                )),
                &text,
            ));
        }
        if let Ok(Some(status)) = running.try_wait() {
            let mut stderr = String::new();
            {
                use std::io::{Read, Seek};
                let mut e = &errlog;
                let _ = e.rewind();
                let _ = e.read_to_string(&mut stderr);
            }
            return Ok(result(
                false,
                None,
                Some(format!(
                    "qemu exited ({status}) before a login prompt: {}",
                    tools::tail(&stderr, 3)
                )),
                &text,
            ));
        }
        if started.elapsed() >= timeout {
            return Ok(result(
                false,
                None,
                Some(format!(
                    "no login prompt on the serial console within {} s",
                    timeout.as_secs()
                )),
                &text,
            ));
        }
    }
}
