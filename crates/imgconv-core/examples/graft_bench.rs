//! Measure the donor reader and the graft on a real donor (see scripts/bench-graft).
//!
//!     cargo run --release -p imgconv-core --example graft_bench -- DONOR [KERNEL]
//!
//! Prints the time to open the donor (partition table, kernel scan, modules tree walk,
//! boot header) and to graft the selected kernel into an in-memory guest (every byte read
//! from the donor through the guarded reader and compared nowhere: a pure read cost).

use imgconv_core::donor::Donor;
use imgconv_core::graft::graft;
use imgconv_core::guestfs::MemFs;
use imgconv_core::progress::NoProgress;
use imgconv_core::report::Report;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let donor_path = PathBuf::from(args.next().ok_or("usage: graft_bench DONOR [KERNEL]")?);
    let version = args.next();

    let t = Instant::now();
    let donor = Donor::open(&donor_path)?;
    let open = t.elapsed();
    let kernel = donor.select_kernel(version.as_deref())?;
    let grub = donor.grub_files("i386-pc")?;
    println!(
        "donor {}: kernel {} ({}, {:?}), modules: {} files, {} dirs, {} symlinks, {} bytes; graft_size {} bytes",
        donor_path.display(),
        kernel.version,
        kernel.arch,
        kernel.embedded_version,
        kernel.modules.files,
        kernel.modules.dirs,
        kernel.modules.symlinks,
        kernel.modules.bytes,
        donor.graft_size(&kernel)
    );
    println!(
        "open (scan + tree walk + boot header): {:.3} s",
        open.as_secs_f64()
    );

    let mut guest = MemFs::new();
    let t = Instant::now();
    let sum = graft(
        &donor,
        &kernel,
        &mut guest,
        grub.as_ref(),
        &mut Report::default(),
        &mut NoProgress,
    )?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "graft into MemFs: {} files, {} dirs, {} symlinks, {} bytes in {secs:.3} s ({:.0} MB/s)",
        sum.files,
        sum.dirs,
        sum.symlinks,
        sum.bytes,
        sum.bytes as f64 / secs / 1e6
    );
    Ok(())
}
