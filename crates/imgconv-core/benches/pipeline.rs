//! Micro-benchmarks (Criterion; `cargo bench -p imgconv-core`), not tests:
//!
//! - `core_img/msdos_ext2`: building GRUB's i386-pc core.img (decompressor + LZMA kernel
//!   and modules) from the host's GRUB files (/usr/lib/grub/i386-pc, grub-pc-bin);
//! - `graft/memfs`: the graft of the real fixture donor's newest kernel (kernel, initrd,
//!   its whole /lib/modules tree, GRUB files) into an in-memory guest: the donor read cost;
//! - `graft/ext4`: the same graft into a fresh 2 GiB ext4 image through libext2fs,
//!   including the close that writes bitmaps and checksums (the image is made by mke2fs
//!   outside the measurement).
//!
//! The graft benchmarks need the real fixture (`scripts/fixtures real`, cached in
//! ~/.cache/imgconv-fixtures/real-*); without it they are skipped with a message, as is
//! the core.img benchmark without the host's GRUB files.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use imgconv_core::boot::{self, GrubPlatformFiles};
use imgconv_core::donor::Donor;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::graft::graft;
use imgconv_core::guestfs::MemFs;
use imgconv_core::progress::NoProgress;
use imgconv_core::report::Report;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The real fixture's donor image, if it has been built.
fn real_donor() -> Option<PathBuf> {
    let cache = std::env::var_os("IMGCONV_FIXTURES_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("imgconv-fixtures"))
        })
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/imgconv-fixtures"))
        })?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("real-"))
                && p.join(".complete").exists()
        })
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join("bookworm-donor.img"))
        .find(|d| d.is_file())
}

fn core_img(c: &mut Criterion) {
    let grub = match GrubPlatformFiles::host_i386_pc() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("core_img: skipped, no host GRUB i386-pc files: {e}");
            return;
        }
    };
    let prefix = boot::prefix_for_partition(false, 1);
    c.bench_function("core_img/msdos_ext2", |b| {
        b.iter(|| {
            let core = boot::build_core_image(&grub, &prefix, boot::MSDOS_EXT_MODULES)
                .expect("core.img builds");
            black_box(core);
        })
    });
}

fn grafts(c: &mut Criterion) {
    let Some(donor_path) = real_donor() else {
        eprintln!("graft: skipped, the real fixture is not built (scripts/fixtures real)");
        return;
    };
    let donor = Donor::open(&donor_path).expect("the real donor opens");
    let kernel = donor.select_kernel(None).expect("the donor has a kernel");
    let grub = donor.grub_files("i386-pc").expect("donor GRUB files");
    let mut group = c.benchmark_group("graft");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(30));
    group.bench_function("memfs", |b| {
        b.iter(|| {
            let mut guest = MemFs::new();
            let sum = graft(
                &donor,
                &kernel,
                &mut guest,
                grub.as_ref(),
                &mut Report::default(),
                &mut NoProgress,
            )
            .expect("graft into MemFs");
            black_box(sum);
        })
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let img = dir.path().join("guest.img");
    group.bench_function("ext4", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_file(&img);
                let ok = Command::new("mke2fs")
                    .args(["-q", "-F", "-t", "ext4"])
                    .arg(&img)
                    .arg("2G")
                    .status()
                    .expect("mke2fs runs")
                    .success();
                assert!(ok, "mke2fs failed");
            },
            |()| {
                let mut fs = ExtFs::open(&img, 0).expect("open the guest image");
                let sum = graft(
                    &donor,
                    &kernel,
                    &mut fs,
                    grub.as_ref(),
                    &mut Report::default(),
                    &mut NoProgress,
                )
                .expect("graft into ext4");
                fs.close().expect("close");
                black_box(sum);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, core_img, grafts);
criterion_main!(benches);
