//! Every JSON document the CLI writes names its version in a `schema` field and validates
//! against the JSON Schema of that name in docs/schema/ (checked by python3-jsonschema, an
//! outside validator). A document missing a required field is rejected, so the check bites.

use crate::common;
use crate::support;

use common::imgconv;
use std::path::{Path, PathBuf};
use std::process::Command;

fn schema_path(name: &str) -> PathBuf {
    support::repo_root().join(format!("docs/schema/{name}.schema.json"))
}

/// Validate `doc` against docs/schema/<name>.schema.json; Err(the validator's messages).
pub fn validate(doc: &Path, name: &str) -> Result<(), String> {
    let script = r#"
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
errors = list(jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))))
for e in errors:
    print("/".join(map(str, e.absolute_path)) + ": " + e.message[:300])
sys.exit(1 if errors else 0)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(schema_path(name))
        .arg(doc)
        .output()
        .expect("python3 with jsonschema (python3-jsonschema, scripts/setup)");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn check(doc: &Path, name: &str) {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut j: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        j["schema"],
        format!("imgconv-{name}-v1"),
        "{}",
        doc.display()
    );
    assert!(
        text.trim_start().starts_with("{\n  \"schema\""),
        "schema comes first"
    );
    validate(doc, name).unwrap_or_else(|e| panic!("{} against {name}: {e}", doc.display()));
    // The same document without a required field fails: the schema is not vacuous.
    let field = match name {
        "inspect" => "fs",
        "plan" => "disk",
        "conversion" => "report",
        _ => "images",
    };
    j.as_object_mut().unwrap().remove(field);
    let broken = doc.with_extension("broken.json");
    std::fs::write(&broken, serde_json::to_string(&j).unwrap()).unwrap();
    let err = validate(&broken, name).expect_err("a document without a required field is refused");
    assert!(err.contains(field), "{err}");
}

#[test]
fn every_json_document_validates_against_its_schema() {
    let fx = support::synthetic();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (img, name) in [
        ("xen-ext4.img", "bare"),
        ("xen-ext4-mbr.img", "mbr"),
        ("xen-ext4-gpt.img", "gpt"),
    ] {
        let out = imgconv()
            .arg("inspect")
            .arg(fx.join(img))
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success());
        let doc = d.join(format!("inspect-{name}.json"));
        std::fs::write(&doc, &out.stdout).unwrap();
        check(&doc, "inspect");
    }

    let plan = d.join("plan.json");
    let out = imgconv()
        .args(["convert", "--dry-run", "--quiet"])
        .arg(fx.join("xen-ext4-mbr.img"))
        .arg("--donor")
        .arg(fx.join("donor-dir"))
        .arg("-o")
        .arg(d.join("never.raw"))
        .arg("--json")
        .arg(&plan)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&plan, "plan");

    let conversion = d.join("conversion.json");
    let out = imgconv()
        .args(["convert", "--quiet", "--firmware", "uefi"])
        .arg(fx.join("xen-ext4.img"))
        .arg("--donor")
        .arg(fx.join("donor-dir"))
        .arg("-o")
        .arg(d.join("kvm.raw"))
        .arg("--json")
        .arg(&conversion)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&conversion, "conversion");

    let garbage = d.join("garbage.img");
    std::fs::write(&garbage, vec![0x5au8; 1 << 20]).unwrap();
    let batch = d.join("batch.json");
    let out = imgconv()
        .args(["batch", "--quiet", "--keep-going"])
        .arg(fx.join("xen-ext3.img"))
        .arg(&garbage)
        .arg("--donor")
        .arg(fx.join("donor-dir"))
        .arg("--out-dir")
        .arg(d.join("out"))
        .arg("--json")
        .arg(&batch)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check(&batch, "batch");
}
