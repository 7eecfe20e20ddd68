//! Batch across machines: `--shard K/N` splits the sorted sources into disjoint shares,
//! `report merge` joins the shards' reports into what one batch over every source
//! reports (apart from timings and the disk signature, which is fresh for every disk),
//! `--skip-done` resumes; the Kubernetes and Slurm examples in docs/ parse and agree with
//! the rules in docs/cluster.md.

use crate::common;
use crate::support;

use common::imgconv;
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&fs::read(p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `v` without what differs from run to run: timings and the MBR disk signature.
fn without_timings(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "seconds" | "timings" | "disk_signature"))
                .map(|(k, x)| (k.clone(), without_timings(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_timings).collect()),
        other => other.clone(),
    }
}

fn sources_of(report: &Value) -> Vec<String> {
    report["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap().to_string())
        .collect()
}

fn batch(
    src: &Path,
    out: &Path,
    donor: &Path,
    extra: &[&str],
    json: &Path,
) -> std::process::Output {
    imgconv()
        // A fixed -j: each shard's report and the single batch's name the same.
        .args(["batch", "--quiet", "--swap", "0", "-j", "2", "--dir"])
        .arg(src)
        .arg("--donor")
        .arg(donor)
        .arg("--out-dir")
        .arg(out)
        .args(extra)
        .arg("--json")
        .arg(json)
        .output()
        .unwrap()
}

#[test]
fn two_shards_merge_into_the_report_of_one_batch_and_skip_done_resumes() {
    let fx = support::synthetic();
    let donor = fx.join("donor-dir");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = d.join("exports");
    fs::create_dir(&src).unwrap();
    for (from, to) in [
        ("xen-ext2.img", "web1.img"),
        ("xen-ext3.img", "web2.img"),
        ("xen-ext4.img", "db1.img"),
        ("xen-ext4-mbr.img", "db2.img"),
        ("xen-ext4-gpt.img", "mail.img"),
        ("xen-ext4.img", "cache.img"),
    ] {
        common::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(fx.join(from))
                .arg(src.join(to)),
        );
    }
    let out = d.join("kvm");

    // One batch over all six.
    let single = d.join("single.json");
    let run = batch(&src, &out, &donor, &[], &single);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    fs::rename(&out, d.join("kvm-single")).unwrap();

    // Two shards into the same output directory, as two machines would.
    let s0 = d.join("shard-0.json");
    let s1 = d.join("shard-1.json");
    for (k, json) in [("0/2", &s0), ("1/2", &s1)] {
        let run = batch(&src, &out, &donor, &["--shard", k, "--skip-done"], json);
        assert!(
            run.status.success(),
            "shard {k}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let (a, b) = (sources_of(&read_json(&s0)), sources_of(&read_json(&s1)));
    assert_eq!((a.len(), b.len()), (3, 3), "{a:?} {b:?}");
    assert!(a.iter().all(|s| !b.contains(s)), "disjoint: {a:?} {b:?}");
    let mut union: Vec<String> = a.iter().chain(&b).cloned().collect();
    union.sort();
    assert_eq!(union, sources_of(&read_json(&single)));
    // Sorted by path, every second one: shard 0 has the 1st, 3rd and 5th.
    assert_eq!(a, [union[0].clone(), union[2].clone(), union[4].clone()]);

    let all = d.join("all.json");
    let merged = imgconv()
        .args(["report", "merge"])
        .arg(&s1)
        .arg(&s0)
        .arg("-o")
        .arg(&all)
        .output()
        .unwrap();
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert_eq!(
        without_timings(&read_json(&all)),
        without_timings(&read_json(&single))
    );
    for name in ["web1", "db2", "mail"] {
        assert!(out.join(format!("{name}.raw")).is_file());
        assert!(
            out.join(format!("{name}.report.json")).is_file(),
            "--skip-done keeps a report per output"
        );
    }

    // A shard's report twice is not a merge of disjoint shards.
    let twice = imgconv()
        .args(["report", "merge"])
        .arg(&s0)
        .arg(&s0)
        .arg("-o")
        .arg(d.join("twice.json"))
        .output()
        .unwrap();
    assert_eq!(twice.status.code(), Some(2));
    assert!(!d.join("twice.json").exists());

    // Re-running shard 0 converts nothing; a changed source is converted again.
    let before: Vec<_> = a
        .iter()
        .map(|s| {
            let o = out
                .join(Path::new(s).file_stem().unwrap())
                .with_extension("raw");
            fs::metadata(&o).unwrap().modified().unwrap()
        })
        .collect();
    let again = d.join("again.json");
    let run = batch(
        &src,
        &out,
        &donor,
        &["--shard", "0/2", "--skip-done"],
        &again,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let j = read_json(&again);
    let results: Vec<&str> = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["already-done"; 3]);
    for (s, t) in a.iter().zip(&before) {
        let o = out
            .join(Path::new(s).file_stem().unwrap())
            .with_extension("raw");
        assert_eq!(
            fs::metadata(&o).unwrap().modified().unwrap(),
            *t,
            "{s} untouched"
        );
    }
    let touched = Path::new(&a[1]);
    let f = fs::OpenOptions::new().append(true).open(touched).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
        .unwrap();
    drop(f);
    let run = batch(
        &src,
        &out,
        &donor,
        &["--shard", "0/2", "--skip-done", "--force"],
        &again,
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let j = read_json(&again);
    let results: Vec<&str> = j["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["result"].as_str().unwrap())
        .collect();
    assert_eq!(results, ["already-done", "ok", "already-done"]);
}

#[test]
fn kubernetes_example_is_an_indexed_job_whose_shards_cover_every_index() {
    let path = support::repo_root().join("docs/examples/imgconv-batch-job.yaml");
    let out = Command::new("python3")
        .args(["-c", "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))"])
        .arg(&path)
        .output()
        .expect("python3 with yaml (python3-yaml, scripts/setup)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let job = &docs[0];
    assert_eq!(job["apiVersion"], "batch/v1");
    assert_eq!(job["kind"], "Job");
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"], "Indexed");
    let n = spec["completions"].as_u64().unwrap();
    assert_eq!(spec["parallelism"].as_u64(), Some(n));
    let c = &spec["template"]["spec"]["containers"][0];
    assert_eq!(c["command"][0], "imgconv");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "batch");
    let at = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(
        at("--shard"),
        Some(format!("$(JOB_COMPLETION_INDEX)/{n}").as_str())
    );
    assert!(args.contains(&"--skip-done"));
    assert!(
        at("--json").unwrap().contains("$(JOB_COMPLETION_INDEX)"),
        "one report per shard"
    );
    // The arguments parse as an imgconv command line (with the index filled in).
    for k in 0..n {
        let line: Vec<String> = args
            .iter()
            .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", &k.to_string()))
            .collect();
        let out = imgconv().args(&line).arg("--help").output().unwrap();
        assert!(
            out.status.success(),
            "{line:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Every volume mounted is declared.
    let volumes: Vec<&str> = spec["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for m in c["volumeMounts"].as_array().unwrap() {
        assert!(volumes.contains(&m["name"].as_str().unwrap()), "{m}");
    }
}

#[test]
fn slurm_example_array_matches_its_shard_count() {
    let path = support::repo_root().join("docs/examples/imgconv-batch.sbatch");
    common::run(Command::new("bash").arg("-n").arg(&path));
    let text = fs::read_to_string(&path).unwrap();
    let array = text
        .lines()
        .find_map(|l| l.strip_prefix("#SBATCH --array="))
        .expect("an --array line");
    let (first, last) = array.split_once('-').unwrap();
    let shards: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("shards="))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first, "0", "shards are numbered from 0");
    assert_eq!(last.parse::<u64>().unwrap(), shards - 1);
    assert!(text.contains(r#"--shard "${SLURM_ARRAY_TASK_ID}/${shards}""#));
    // Run it with a stand-in imgconv that records its arguments: the command line it
    // builds parses.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("imgconv");
    fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$ARGS_FILE\"\n").unwrap();
    common::run(Command::new("chmod").arg("+x").arg(&fake));
    let args_file = dir.path().join("args");
    common::run(
        Command::new("bash")
            .arg(&path)
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .env("SLURM_ARRAY_TASK_ID", "3")
            .env("ARGS_FILE", &args_file),
    );
    let args: Vec<String> = fs::read_to_string(&args_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let i = args.iter().position(|a| a == "--shard").unwrap();
    assert_eq!(args[i + 1], format!("3/{shards}"));
    let out = imgconv().args(&args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}");
}
