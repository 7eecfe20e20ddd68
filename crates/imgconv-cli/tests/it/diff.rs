//! `imgconv convert --diff`: the dry run prints the same unified diffs as the real run
//! (the fresh swap UUID aside), coloured only on a terminal; and a stdout closed early
//! (`imgconv … | true`) is no error for any subcommand that prints.

use crate::common;
use crate::support;

use common::*;
use std::path::Path;
use std::process::Command;

fn fx(name: &str) -> std::path::PathBuf {
    support::synthetic().join(name)
}

/// The `diff --git` sections of a `convert --diff` stdout, the swap UUID of the JSON
/// report replaced by a placeholder.
fn diff_part(stdout: &str, json: &Path) -> String {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let uuid = report["swap_uuid"].as_str().expect("a swap partition");
    let start = stdout.find("diff --git ").expect("diffs printed");
    let end = stdout
        .find("dry run: nothing was written")
        .unwrap_or(stdout.len());
    stdout[start..end].replace(uuid, "SWAP-UUID")
}

#[test]
fn dry_run_diff_equals_the_real_runs_and_is_coloured_only_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let run = |dry: bool, json: &Path| {
        let mut c = imgconv();
        c.arg("convert")
            .arg(fx("xen-ext4.img"))
            .arg("--donor")
            .arg(fx("donor.img"))
            .arg("-o")
            .arg(&out)
            .arg("--diff")
            .arg("--json")
            .arg(json);
        if dry {
            c.arg("--dry-run");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let (plan_json, real_json) = (dir.path().join("plan.json"), dir.path().join("real.json"));
    let planned = run(true, &plan_json);
    assert!(!out.exists(), "a dry run writes nothing");
    let real = run(false, &real_json);
    let (p, r) = (
        diff_part(&planned, &plan_json),
        diff_part(&real, &real_json),
    );
    assert_eq!(p, r);
    for needle in [
        "--- a/etc/fstab\n+++ b/etc/fstab\n@@ ",
        "-/dev/xvda1 ",
        "copy from etc/fstab\ncopy to etc/fstab.imgconv-orig\n",
        "rename from etc/udev/rules.d/70-persistent-net.rules\n",
        "new file mode 120000\n--- /dev/null\n",
    ] {
        assert!(r.contains(needle), "{needle:?} not in\n{r}");
    }
    assert!(!real.contains('\x1b'), "no colours on a pipe");
    // The JSON report carries the same diffs.
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&real_json).unwrap()).unwrap();
    let diffs = report["report"]["diffs"].as_array().unwrap();
    assert_eq!(
        diffs.len(),
        r.matches("diff --git ").count(),
        "one JSON diff per printed file"
    );

    // On a terminal the removed and added lines are coloured.
    let cmdline = format!(
        "{} convert {} --donor {} -o {} --dry-run --diff",
        bin().display(),
        fx("xen-ext4.img").display(),
        fx("donor.img").display(),
        dir.path().join("tty.raw").display()
    );
    let tty = Command::new("script")
        .args(["-qfec", &cmdline, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .output()
        .expect("script (util-linux) is installed");
    let screen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        screen.contains("\x1b[31m-/dev/xvda1") && screen.contains("\x1b[32m+UUID="),
        "{screen:?}"
    );
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.raw");
    let commands = [
        format!(
            "{} convert {} --donor {} -o {} --dry-run --diff",
            bin().display(),
            fx("xen-ext4.img").display(),
            fx("donor.img").display(),
            out.display()
        ),
        format!("{} completions bash", bin().display()),
        format!(
            "{} inspect {}",
            bin().display(),
            fx("xen-ext4.img").display()
        ),
    ];
    for cmd in commands {
        // `true` exits at once: imgconv writes into a pipe nobody reads (EPIPE).
        let o = Command::new("bash")
            .args(["-c", &format!("{cmd} | true; exit ${{PIPESTATUS[0]}}")])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{cmd}: {:?}\n{err}", o.status);
        assert!(!err.contains("panicked"), "{cmd}: {err}");
    }
}
