//! `imgconv inspect SRC [--verbose] [--json]`: what the source image is. People get the
//! library's summary first (verdict, each partition and what the conversion does with it,
//! the guest, the Xen-specific settings and their fixes), the full field list with
//! `--verbose`; scripts get the whole inspection as versioned JSON.

use crate::cli::InspectArgs;
use crate::errors::{self, Class, CliError, Paths};
use crate::outline::outline;
use crate::schema;
use crate::size::human;
use crate::stdout::emit;
use imgconv_core::source::summary::{summarize, Summary, Verdict};
use imgconv_core::source::Inspection;
use std::fmt::Write;
use std::path::Path;

/// `imgconv inspect`.
pub fn run(a: &InspectArgs) -> Result<(), CliError> {
    let (source, guest) = match (&a.source, &a.xen_config) {
        (_, Some(cfg)) => {
            let paths = Paths {
                source: Some(cfg.clone()),
                ..Paths::default()
            };
            let core = |e: imgconv_core::Error| errors::from_core(&e, &paths);
            let config =
                imgconv_core::xen_config::XenConfig::from_file(cfg).map_err(|e| core(e.into()))?;
            let guest = config.guest(&Default::default()).map_err(core)?;
            (guest.main().path.clone(), Some(guest))
        }
        (Some(src), None) => (src.clone(), None),
        (None, None) => unreachable!("clap requires SOURCE or --xen-config"),
    };
    if let Err(e) = std::fs::metadata(&source) {
        return Err(CliError::new(
            Class::Input,
            format!("cannot read the source {}: {e}", source.display()),
            "give the path of an exported Xen guest image",
        ));
    }
    let paths = Paths {
        source: Some(source.clone()),
        ..Paths::default()
    };
    let inspected = match &guest {
        Some(g) => imgconv_core::source::inspect_xen_guest(g, &Default::default(), &a.disks),
        None => imgconv_core::source::inspect_guest(&source, &Default::default(), None, &a.disks),
    };
    if !a.json {
        let summary = summarize(&source, inspected.as_ref());
        emit(&render(
            &source,
            &summary,
            inspected.as_ref().ok(),
            guest.as_ref(),
        ))?;
    }
    let inspection =
        inspected.map_err(|e| errors::from_core(&imgconv_core::Error::from(e), &paths))?;
    let value = schema::stamp(
        schema::INSPECT,
        serde_json::to_value(&inspection).expect("the inspection serializes"),
    );
    if a.json {
        let mut text = serde_json::to_string_pretty(&value).expect("JSON value prints");
        text.push('\n');
        emit(&text)?;
    } else if a.verbose {
        let mut text = String::from("\nDetails:\n");
        for line in outline(&value).lines() {
            let _ = writeln!(text, "  {line}");
        }
        emit(&text)?;
    } else {
        emit("\nAll fields: imgconv inspect --verbose (for scripts: --json)\n")?;
    }
    Ok(())
}

/// The summary, for people.
fn render(
    path: &Path,
    s: &Summary,
    inspection: Option<&Inspection>,
    guest: Option<&imgconv_core::xen_config::XenGuest>,
) -> String {
    let name = path.display();
    let mut o = String::new();
    match &s.verdict {
        Verdict::Convertible => {
            let _ = writeln!(o, "{name}: convertible");
        }
        Verdict::ConvertibleWithChanges { changes } => {
            let _ = writeln!(o, "{name}: convertible with changes");
            for c in changes {
                let _ = writeln!(o, "  - {c}");
            }
        }
        Verdict::NotConvertible { why } => {
            let _ = writeln!(o, "{name}: not convertible");
            let _ = writeln!(o, "  - {why}");
        }
    }
    let size = inspection
        .map(|i| i.image_size)
        .or_else(|| std::fs::metadata(path).ok().map(|m| m.len()));
    let size = size.map(|b| format!(", {}", human(b))).unwrap_or_default();
    if let Some(g) = guest {
        let _ = writeln!(o);
        for line in g.lines() {
            let _ = writeln!(o, "{line}");
        }
    }
    let _ = writeln!(o, "\nSource: {}{size}", s.source);
    let width = s.parts.iter().map(|p| p.name.len()).max().unwrap_or(0);
    for p in &s.parts {
        let _ = writeln!(
            o,
            "  {:width$}  {:>9} at {:>9}  {}",
            p.name,
            human(p.len),
            human(p.start),
            p.holds
        );
        let _ = writeln!(o, "  {:width$}  -> {}", "", p.fate);
    }
    if let Some(i) = inspection {
        let g = &i.guest;
        let os =
            g.os.as_ref()
                .and_then(|os| {
                    os.pretty_name
                        .clone()
                        .or_else(|| os.name.clone())
                        .or_else(|| os.id.clone())
                })
                .unwrap_or_else(|| "unknown distribution".into());
        let arch = g
            .arch
            .map_or_else(|| "unknown architecture".into(), |a| a.to_string());
        let init = serde_json::to_value(g.init)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let host = g
            .hostname
            .as_deref()
            .map(|h| format!(", host name {h}"))
            .unwrap_or_default();
        let _ = writeln!(o, "\nGuest: {os}, {arch}, init {init}{host}");
        let _ = writeln!(
            o,
            "  root filesystem: {} in {}, {} used of {}, UUID {}",
            i.fs.kind,
            i.place(),
            human(i.fs.used_bytes),
            human(i.fs.size_bytes),
            i.fs.uuid
        );
        if g.kernels.is_empty() {
            let _ = writeln!(o, "  kernels: none");
        }
        for k in &g.kernels {
            let mut notes = Vec::new();
            if k.initrd.is_none() {
                notes.push("no initrd".to_string());
            }
            if !k.has_modules {
                notes.push("no modules".to_string());
            }
            if k.xen_only {
                notes.push("Xen only".to_string());
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            let _ = writeln!(o, "  kernel {}{notes}", k.version);
        }
    }
    if !s.xen.is_empty() {
        let _ = writeln!(o, "\nXen-specific settings and their fixes:");
        for g in &s.xen {
            let _ = writeln!(o, "  {} -> {}", g.what, g.fix);
            for f in &g.found {
                let _ = writeln!(o, "      {f}");
            }
        }
    }
    if !s.attention.is_empty() {
        let _ = writeln!(o, "\nNeeds attention:");
        for a in &s.attention {
            let _ = writeln!(o, "  - {a}");
        }
    }
    o
}
