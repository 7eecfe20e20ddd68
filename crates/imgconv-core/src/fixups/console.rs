//! Login consoles: a getty on the serial console (`ttyS0`) and on `tty1`, none on the Xen
//! consoles `hvc0`/`xvc0` (which do not exist under KVM: a getty there waits for a device
//! forever or respawns until init gives up).
//!
//! - systemd: enable `serial-getty@ttyS0.service` and `getty@tty1.service` by links in
//!   `/etc/systemd/system/getty.target.wants/` (as `systemctl enable` does, pointing at the
//!   template in whichever of `/lib/systemd/system` or `/usr/lib/systemd/system` has it),
//!   and move aside every `*getty@hvc0|xvc0.service` link in `/etc/systemd/system/*.wants/`.
//! - SysV init: in `/etc/inittab`, comment out the `hvc0`/`xvc0` getty lines and put a
//!   `ttyS0` getty line (and a `tty1` one when missing) in their place.
//! - upstart: `/etc/init/ttyS0.conf` and `tty1.conf` (and the old `/etc/event.d/ttyS0`,
//!   `tty1` jobs) derived from the guest's own `hvc0`/`xvc0` job, which is moved aside.
//! - `/etc/securetty`, when present, gains `ttyS0` and `tty1` so root may log in there.

use super::edit::{
    append_lines, apply_edit, create, exists, is_blank_or_comment, join, lines, move_aside,
    read_config, rewrite, rewrite_as, split_eol, Edited, COMMENT_PREFIX,
};
use super::{At, FixupContext, FixupError, InitSystem};
use crate::guestfs::NodeKind;
use crate::guestfs::{GuestFs, NodeAttrs};
use crate::report::Report;

const STEP: &str = "console";

/// The Xen PV console devices.
const XEN_CONSOLES: [&str; 2] = ["hvc0", "xvc0"];

/// Where distributions keep systemd's vendor units.
const UNIT_DIRS: [&str; 2] = ["/lib/systemd/system", "/usr/lib/systemd/system"];

const ETC_UNITS: &str = "/etc/systemd/system";
const GETTY_WANTS: &str = "/etc/systemd/system/getty.target.wants";

/// Tell the guest's init system from its files: `/sbin/init` (or `/usr/sbin/init`)
/// linking to systemd or upstart, the `/sbin/upstart` binary, upstart's `initctl` with
/// its job directories (`/etc/init` since 0.6, the old `/etc/event.d`), SysV's
/// `/etc/inittab`, or a systemd binary. `None` when nothing fits. `inspect` and the
/// fixups both ask this one function.
pub fn detect_init(guest: &mut dyn GuestFs) -> Result<Option<InitSystem>, FixupError> {
    for init in ["/sbin/init", "/usr/sbin/init"] {
        if let Some(meta) = guest.lstat(init).at(STEP, init)? {
            if meta.kind == NodeKind::Symlink {
                let target = guest.read_link(init).at(STEP, init)?.unwrap_or_default();
                if target.contains("systemd") {
                    return Ok(Some(InitSystem::Systemd));
                }
                if target.contains("upstart") {
                    return Ok(Some(InitSystem::Upstart));
                }
            }
        }
    }
    let is_dir = |guest: &mut dyn GuestFs, p: &str| -> Result<bool, FixupError> {
        Ok(guest
            .stat(p)
            .at(STEP, p)?
            .is_some_and(|m| m.kind == NodeKind::Dir))
    };
    if exists(guest, STEP, "/sbin/upstart")?
        || (exists(guest, STEP, "/sbin/initctl")?
            && (is_dir(guest, "/etc/init")? || is_dir(guest, "/etc/event.d")?))
    {
        return Ok(Some(InitSystem::Upstart));
    }
    if guest
        .stat("/etc/inittab")
        .at(STEP, "/etc/inittab")?
        .is_some()
    {
        return Ok(Some(InitSystem::Sysvinit));
    }
    for p in ["/lib/systemd/systemd", "/usr/lib/systemd/systemd"] {
        if guest.stat(p).at(STEP, p)?.is_some() {
            return Ok(Some(InitSystem::Systemd));
        }
    }
    Ok(None)
}

/// Configure gettys for the guest's init system and fix `/etc/securetty`.
pub fn fix_consoles(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let init = match ctx.init_system {
        Some(i) => Some(i),
        None => detect_init(guest)?,
    };
    match init {
        Some(InitSystem::Systemd) => systemd_gettys(guest, ctx, report)?,
        Some(InitSystem::Sysvinit) => fix_inittab(guest, ctx, report)?,
        Some(InitSystem::Upstart) => upstart_gettys(guest, ctx, report)?,
        None => report.warn(
            "could not tell the guest's init system (no systemd, upstart or /etc/inittab); no getty was configured on the serial console",
        ),
    }
    fix_securetty(guest, ctx, report)
}

fn file_exists(guest: &mut dyn GuestFs, path: &str) -> Result<bool, FixupError> {
    Ok(guest
        .stat(path)
        .at(STEP, path)?
        .is_some_and(|m| m.kind == NodeKind::File))
}

// ---- systemd

fn systemd_gettys(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    disable_xen_getty_links(guest, report)?;
    let serial = format!("serial-getty@{}.service", ctx.serial_console);
    enable_instance(
        guest,
        ctx,
        report,
        &serial,
        "serial-getty@.service",
        "the new kernel command line sends the console to the serial port; a getty there gives a login on `virsh console`/`-serial stdio`",
    )?;
    enable_instance(
        guest,
        ctx,
        report,
        "getty@tty1.service",
        "getty@.service",
        "a login on the first virtual console (VGA/VNC) of the new machine",
    )
}

/// Enable `instance` of `template` in getty.target.wants unless it is enabled already
/// (in /etc or by the distribution) or masked.
fn enable_instance(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
    instance: &str,
    template: &str,
    why: &str,
) -> Result<(), FixupError> {
    let link = join(GETTY_WANTS, instance);
    if exists(guest, STEP, &link)? {
        return Ok(());
    }
    for dir in UNIT_DIRS {
        if exists(
            guest,
            STEP,
            &join(dir, &format!("getty.target.wants/{instance}")),
        )? {
            return Ok(());
        }
    }
    let etc_unit = join(ETC_UNITS, instance);
    let masked = match guest.lstat(&etc_unit).at(STEP, &etc_unit)? {
        Some(m) if m.kind == NodeKind::Symlink => {
            guest.read_link(&etc_unit).at(STEP, &etc_unit)?.as_deref() == Some("/dev/null")
        }
        _ => false,
    };
    if masked {
        report.warn(format!(
            "{instance} is masked in the guest ({etc_unit} -> /dev/null); it was not enabled"
        ));
        return Ok(());
    }
    let mut unit = None;
    for dir in UNIT_DIRS {
        let p = join(dir, template);
        if file_exists(guest, &p)? {
            unit = Some(p);
            break;
        }
    }
    let Some(target) = unit else {
        report.warn(format!(
            "the guest has no {template} unit in /lib/systemd/system or /usr/lib/systemd/system; {instance} was not enabled"
        ));
        return Ok(());
    };
    guest
        .mkdir_p(GETTY_WANTS, NodeAttrs::root(0o755, ctx.mtime))
        .at(STEP, GETTY_WANTS)?;
    guest
        .symlink(&link, &target, NodeAttrs::root(0o777, ctx.mtime))
        .at(STEP, &link)?;
    report.change(
        STEP,
        &link,
        format!("enabled {instance} (link to {target})"),
        why,
        None,
    );
    Ok(())
}

/// Move aside `[serial-]getty@hvc0|xvc0.service` links in every `*.wants` directory of
/// /etc/systemd/system.
fn disable_xen_getty_links(guest: &mut dyn GuestFs, report: &mut Report) -> Result<(), FixupError> {
    let names: Vec<String> = XEN_CONSOLES
        .iter()
        .flat_map(|c| {
            [
                format!("serial-getty@{c}.service"),
                format!("getty@{c}.service"),
            ]
        })
        .collect();
    for dir in wants_dirs(guest)? {
        let items = guest
            .read_dir(&dir, crate::tree::MAX_DIR_ENTRIES)
            .at(STEP, &dir)?
            .unwrap_or_default();
        for item in items {
            if names.contains(&item.name) {
                let path = join(&dir, &item.name);
                move_aside(
                    guest,
                    report,
                    STEP,
                    &path,
                    true,
                    format!("disabled {} (link moved aside)", item.name),
                    "the Xen console does not exist under KVM; the getty would wait for the device forever",
                )?;
            }
        }
    }
    Ok(())
}

/// The `*.wants` directories of /etc/systemd/system.
pub(crate) fn wants_dirs(guest: &mut dyn GuestFs) -> Result<Vec<String>, FixupError> {
    let items = guest
        .read_dir(ETC_UNITS, crate::tree::MAX_DIR_ENTRIES)
        .at(STEP, ETC_UNITS)?
        .unwrap_or_default();
    Ok(items
        .into_iter()
        .filter(|i| i.kind == NodeKind::Dir && i.name.ends_with(".wants"))
        .map(|i| join(ETC_UNITS, &i.name))
        .collect())
}

// ---- SysV init

/// The getty program for new inittab lines: util-linux's `getty` (Debian) or `agetty`.
fn getty_program(guest: &mut dyn GuestFs, report: &mut Report) -> Result<String, FixupError> {
    for p in ["/sbin/getty", "/sbin/agetty"] {
        if file_exists(guest, p)? {
            return Ok(p.to_string());
        }
    }
    report.warn("the guest has neither /sbin/getty nor /sbin/agetty; the new inittab lines name /sbin/getty");
    Ok("/sbin/getty".to_string())
}

/// One active inittab line `id:runlevels:action:process`.
struct InittabEntry<'a> {
    id: &'a str,
    process: &'a str,
}

fn parse_inittab(text: &str) -> Option<InittabEntry<'_>> {
    if is_blank_or_comment(text) {
        return None;
    }
    let mut parts = text.splitn(4, ':');
    let id = parts.next()?;
    let _runlevels = parts.next()?;
    let _action = parts.next()?;
    let process = parts.next()?;
    Some(InittabEntry { id, process })
}

/// Whether a getty command line runs on `dev` (`hvc0` or `/dev/hvc0` as a word).
fn names_device(process: &str, dev: &str) -> bool {
    process
        .split_whitespace()
        .any(|w| w == dev || w.strip_prefix("/dev/") == Some(dev))
}

/// The first id from `candidates` not in `taken`.
fn free_id(taken: &[String], candidates: &[String]) -> String {
    candidates
        .iter()
        .find(|c| !taken.contains(c))
        .cloned()
        .unwrap_or_else(|| {
            (0..)
                .map(|n| format!("ic{n}"))
                .find(|c| !taken.contains(c))
                .expect("an unused id")
        })
}

/// Compute the new inittab (pure, for unit tests).
fn edit_inittab(old: &[u8], serial: &str, getty: &str) -> Edited {
    let mut out = Edited::default();
    let texts: Vec<Option<&str>> = lines(old)
        .map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .collect();
    let is_xen = |e: &InittabEntry| XEN_CONSOLES.iter().any(|c| names_device(e.process, c));
    let mut taken = Vec::new();
    let (mut has_serial, mut has_tty1) = (false, false);
    for e in texts.iter().flatten().filter_map(|t| parse_inittab(t)) {
        if is_xen(&e) {
            continue;
        }
        taken.push(e.id.to_string());
        has_serial |= names_device(e.process, serial);
        has_tty1 |= names_device(e.process, "tty1");
    }
    let digits: String = serial.chars().filter(char::is_ascii_digit).collect();
    let digits = if digits.is_empty() {
        "0".into()
    } else {
        digits
    };
    let mut new_lines = String::new();
    if !has_serial {
        let id = free_id(&taken, &[format!("T{digits}"), format!("S{digits}")]);
        new_lines.push_str(&format!(
            "{id}:2345:respawn:{getty} -L {serial} 115200 vt100\n"
        ));
        out.edits.push(format!("added a getty on {serial}"));
        taken.push(id);
    }
    if !has_tty1 {
        let id = free_id(&taken, &["1".to_string(), "c1".to_string()]);
        new_lines.push_str(&format!("{id}:2345:respawn:{getty} 38400 tty1\n"));
        out.edits.push("added a getty on tty1".to_string());
    }
    let mut placed = false;
    for (line, text) in lines(old).zip(&texts) {
        let xen = text.and_then(parse_inittab).filter(|e| is_xen(e));
        match (xen, text) {
            (Some(e), Some(text)) => {
                let eol = split_eol(line).1;
                out.push(
                    &format!("{COMMENT_PREFIX}{text}"),
                    if eol.is_empty() { b"\n" } else { eol },
                );
                out.edits.push(format!(
                    "commented out the Xen console getty `{}`",
                    e.process.trim()
                ));
                if !placed {
                    out.text.extend_from_slice(new_lines.as_bytes());
                    placed = true;
                }
            }
            _ => out.keep(line),
        }
    }
    if !placed && !new_lines.is_empty() {
        append_lines(&mut out.text, &new_lines);
    }
    out
}

fn fix_inittab(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let path = "/etc/inittab";
    let Some(old) = read_config(guest, STEP, path)? else {
        report.warn("SysV init without a readable /etc/inittab; no getty was configured");
        return Ok(());
    };
    // Only look the program up when a line will be added (keeps a second run silent).
    let probe = edit_inittab(&old, &ctx.serial_console, "/sbin/getty");
    if probe.text == old {
        return Ok(());
    }
    let getty = getty_program(guest, report)?;
    let edited = edit_inittab(&old, &ctx.serial_console, &getty);
    apply_edit(
        guest,
        report,
        STEP,
        path,
        &old,
        edited,
        "the Xen console (hvc0/xvc0) does not exist under KVM; logins go to the serial console and tty1",
    )?;
    Ok(())
}

// ---- upstart

/// Replace `from` by `to` where it stands as a whole word.
fn replace_word(s: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(from) {
        let before_ok = !rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        let after = &rest[i + from.len()..];
        let after_ok = !after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        out.push_str(&rest[..i]);
        out.push_str(if before_ok && after_ok { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// A job for `dev` made from the guest's Xen console job: the device renamed, and the
/// getty `exec` line replaced by `exec`.
fn derive_job(model: &str, model_dev: &str, dev: &str, exec: &str) -> String {
    let mut out = String::new();
    for line in model.split_inclusive('\n') {
        let (text, eol) = match line.strip_suffix('\n') {
            Some(t) => (t, "\n"),
            None => (line, ""),
        };
        let trimmed = text.trim_start();
        if trimmed.starts_with("exec ") && trimmed.contains("getty") {
            out.push_str(&text[..text.len() - trimmed.len()]);
            out.push_str(exec);
        } else {
            out.push_str(&replace_word(text, model_dev, dev));
        }
        out.push_str(eol);
    }
    out
}

/// A job for `dev` when the guest has no Xen console job to start from.
fn template_job(dev: &str, what: &str, exec: &str, event_d: bool) -> String {
    let header = format!("# {dev} - getty on the {what}, added by imgconv for KVM\n\n");
    let stanzas = if event_d {
        "start on runlevel 2\nstart on runlevel 3\nstart on runlevel 4\nstart on runlevel 5\n\n\
         stop on runlevel 0\nstop on runlevel 1\nstop on runlevel 6\n"
    } else {
        "start on stopped rc RUNLEVEL=[2345]\nstop on runlevel [!2345]\n"
    };
    format!("{header}{stanzas}\nrespawn\n{exec}\n")
}

fn upstart_gettys(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let mut any = false;
    for (dir, suffix, event_d) in [("/etc/init", ".conf", false), ("/etc/event.d", "", true)] {
        let is_dir = guest
            .stat(dir)
            .at(STEP, dir)?
            .is_some_and(|m| m.kind == NodeKind::Dir);
        if is_dir {
            any = true;
            upstart_dir(guest, ctx, report, dir, suffix, event_d)?;
        }
    }
    if !any {
        report.warn("upstart without /etc/init or /etc/event.d; no getty was configured");
    }
    Ok(())
}

/// A getty job of the guest that runs on a Xen console.
struct XenJob {
    /// The Xen console it runs on.
    dev: &'static str,
    path: String,
    /// Its content before any change.
    content: String,
    meta: Option<crate::guestfs::NodeMeta>,
    /// Named after the Xen console (`hvc0.conf`, `event.d/xvc0`): moved aside. Otherwise
    /// (`event.d/tty1` running a login on `xvc0`) it was pointed at another device.
    named_for_console: bool,
}

/// The getty programs an upstart guest has: Debian/Ubuntu ship util-linux's `getty`,
/// RHEL 6 and Amazon Linux 1 `agetty` and `mingetty` only.
struct UpstartGettys {
    getty: bool,
    agetty: bool,
    mingetty: bool,
}

impl UpstartGettys {
    fn find(guest: &mut dyn GuestFs) -> Result<Self, FixupError> {
        Ok(UpstartGettys {
            getty: file_exists(guest, "/sbin/getty")?,
            agetty: file_exists(guest, "/sbin/agetty")?,
            mingetty: file_exists(guest, "/sbin/mingetty")?,
        })
    }

    /// The `exec` line of a serial getty on `dev`.
    fn serial(&self, dev: &str) -> String {
        if !self.getty && self.agetty {
            format!("exec /sbin/agetty -L {dev} 115200 vt102")
        } else {
            format!("exec /sbin/getty -L 115200 {dev} vt102")
        }
    }

    /// The `exec` line of a getty on tty1.
    fn tty1(&self) -> String {
        if self.getty {
            "exec /sbin/getty -8 38400 tty1".into()
        } else if self.mingetty {
            "exec /sbin/mingetty tty1".into()
        } else if self.agetty {
            "exec /sbin/agetty tty1 38400 linux".into()
        } else {
            "exec /sbin/getty -8 38400 tty1".into()
        }
    }
}

/// The Xen console an upstart job's getty runs on, if any.
fn job_console(content: &str) -> Option<&'static str> {
    content
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("exec ") && l.contains("getty"))
        .find_map(|l| XEN_CONSOLES.into_iter().find(|c| names_device(l, c)))
}

/// Whether any job of `dir` mentions `needle`.
fn jobs_mention(guest: &mut dyn GuestFs, dir: &str, needle: &str) -> Result<bool, FixupError> {
    for name in job_names(guest, dir, ".conf")? {
        let path = join(dir, &name);
        if read_config(guest, STEP, &path)?
            .is_some_and(|c| String::from_utf8_lossy(&c).contains(needle))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The job files of an upstart directory (`suffix` empty: every visible file).
fn job_names(guest: &mut dyn GuestFs, dir: &str, suffix: &str) -> Result<Vec<String>, FixupError> {
    let mut names: Vec<String> = guest
        .read_dir(dir, crate::tree::MAX_DIR_ENTRIES)
        .at(STEP, dir)?
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.ends_with(suffix) && !n.starts_with('.') && !n.contains(super::BACKUP_SUFFIX))
        .collect();
    names.sort();
    Ok(names)
}

/// Upstart jobs in `dir` (`/etc/init` with `.conf` names, or the old `/etc/event.d`
/// where every file is a job — so the moved-aside job gets a hidden name there).
fn upstart_dir(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
    dir: &str,
    suffix: &str,
    event_d: bool,
) -> Result<(), FixupError> {
    let serial = ctx.serial_console.as_str();
    let mut jobs = Vec::new();
    for name in job_names(guest, dir, suffix)? {
        let path = join(dir, &name);
        let Some(content) = read_config(guest, STEP, &path)? else {
            continue;
        };
        let content = String::from_utf8_lossy(&content).into_owned();
        let base = name.strip_suffix(suffix).unwrap_or(&name);
        let named = XEN_CONSOLES.into_iter().find(|c| *c == base);
        let Some(dev) = named.or_else(|| job_console(&content)) else {
            continue;
        };
        let meta = guest.stat(&path).at(STEP, &path)?;
        jobs.push(XenJob {
            dev,
            path,
            content,
            meta,
            named_for_console: named.is_some(),
        });
    }
    // A job with another name running a login on a Xen console (the old Xen guides
    // pointed event.d/tty1 at xvc0): back to the device it is named after, or to the
    // serial console.
    for job in jobs.iter().filter(|j| !j.named_for_console) {
        let base = job
            .path
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(suffix);
        let target = if base.starts_with("tty")
            && base[3..].bytes().all(|b| b.is_ascii_alphanumeric())
            && !base.is_empty()
        {
            base.to_string()
        } else {
            serial.to_string()
        };
        let new = replace_word(&job.content, job.dev, &target);
        rewrite_as(
            guest,
            report,
            STEP,
            &job.path,
            job.content.as_bytes(),
            new.as_bytes(),
            format!("the getty job now runs on {target} instead of {}", job.dev),
            "the Xen console does not exist under KVM; upstart would respawn its getty until it gives up",
            event_d,
        )?;
    }
    let gettys = UpstartGettys::find(guest)?;
    let wanted = [
        (serial, "serial console", gettys.serial(serial)),
        ("tty1", "first virtual console", gettys.tty1()),
    ];
    // RHEL 6 and Amazon Linux 1 start a getty on the kernel's console device themselves
    // (serial.conf, on `fedora.serial-console-available`) and on the ACTIVE_CONSOLES
    // (start-ttys.conf): a job of ours would be a second getty on the same device.
    let own_serial = !event_d && jobs_mention(guest, dir, "serial-console-available")?;
    let own_ttys = !event_d && exists(guest, STEP, &join(dir, "start-ttys.conf"))?;
    for (dev, what, exec) in wanted {
        let path = join(dir, &format!("{dev}{suffix}"));
        if exists(guest, STEP, &path)?
            || (dev == serial && own_serial)
            || (dev == "tty1" && own_ttys)
        {
            continue;
        }
        let model = jobs.iter().find(|j| j.named_for_console).or(jobs.first());
        let (content, attrs, origin) = match model {
            Some(j) => (
                derive_job(&j.content, j.dev, dev, &exec),
                j.meta
                    .as_ref()
                    .map_or(NodeAttrs::root(0o644, ctx.mtime), |m| NodeAttrs {
                        mode: m.mode,
                        uid: m.uid,
                        gid: m.gid,
                        mtime: ctx.mtime,
                    }),
                format!(", based on {}", j.path),
            ),
            None => (
                template_job(dev, what, &exec, event_d),
                NodeAttrs::root(0o644, ctx.mtime),
                String::new(),
            ),
        };
        create(
            guest,
            report,
            STEP,
            &path,
            content.as_bytes(),
            attrs,
            format!("created an upstart job for a getty on {dev}{origin}"),
            format!("a login on the {what} of the new machine"),
        )?;
    }
    for job in jobs.iter().filter(|j| j.named_for_console) {
        move_aside(
            guest,
            report,
            STEP,
            &job.path,
            event_d,
            format!("disabled the upstart getty job on {} (moved aside)", job.dev),
            "the Xen console does not exist under KVM; upstart would respawn its getty until it gives up",
        )?;
    }
    Ok(())
}

// ---- securetty

fn fix_securetty(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let path = "/etc/securetty";
    let Some(old) = read_config(guest, STEP, path)? else {
        return Ok(());
    };
    let present: Vec<String> = lines(&old)
        .filter_map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .filter(|t| !is_blank_or_comment(t))
        .map(|t| t.trim().to_string())
        .collect();
    let missing: Vec<&str> = [ctx.serial_console.as_str(), "tty1"]
        .into_iter()
        .filter(|t| !present.iter().any(|p| p == t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut new = old.clone();
    append_lines(
        &mut new,
        &missing.iter().map(|t| format!("{t}\n")).collect::<String>(),
    );
    rewrite(
        guest,
        report,
        STEP,
        path,
        &old,
        &new,
        format!("added {}", missing.join(" and ")),
        "pam_securetty only lets root log in on the terminals listed there",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inittab_ids_avoid_collisions() {
        let old = "T0:23:respawn:/sbin/getty -L ttyS1 9600 vt100\n1:2345:respawn:/sbin/getty 38400 hvc0\n";
        let e = edit_inittab(old.as_bytes(), "ttyS0", "/sbin/getty");
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "T0:23:respawn:/sbin/getty -L ttyS1 9600 vt100\n\
             # imgconv: 1:2345:respawn:/sbin/getty 38400 hvc0\n\
             S0:2345:respawn:/sbin/getty -L ttyS0 115200 vt100\n\
             1:2345:respawn:/sbin/getty 38400 tty1\n"
        );
    }

    #[test]
    fn inittab_without_xen_console_gets_lines_appended() {
        let old = "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1";
        let e = edit_inittab(old.as_bytes(), "ttyS0", "/sbin/agetty");
        assert_eq!(
            String::from_utf8(e.text).unwrap(),
            "id:2:initdefault:\n1:2345:respawn:/sbin/getty 38400 tty1\n\
             T0:2345:respawn:/sbin/agetty -L ttyS0 115200 vt100\n"
        );
    }

    #[test]
    fn word_replacement() {
        assert_eq!(
            replace_word("hvc0 hvc01 /dev/hvc0 xhvc0", "hvc0", "ttyS0"),
            "ttyS0 hvc01 /dev/ttyS0 xhvc0"
        );
    }
}
