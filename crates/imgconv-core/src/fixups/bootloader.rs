//! The guest's own boot configuration, so that its first kernel update keeps booting.
//!
//! The converted disk boots from the grub.cfg the boot step writes, but every kernel
//! update in the guest regenerates its boot menu from the guest's own settings: Debian and
//! Ubuntu run `update-grub` (`grub-mkconfig`, reading `/etc/default/grub`), RHEL 7's
//! grubby copies the arguments of the default entry of `/boot/grub2/grub.cfg`, SUSE's
//! perl-Bootloader reads `/etc/sysconfig/bootloader`. A Xen guest's settings name the Xen
//! console (`console=hvc0`, `xencons=tty`), its Xen disks (`root=/dev/xvda1`, `resume=`) and lack
//! `net.ifnames=0`; the first regenerated menu would boot with no console on the serial
//! port and a renamed NIC. So:
//!
//! | file | change |
//! |---|---|
//! | `/etc/default/grub` (Debian, Ubuntu, RHEL 7, SLES 12), `/etc/sysconfig/grub` | in `GRUB_CMDLINE_LINUX*`: Xen consoles, `xencons=` and `root=/dev/xvd*` dropped; the serial console, `net.ifnames=0 biosdevname=0` and the compatibility arguments added to `GRUB_CMDLINE_LINUX`; `GRUB_TERMINAL="serial console"` and a `GRUB_SERIAL_COMMAND` |
//! | `/etc/sysconfig/bootloader` (SUSE) | the same for `DEFAULT_APPEND` (additions) and `FAILSAFE_APPEND` (removals only) |
//! | `/boot/grub2/grub.cfg` (RHEL) | the same on every `linux`/`linux16`/`linuxefi` line |
//! | `/boot/grub2/grubenv` (RHEL 8+) | the same in `kernelopts=`, the block kept at 1024 bytes |
//! | `/var/cache/debconf/config.dat` | `grub-pc/install_devices` set to the new boot disk |
//!
//! Words are edited one by one; everything else in a file stays byte for byte. A value
//! the fixup cannot edit safely (shell expansions, an unterminated quote) is left alone
//! with a warning.

use super::edit::{
    edit_config, is_blank_or_comment, lines, read_config, rewrite, split_eol, Edited,
};
use super::{device_prefix, FixupContext, FixupError};
use crate::boot::grubenv;
use crate::guestfs::GuestFs;
use crate::report::Report;

const STEP: &str = "bootloader";

const WHY: &str = "the guest regenerates its boot menu from these settings on every kernel update; the Xen console and disk names do not exist under KVM, and the converted guest relies on the serial console and the eth0 name";

/// Whether a kernel command-line word names the Xen console or a Xen disk: the Xen
/// consoles, `xencons=`, and `root=`/`resume=` on a `/dev/xvd*` device (the root is
/// found by UUID, and the initrd would wait for a resume device that never appears).
fn xen_word(word: &str) -> bool {
    let console = word.strip_prefix("console=");
    console.is_some_and(|c| c.starts_with("hvc") || c.starts_with("xvc"))
        || word.starts_with("xencons=")
        || ["root=", "resume="].iter().any(|k| {
            word.strip_prefix(k)
                .is_some_and(|r| r.starts_with("/dev/xvd"))
        })
}

/// The arguments the converted guest needs on every kernel command line, in the order
/// they are added: the consoles (the last `console=` becomes /dev/console), the old
/// interface names, and the compatibility arguments (`vsyscall=emulate`, …).
pub(crate) fn wanted_args(ctx: &FixupContext) -> Vec<String> {
    let mut args = vec![
        "console=tty0".to_string(),
        format!("console={},115200n8", ctx.serial_console),
        "net.ifnames=0".to_string(),
        "biosdevname=0".to_string(),
    ];
    args.extend(ctx.extra_kernel_args.iter().cloned());
    args
}

/// The key of a kernel argument (`console`, `net.ifnames`, `quiet`).
fn arg_key(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// Which of `wanted` a command line made of `present` words lacks. A console is
/// present when that very device is named; any other argument when its key is.
fn missing_args(present: &[String], wanted: &[String], serial: &str) -> Vec<String> {
    let has_console = |dev: &str| {
        present.iter().any(|w| {
            w.strip_prefix("console=")
                .is_some_and(|c| c.split(',').next() == Some(dev))
        })
    };
    let serial_present = has_console(serial);
    wanted
        .iter()
        .filter(|w| match w.strip_prefix("console=") {
            // tty0 only comes with a new serial console, so that the screen keeps the
            // kernel's messages when the serial console becomes /dev/console.
            Some("tty0") => {
                !serial_present
                    && !present
                        .iter()
                        .any(|p| p.starts_with("console=tty") && !p.starts_with("console=ttyS"))
            }
            Some(c) => !has_console(c.split(',').next().unwrap_or(c)),
            None => !present.iter().any(|p| arg_key(p) == arg_key(w)),
        })
        .cloned()
        .collect()
}

/// Drop the Xen words of `words`, returning the ones dropped.
fn drop_xen(words: &mut Vec<String>) -> Vec<String> {
    let dropped: Vec<String> = words.iter().filter(|w| xen_word(w)).cloned().collect();
    words.retain(|w| !xen_word(w));
    dropped
}

/// Rewrite the words that name flattened LVM2 volumes: `root=` naming the root's logical
/// volume becomes `root=UUID=`, `resume=` naming a carried swap volume `resume=UUID=`,
/// and dracut's activation of a flattened group (`rd.lvm.lv=VG/LV`, `rd.lvm.vg=VG`, and
/// the older `rd_LVM_LV=`, `rd_LVM_VG=`) is dropped: the group no longer exists. Returns
/// each change in words.
fn fix_lvm(words: &mut Vec<String>, ctx: &FixupContext) -> Vec<String> {
    let groups = ctx.flattened_groups();
    if groups.is_empty() {
        return Vec::new();
    }
    let mut edits = Vec::new();
    let swap_uuid = |dev: &str| {
        ctx.volumes
            .iter()
            .flatten()
            .find(|v| v.swap && v.aliases.iter().any(|a| a == dev))
            .and_then(|v| v.uuid.clone())
    };
    let mut out = Vec::with_capacity(words.len());
    for w in words.drain(..) {
        let (key, value) = w.split_once('=').unwrap_or((w.as_str(), ""));
        let new = match key {
            "root" if ctx.root_aliases.iter().any(|a| a == value) => {
                Some(Some(format!("root=UUID={}", ctx.root_uuid)))
            }
            "resume" => swap_uuid(value).map(|u| Some(format!("resume=UUID={u}"))),
            "rd.lvm.lv" | "rd.lvm.vg" | "rd_LVM_LV" | "rd_LVM_VG"
                if groups.iter().any(|g| value.split('/').next() == Some(g)) =>
            {
                Some(None)
            }
            _ => None,
        };
        match new {
            None => out.push(w),
            Some(Some(n)) => {
                edits.push(format!("{w} \u{2192} {n}"));
                out.push(n);
            }
            Some(None) => edits.push(format!("{w} dropped")),
        }
    }
    *words = out;
    edits
}

/// A shell assignment `NAME=value` on one line, with the value's quoting.
struct Assignment<'a> {
    /// Everything up to and including `=`.
    head: &'a str,
    name: &'a str,
    quote: Option<char>,
    value: &'a str,
    /// Whatever follows the value (a comment, blanks).
    tail: &'a str,
}

/// Parse `[export ]NAME=value` where value is `"…"`, `'…'` or one bare word. `None` for
/// anything else (a comment, a line this parser cannot take apart safely).
fn parse_assignment(text: &str) -> Option<Assignment<'_>> {
    if is_blank_or_comment(text) {
        return None;
    }
    let eq = text.find('=')?;
    let head = &text[..=eq];
    let name = head[..eq]
        .trim_start()
        .strip_prefix("export ")
        .unwrap_or(head[..eq].trim_start())
        .trim_start();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    let rest = &text[eq + 1..];
    let (quote, value, tail) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let end = rest[1..].find(q)? + 1;
            (Some(q), &rest[1..end], &rest[end + 1..])
        }
        _ => {
            let end = rest.find([' ', '\t', '#', ';']).unwrap_or(rest.len());
            (None, &rest[..end], &rest[end..])
        }
    };
    Some(Assignment {
        head,
        name,
        quote,
        value,
        tail,
    })
}

/// Whether the fixup can edit a value word by word: a single-quoted value always; a
/// double-quoted or bare one unless it holds command substitution or escapes (words with
/// `$` in them are kept as they are and otherwise ignored).
fn editable(a: &Assignment<'_>) -> bool {
    a.quote == Some('\'') || !a.value.contains(['`', '\\'])
}

/// The words of a value that are literal kernel arguments.
fn literal_words(value: &str) -> impl Iterator<Item = &str> {
    value.split_whitespace().filter(|w| !w.contains('$'))
}

fn render_assignment(a: &Assignment<'_>, words: &[String]) -> String {
    let value = words.join(" ");
    let quote = match a.quote {
        Some(q) => q.to_string(),
        None if value.contains(' ') || value.is_empty() => "\"".to_string(),
        None => String::new(),
    };
    format!("{}{quote}{value}{quote}{}", a.head, a.tail)
}

/// Edit the kernel command-line variables of a shell-style settings file: `drop_vars`
/// lose their Xen words, `add_var` (the last active assignment of it, or a new line) gains
/// what `wanted` lacks; `extra` adds other settings (name, value, only when absent or
/// different as decided by the closure).
fn edit_cmdline_vars(
    old: &[u8],
    drop_vars: &[&str],
    add_var: &str,
    ctx: &FixupContext,
    terminal: bool,
) -> Edited {
    let mut out = Edited::default();
    let texts: Vec<Option<&str>> = lines(old)
        .map(|l| std::str::from_utf8(split_eol(l).0).ok())
        .collect();
    // Every active assignment of a command-line variable, parsed; values with command
    // substitution or escapes are left alone.
    let mut present: Vec<String> = Vec::new();
    // The last assignment of `add_var` (the one the shell keeps) and whether it can be
    // edited.
    let mut last_add: Option<(usize, bool)> = None;
    let mut has_terminal = false;
    let mut has_serial_command = false;
    for (i, text) in texts.iter().enumerate() {
        let Some(a) = text.and_then(parse_assignment) else {
            continue;
        };
        if drop_vars.contains(&a.name) {
            let ok = editable(&a);
            if a.name == add_var {
                last_add = Some((i, ok));
            }
            if !ok {
                let w = format!(
                    "{} holds command substitutions or escapes; its kernel arguments were not checked for Xen consoles and disks",
                    a.name
                );
                if !out.warnings.contains(&w) {
                    out.warnings.push(w);
                }
            }
            present.extend(
                literal_words(a.value)
                    .filter(|w| !xen_word(w))
                    .map(str::to_string),
            );
        }
        has_terminal |= a.name == "GRUB_TERMINAL";
        has_serial_command |= a.name == "GRUB_SERIAL_COMMAND";
    }
    let missing = missing_args(&present, &wanted_args(ctx), &ctx.serial_console);
    let unit: String = ctx
        .serial_console
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let unit = if unit.is_empty() { "0".into() } else { unit };
    for (i, (line, text)) in lines(old).zip(&texts).enumerate() {
        let eol = split_eol(line).1;
        let Some(a) = text.and_then(parse_assignment) else {
            out.keep(line);
            continue;
        };
        if drop_vars.contains(&a.name) && editable(&a) {
            let mut words: Vec<String> = a.value.split_whitespace().map(str::to_string).collect();
            let dropped = drop_xen(&mut words);
            if !dropped.is_empty() {
                out.edits
                    .push(format!("removed {} from {}", dropped.join(" "), a.name));
            }
            let lvm = fix_lvm(&mut words, ctx);
            if !lvm.is_empty() {
                out.edits.push(format!("{} in {}", lvm.join(", "), a.name));
            }
            let add_here = last_add == Some((i, true)) && !missing.is_empty();
            if add_here {
                words.extend(missing.iter().cloned());
                out.edits
                    .push(format!("added {} to {}", missing.join(" "), a.name));
            }
            if dropped.is_empty() && lvm.is_empty() && !add_here {
                out.keep(line);
            } else {
                out.push(&render_assignment(&a, &words), eol);
            }
            continue;
        }
        if terminal && a.name == "GRUB_TERMINAL" {
            let words: Vec<&str> = a.value.split_whitespace().collect();
            if !words.contains(&"serial") && !a.value.contains(['$', '`', '\\']) {
                out.push(&format!("{}\"serial console\"{}", a.head, a.tail), eol);
                out.edits.push(format!(
                    "GRUB_TERMINAL={} → GRUB_TERMINAL=\"serial console\"",
                    a.value
                ));
                continue;
            }
        }
        out.keep(line);
    }
    let mut appended = String::new();
    match last_add {
        _ if missing.is_empty() => {}
        Some((_, true)) => {}
        Some((_, false)) => {
            // Extend the value the shell computed instead of replacing it.
            let line = format!("{add_var}=\"${{{add_var}}} {}\"", missing.join(" "));
            out.edits.push(format!("added {line}"));
            appended.push_str(&line);
            appended.push('\n');
        }
        None => {
            let line = format!("{add_var}=\"{}\"", missing.join(" "));
            out.edits.push(format!("added {line}"));
            appended.push_str(&line);
            appended.push('\n');
        }
    }
    if terminal && !has_terminal {
        appended.push_str("GRUB_TERMINAL=\"serial console\"\n");
        out.edits
            .push("added GRUB_TERMINAL=\"serial console\"".into());
    }
    if terminal && !has_serial_command {
        let cmd = format!("serial --unit={unit} --speed=115200");
        appended.push_str(&format!("GRUB_SERIAL_COMMAND=\"{cmd}\"\n"));
        out.edits
            .push(format!("added GRUB_SERIAL_COMMAND=\"{cmd}\""));
    }
    if !appended.is_empty() {
        super::edit::append_lines(
            &mut out.text,
            &format!("# imgconv: boot settings for the converted (KVM) disk\n{appended}"),
        );
    }
    out
}

/// Edit the arguments of every `linux`/`linux16`/`linuxefi` line of a GRUB 2 menu.
fn edit_grub_cfg(old: &[u8], ctx: &FixupContext) -> Edited {
    let mut out = Edited::default();
    let wanted = wanted_args(ctx);
    let mut entries = 0;
    let mut lvm_edits: Vec<String> = Vec::new();
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        let Ok(text) = std::str::from_utf8(bytes) else {
            out.keep(line);
            continue;
        };
        let trimmed = text.trim_start();
        let cmd = trimmed.split_whitespace().next().unwrap_or("");
        if !matches!(cmd, "linux" | "linux16" | "linuxefi") || trimmed.contains(['$', '`', '\\']) {
            out.keep(line);
            continue;
        }
        let mut words: Vec<String> = trimmed.split_whitespace().map(str::to_string).collect();
        if words.len() < 2 {
            out.keep(line);
            continue;
        }
        let mut args = words.split_off(2);
        let dropped = drop_xen(&mut args);
        let lvm = fix_lvm(&mut args, ctx);
        for e in lvm
            .iter()
            .filter(|e| !lvm_edits.contains(e))
            .cloned()
            .collect::<Vec<_>>()
        {
            lvm_edits.push(e);
        }
        let missing = missing_args(&args, &wanted, &ctx.serial_console);
        if dropped.is_empty() && lvm.is_empty() && missing.is_empty() {
            out.keep(line);
            continue;
        }
        args.extend(missing);
        words.extend(args);
        out.push(
            &format!("{}{}", &text[..text.len() - trimmed.len()], words.join(" ")),
            eol,
        );
        entries += 1;
    }
    if entries > 0 {
        out.edits.push(format!(
            "rewrote the kernel arguments of {entries} menu entr{} (Xen console and disk names dropped; serial console and net.ifnames=0 added)",
            if entries == 1 { "y" } else { "ies" }
        ));
    }
    if !lvm_edits.is_empty() {
        out.edits
            .push(format!("menu entries: {}", lvm_edits.join(", ")));
    }
    out
}

/// Edit `kernelopts=` of a GRUB environment block; `None` when the block is not one, or
/// the edited block would not fit in its 1024 bytes (a warning then says so).
fn edit_grubenv(old: &[u8], ctx: &FixupContext) -> Result<Edited, String> {
    if !grubenv::is_valid_block(old) {
        return Err("is not a 1024-byte GRUB environment block".into());
    }
    let mut out = Edited::default();
    let mut body = Vec::new();
    for line in old.split_inclusive(|&b| b == b'\n') {
        let Some(value) = line
            .strip_prefix(b"kernelopts=")
            .and_then(|v| v.strip_suffix(b"\n"))
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            if line.ends_with(b"\n") {
                body.extend_from_slice(line);
            }
            continue;
        };
        let mut args: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        let dropped = drop_xen(&mut args);
        let lvm = fix_lvm(&mut args, ctx);
        if !lvm.is_empty() {
            out.edits.push(format!("kernelopts: {}", lvm.join(", ")));
        }
        let missing = missing_args(&args, &wanted_args(ctx), &ctx.serial_console);
        if !dropped.is_empty() || !missing.is_empty() {
            out.edits.push(format!(
                "kernelopts: removed [{}], added [{}]",
                dropped.join(" "),
                missing.join(" ")
            ));
        }
        args.extend(missing);
        body.extend_from_slice(format!("kernelopts={}\n", args.join(" ")).as_bytes());
    }
    if out.edits.is_empty() {
        out.text = old.to_vec();
        return Ok(out);
    }
    if body.len() > grubenv::GRUBENV_SIZE {
        return Err("kernelopts would not fit in the 1024-byte block".into());
    }
    body.resize(grubenv::GRUBENV_SIZE, b'#');
    out.text = body;
    Ok(out)
}

/// The debconf question that holds grub-pc's install devices.
const INSTALL_DEVICES: &str = "grub-pc/install_devices";

/// Set `Value:` of the `grub-pc/install_devices` stanza of debconf's config.dat.
fn edit_debconf(old: &[u8], device: &str) -> Edited {
    let mut out = Edited::default();
    let mut in_stanza = false;
    let mut saw_value = false;
    for line in lines(old) {
        let (bytes, eol) = split_eol(line);
        let text = std::str::from_utf8(bytes).unwrap_or("");
        if text.trim().is_empty() {
            if in_stanza && !saw_value {
                out.push(&format!("Value: {device}"), b"\n");
                out.edits
                    .push(format!("{INSTALL_DEVICES}: (no value) → {device}"));
            }
            in_stanza = false;
            out.keep(line);
            continue;
        }
        if let Some(name) = text.strip_prefix("Name:") {
            in_stanza = name.trim() == INSTALL_DEVICES;
            saw_value = false;
        }
        if in_stanza {
            if let Some(value) = text.strip_prefix("Value:") {
                saw_value = true;
                if value.trim() != device {
                    out.push(&format!("Value: {device}"), eol);
                    out.edits.push(format!(
                        "{INSTALL_DEVICES}: {} → {device}",
                        if value.trim().is_empty() {
                            "(empty)"
                        } else {
                            value.trim()
                        }
                    ));
                    continue;
                }
            }
        }
        out.keep(line);
    }
    if in_stanza && !saw_value {
        super::edit::append_lines(&mut out.text, &format!("Value: {device}\n"));
        out.edits
            .push(format!("{INSTALL_DEVICES}: (no value) → {device}"));
    }
    out
}

/// Make the guest's own boot settings agree with the converted disk.
pub fn fix_bootloader(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let grub_vars = ["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"];
    // /etc/sysconfig/grub is a link to /etc/default/grub on RHEL 7: after the first
    // edit the second finds nothing left to do.
    for path in ["/etc/default/grub", "/etc/sysconfig/grub"] {
        edit_config(guest, report, STEP, path, WHY, |old| {
            edit_cmdline_vars(old, &grub_vars, "GRUB_CMDLINE_LINUX", ctx, true)
        })?;
    }
    edit_config(
        guest,
        report,
        STEP,
        "/etc/sysconfig/bootloader",
        WHY,
        |old| {
            edit_cmdline_vars(
                old,
                &["DEFAULT_APPEND", "FAILSAFE_APPEND"],
                "DEFAULT_APPEND",
                ctx,
                false,
            )
        },
    )?;
    edit_config(guest, report, STEP, "/boot/grub2/grub.cfg", WHY, |old| {
        edit_grub_cfg(old, ctx)
    })?;
    let env = "/boot/grub2/grubenv";
    if let Some(old) = read_config(guest, STEP, env)? {
        if old
            .split(|&b| b == b'\n')
            .any(|l| l.starts_with(b"kernelopts="))
        {
            match edit_grubenv(&old, ctx) {
                Ok(edited) => {
                    super::edit::apply_edit(guest, report, STEP, env, &old, edited, WHY)?;
                }
                Err(why) => report.warn(format!(
                    "{env} {why}; its kernelopts were not changed (run `grub2-editenv - set kernelopts=…` in the guest)"
                )),
            }
        }
    }
    fix_debconf(guest, ctx, report)
}

/// grub-pc's install device: a grub-pc upgrade in the guest runs grub-install on the
/// devices recorded here, and a Xen device (`/dev/xvda`) does not exist any more.
fn fix_debconf(
    guest: &mut dyn GuestFs,
    ctx: &FixupContext,
    report: &mut Report,
) -> Result<(), FixupError> {
    let path = "/var/cache/debconf/config.dat";
    if ctx.esp_uuid.is_some() {
        return Ok(());
    }
    let Some(old) = read_config(guest, STEP, path)? else {
        return Ok(());
    };
    let has_question = lines(&old).any(|l| {
        std::str::from_utf8(split_eol(l).0)
            .ok()
            .and_then(|t| t.strip_prefix("Name:"))
            .is_some_and(|n| n.trim() == INSTALL_DEVICES)
    });
    if !has_question {
        return Ok(());
    }
    // A virtio disk has no /dev/disk/by-id name unless the hypervisor gives it a
    // serial, and a SATA disk's depends on the serial the hypervisor invents: the
    // kernel name of the first disk on the bus is the one name known now (what
    // cloud-init's grub_dpkg falls back to as well).
    let device = format!("/dev/{}a", device_prefix(ctx.disk_bus));
    let edited = edit_debconf(&old, &device);
    rewrite(
        guest,
        report,
        STEP,
        path,
        &old,
        &edited.text,
        edited.edits.join("; "),
        format!(
            "a grub-pc upgrade in the guest runs grub-install on the recorded devices; the Xen disk is gone and the converted disk is {device} as the first disk on its bus (if it is not, run `dpkg-reconfigure grub-pc` in the guest)"
        ),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> FixupContext {
        let mut c = FixupContext::new("0b0e6c6e-1f47-4a39-a27d-7d3d5b1d7a41", "ext4", None);
        c.mtime = 0;
        c
    }

    fn s(e: &Edited) -> &str {
        std::str::from_utf8(&e.text).unwrap()
    }

    #[test]
    fn default_grub_from_xen_days() {
        let old = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet console=hvc0\"\nGRUB_CMDLINE_LINUX=\"root=/dev/xvda1 xencons=tty\"\nGRUB_TERMINAL=console\n";
        let e = edit_cmdline_vars(
            old.as_bytes(),
            &["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"],
            "GRUB_CMDLINE_LINUX",
            &ctx(),
            true,
        );
        assert_eq!(
            s(&e),
            "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\n\
             GRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\n\
             GRUB_TERMINAL=\"serial console\"\n\
             # imgconv: boot settings for the converted (KVM) disk\n\
             GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"
        );
        // A second pass changes nothing.
        let again = edit_cmdline_vars(
            &e.text,
            &["GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT"],
            "GRUB_CMDLINE_LINUX",
            &ctx(),
            true,
        );
        assert_eq!(again.text, e.text);
        assert!(again.edits.is_empty(), "{:?}", again.edits);
    }

    #[test]
    fn existing_serial_console_and_ifnames_are_kept() {
        let old =
            "GRUB_CMDLINE_LINUX='console=ttyS0,38400 net.ifnames=1'\n#GRUB_TERMINAL=console\n";
        let mut c = ctx();
        c.extra_kernel_args = vec!["vsyscall=emulate".into()];
        let e = edit_cmdline_vars(
            old.as_bytes(),
            &["GRUB_CMDLINE_LINUX"],
            "GRUB_CMDLINE_LINUX",
            &c,
            true,
        );
        assert_eq!(
            s(&e),
            "GRUB_CMDLINE_LINUX='console=ttyS0,38400 net.ifnames=1 biosdevname=0 vsyscall=emulate'\n#GRUB_TERMINAL=console\n\
             # imgconv: boot settings for the converted (KVM) disk\n\
             GRUB_TERMINAL=\"serial console\"\n\
             GRUB_SERIAL_COMMAND=\"serial --unit=0 --speed=115200\"\n"
        );
    }

    #[test]
    fn variables_are_kept_and_substitutions_left_alone() {
        let vars = ["GRUB_CMDLINE_LINUX"];
        let old = "GRUB_CMDLINE_LINUX=\"$EXTRA console=hvc0\"\nGRUB_TERMINAL=\"serial\"\nGRUB_SERIAL_COMMAND=\"serial\"\n";
        let e = edit_cmdline_vars(old.as_bytes(), &vars, vars[0], &ctx(), true);
        assert_eq!(
            s(&e),
            "GRUB_CMDLINE_LINUX=\"$EXTRA console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\nGRUB_TERMINAL=\"serial\"\nGRUB_SERIAL_COMMAND=\"serial\"\n"
        );
        assert!(e.warnings.is_empty());
        let old = "GRUB_CMDLINE_LINUX=\"`cat /etc/args` console=hvc0\"\n";
        let e = edit_cmdline_vars(old.as_bytes(), &vars, vars[0], &ctx(), false);
        assert_eq!(
            s(&e),
            "GRUB_CMDLINE_LINUX=\"`cat /etc/args` console=hvc0\"\n\
             # imgconv: boot settings for the converted (KVM) disk\n\
             GRUB_CMDLINE_LINUX=\"${GRUB_CMDLINE_LINUX} console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\n"
        );
        assert_eq!(e.warnings.len(), 1);
        let again = edit_cmdline_vars(&e.text, &vars, vars[0], &ctx(), false);
        assert_eq!(again.text, e.text);
        assert_eq!(again.warnings, e.warnings);
    }

    #[test]
    fn suse_sysconfig_bootloader() {
        let old = "LOADER_TYPE=\"grub2\"\nDEFAULT_APPEND=\"resume=/dev/xvda1 splash=silent console=xvc0\"\nFAILSAFE_APPEND=\"console=xvc0 ide=nodma\"\n";
        let e = edit_cmdline_vars(
            old.as_bytes(),
            &["DEFAULT_APPEND", "FAILSAFE_APPEND"],
            "DEFAULT_APPEND",
            &ctx(),
            false,
        );
        assert_eq!(
            s(&e),
            "LOADER_TYPE=\"grub2\"\n\
             DEFAULT_APPEND=\"splash=silent console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\"\n\
             FAILSAFE_APPEND=\"ide=nodma\"\n"
        );
    }

    fn lvm_ctx() -> FixupContext {
        let mut c = ctx();
        c.root_aliases = vec![
            "/dev/VolGroup00/LogVol00".into(),
            "/dev/mapper/VolGroup00-LogVol00".into(),
        ];
        c.volumes = Some(vec![crate::fixups::OutputVolume {
            xen_device: None,
            aliases: vec![
                "/dev/VolGroup00/LogVol01".into(),
                "/dev/mapper/VolGroup00-LogVol01".into(),
            ],
            uuid: Some("3b1c2d3e-4f50-4162-9374-8596a7b8c9da".into()),
            label: None,
            partition: 3,
            swap: true,
            boot: false,
        }]);
        c
    }

    #[test]
    fn flattened_lvm_names_become_uuids_and_activation_is_dropped() {
        let args = "root=/dev/mapper/VolGroup00-LogVol00 ro rd.lvm.lv=VolGroup00/LogVol00 rd_LVM_LV=VolGroup00/LogVol01 rd.lvm.lv=other/lv resume=/dev/VolGroup00/LogVol01 rhgb";
        let old = format!("menuentry 'CentOS' {{\n\tlinux16 /vmlinuz-3.10.0 {args}\n}}\n");
        let e = edit_grub_cfg(old.as_bytes(), &lvm_ctx());
        assert_eq!(
            s(&e),
            "menuentry 'CentOS' {\n\tlinux16 /vmlinuz-3.10.0 root=UUID=0b0e6c6e-1f47-4a39-a27d-7d3d5b1d7a41 ro rd.lvm.lv=other/lv resume=UUID=3b1c2d3e-4f50-4162-9374-8596a7b8c9da rhgb console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\n}\n"
        );
        assert!(
            e.edits
                .iter()
                .any(|x| x.contains("rd.lvm.lv=VolGroup00/LogVol00 dropped")),
            "{:?}",
            e.edits
        );
        let g = format!("GRUB_CMDLINE_LINUX=\"{args}\"\n");
        let e = edit_cmdline_vars(
            g.as_bytes(),
            &["GRUB_CMDLINE_LINUX"],
            "GRUB_CMDLINE_LINUX",
            &lvm_ctx(),
            false,
        );
        assert!(s(&e).starts_with("GRUB_CMDLINE_LINUX=\"root=UUID=0b0e6c6e-1f47-4a39-a27d-7d3d5b1d7a41 ro rd.lvm.lv=other/lv resume=UUID=3b1c2d3e-4f50-4162-9374-8596a7b8c9da rhgb"), "{}", s(&e));
        // Without a flattened group, LVM words stay.
        let e = edit_grub_cfg(old.as_bytes(), &ctx());
        assert!(
            s(&e).contains("root=/dev/mapper/VolGroup00-LogVol00 ro rd.lvm.lv=VolGroup00/LogVol00")
        );
    }

    #[test]
    fn rhel_grub2_cfg_entries() {
        let old = "menuentry 'CentOS' {\n\tlinux16 /vmlinuz-3.10.0 root=/dev/xvda1 ro console=hvc0 crashkernel=auto\n\tinitrd16 /initramfs-3.10.0.img\n}\n";
        let e = edit_grub_cfg(old.as_bytes(), &ctx());
        assert_eq!(
            s(&e),
            "menuentry 'CentOS' {\n\tlinux16 /vmlinuz-3.10.0 ro crashkernel=auto console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\n\tinitrd16 /initramfs-3.10.0.img\n}\n"
        );
        assert!(edit_grub_cfg(&e.text, &ctx()).edits.is_empty());
    }

    #[test]
    fn grubenv_kernelopts_keeps_the_block_size() {
        let mut old = grubenv::empty_block();
        old.truncate(grubenv::GRUBENV_SIGNATURE.len());
        old.extend_from_slice(b"saved_entry=x\nkernelopts=root=/dev/xvda1 ro console=hvc0\n");
        old.resize(grubenv::GRUBENV_SIZE, b'#');
        let e = edit_grubenv(&old, &ctx()).unwrap();
        assert_eq!(e.text.len(), 1024);
        assert!(e.text.starts_with(
            b"# GRUB Environment Block\nsaved_entry=x\nkernelopts=ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0\n#"
        ));
        let mut huge = grubenv::GRUBENV_SIGNATURE.to_vec();
        huge.extend_from_slice(b"kernelopts=");
        huge.resize(grubenv::GRUBENV_SIZE - 1, b'a');
        huge.push(b'\n');
        assert!(edit_grubenv(&huge, &ctx()).is_err());
    }

    #[test]
    fn debconf_install_devices() {
        let old = "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/xvda\nOwners: grub-pc\nFlags: seen\n\nName: grub-pc/timeout\nValue: 5\n";
        let e = edit_debconf(old.as_bytes(), "/dev/vda");
        assert_eq!(
            s(&e),
            "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nValue: /dev/vda\nOwners: grub-pc\nFlags: seen\n\nName: grub-pc/timeout\nValue: 5\n"
        );
        assert_eq!(e.edits, ["grub-pc/install_devices: /dev/xvda → /dev/vda"]);
        let none =
            "Name: grub-pc/install_devices\nTemplate: grub-pc/install_devices\nOwners: grub-pc\n";
        let e = edit_debconf(none.as_bytes(), "/dev/sda");
        assert!(s(&e).ends_with("Owners: grub-pc\nValue: /dev/sda\n"));
    }
}
