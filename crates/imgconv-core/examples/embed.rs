//! Embedding imgconv: convert one Xen guest image from your own program.
//!
//!     cargo run -p imgconv-core --example embed -- xen.img donor.img kvm.img
use imgconv_core::convert::{convert, ConvertOptions};
use imgconv_core::{Progress, Stage};

/// Shows each stage as it starts; the library itself never prints.
struct Stages;
impl Progress for Stages {
    fn stage(&mut self, stage: Stage, _total: Option<u64>) {
        eprintln!("stage {stage}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let [src, donor, out] = <[String; 3]>::try_from(std::env::args().skip(1).collect::<Vec<_>>())
        .map_err(|_| "usage: embed SRC DONOR OUT")?;
    let options = ConvertOptions::new(src, Some(donor.into()), out);
    let done = convert(&options, &mut Stages)?;
    println!(
        "{}: root UUID {}, kernel {}",
        done.output.display(),
        done.root_uuid,
        done.plan.kernel.version
    );
    for change in &done.report.changes {
        println!("  {}: {} ({})", change.path, change.what, change.why);
    }
    Ok(())
}
