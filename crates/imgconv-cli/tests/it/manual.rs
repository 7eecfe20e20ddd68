//! `--version`, `imgconv completions` and `imgconv manpage`, judged by outside tools:
//! e2fsck for the libext2fs version, bash for the completion script, man for the pages.

use crate::common;

use std::process::Command;

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_prints_the_libext2fs_that_e2fsck_reports() {
    let out = common::imgconv().arg("--version").output().unwrap();
    assert!(out.status.success());
    let line = stdout_of(&out);
    let e2fsck = Command::new("e2fsck").arg("-V").output().unwrap();
    let e2fsck = String::from_utf8_lossy(&e2fsck.stderr).into_owned();
    // "Using EXT2FS Library version 1.47.0, 5-Feb-2023"
    let lib = e2fsck
        .split("Library version ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("e2fsck -V: {e2fsck}"));
    assert_eq!(
        line.trim(),
        format!("imgconv {} (libext2fs {lib})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bash_loads_the_completion_script() {
    let script = format!(
        "source <('{}' completions bash) && complete -p imgconv",
        common::bin().display()
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout_of(&out).contains("imgconv"), "{}", stdout_of(&out));
    // The script completes subcommands and their options.
    let text = stdout_of(
        &common::imgconv()
            .args(["completions", "bash"])
            .output()
            .unwrap(),
    );
    for word in [
        "inspect",
        "convert",
        "batch",
        "verify",
        "--dry-run",
        "--firmware",
    ] {
        assert!(text.contains(word), "bash completion lacks {word}");
    }
}

#[test]
fn zsh_and_fish_scripts_name_every_subcommand() {
    for shell in ["zsh", "fish"] {
        let out = common::imgconv()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = stdout_of(&out);
        for word in ["inspect", "convert", "batch", "verify", "dry-run"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = common::imgconv()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_renders_every_generated_page() {
    let dir = tempfile::tempdir().unwrap();
    let mandir = dir.path().join("man1");
    let out = common::imgconv()
        .arg("manpage")
        .arg(&mandir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = std::fs::read_dir(&mandir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "imgconv-batch.1",
            "imgconv-completions.1",
            "imgconv-convert.1",
            "imgconv-inspect.1",
            "imgconv-manpage.1",
            "imgconv-report-merge.1",
            "imgconv-report.1",
            "imgconv-verify.1",
            "imgconv.1"
        ]
    );
    for (page, words) in [
        ("imgconv.1", &["imgconv", "convert", "Exit codes"][..]),
        (
            "imgconv-convert.1",
            &["--dry-run", "--donor", "--firmware"][..],
        ),
        ("imgconv-inspect.1", &["--json", "--verbose"][..]),
        ("imgconv-batch.1", &["--shard", "--skip-done"][..]),
        ("imgconv-report-merge.1", &["--output"][..]),
    ] {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(mandir.join(page))
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man (man-db) is installed: scripts/setup");
        let text = stdout_of(&out);
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l {page}: {warnings}");
        assert!(
            warnings.trim().is_empty(),
            "man -l {page} warns: {warnings}"
        );
        for w in words {
            // man justifies lines (runs of spaces) and may render hyphens as U+2010 or
            // U+2212: compare on plain ASCII with single spaces.
            let plain = text
                .replace(['\u{2010}', '\u{2212}'], "-")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(plain.contains(w), "{page} lacks {w}:\n{text}");
        }
    }
}
