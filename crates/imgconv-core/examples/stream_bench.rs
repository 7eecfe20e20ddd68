//! Benchmark driver for the stream stage (scripts/bench-stream runs it under
//! `/usr/bin/time -v`): copy the used blocks of the ext filesystem image SRC into a new
//! sparse file OUT at byte OFFSET, fsync it, and print the stream statistics as JSON.
//!
//!     stream_bench SRC OUT [OFFSET]
//!
//! `IMGCONV_COPY_FILE_RANGE=always|never` forces or forbids `copy_file_range(2)`;
//! `IMGCONV_DIRECT_IO=never` writes through the page cache instead of with `O_DIRECT`.

use imgconv_core::blockio::Region;
use imgconv_core::stream::{copy_used_blocks_with, CopyMethod};
use imgconv_core::NoProgress;
use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: stream_bench SRC OUT [OFFSET]");
        std::process::exit(2);
    }
    let offset: u64 = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1 << 20);
    let src = Region::open(Path::new(&args[1]))?;
    let out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&args[2])?;
    out.set_len(offset + src.len())?;
    let t = Instant::now();
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let method =
        CopyMethod::from_switches(&env("IMGCONV_COPY_FILE_RANGE"), &env("IMGCONV_DIRECT_IO"));
    let stats = copy_used_blocks_with(&src, &out, offset, method, &mut NoProgress)?;
    let copy = t.elapsed();
    out.sync_all()?;
    let total = t.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "stats": stats,
            "copy_seconds": copy.as_secs_f64(),
            "with_fsync_seconds": total.as_secs_f64(),
        })
    );
    Ok(())
}
