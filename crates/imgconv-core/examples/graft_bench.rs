//! Measure the donor reader and the graft on a real donor (see scripts/bench-graft).
//!
//!     cargo run --release -p imgconv-core --example graft_bench -- DONOR [GUEST_IMG]
//!
//! Prints the time to open the donor (partition table, kernel scan, modules tree walk,
//! boot header), to graft the newest kernel into an in-memory guest (every byte read from
//! the donor through the guarded reader: the read cost), and, given GUEST_IMG (a bare ext2/3/4
//! image, modified!), to graft it into that image through libext2fs including the close that
//! writes bitmaps and checksums (the real graft cost).

use imgconv_core::donor::Donor;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::graft::graft;
use imgconv_core::guestfs::MemFs;
use imgconv_core::progress::NoProgress;
use imgconv_core::report::Report;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let donor_path = PathBuf::from(args.next().ok_or("usage: graft_bench DONOR [GUEST_IMG]")?);
    let guest_img = args.next().map(PathBuf::from);

    let t = Instant::now();
    let donor = Donor::open(&donor_path)?;
    let open = t.elapsed();
    let kernel = donor.select_kernel(None)?;
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
    drop(guest);

    if let Some(img) = guest_img {
        let t = Instant::now();
        let mut fs = ExtFs::open(&img, 0)?;
        let sum = graft(
            &donor,
            &kernel,
            &mut fs,
            grub.as_ref(),
            &mut Report::default(),
            &mut NoProgress,
        )?;
        let grafted = t.elapsed().as_secs_f64();
        fs.close()?;
        let total = t.elapsed().as_secs_f64();
        println!(
            "graft into {} (libext2fs): {} files, {} bytes: graft {grafted:.3} s, close {:.3} s, total {total:.3} s ({:.0} MB/s)",
            img.display(),
            sum.files,
            sum.bytes,
            total - grafted,
            sum.bytes as f64 / total / 1e6
        );
    }
    Ok(())
}
