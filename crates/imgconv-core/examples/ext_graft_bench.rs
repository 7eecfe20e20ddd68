//! Benchmark of the ext engine: graft a host directory tree (e.g. a kernel's
//! /lib/modules/VER) into an ext2/3/4 image with `ExtFs`, the way the graft stage does
//! (mkdir -p, stream each file, symlinks, modes, owners, times), then close.
//!
//!     cargo run --release --example ext_graft_bench -- IMAGE OFFSET SRC_DIR GUEST_DIR
//!
//! Prints the file count, bytes and the seconds spent in the graft and in close. Used by
//! scripts/bench-ext-graft; a measurement tool, not a test.
use imgconv_core::ext::write::ExtFs;
use imgconv_core::guestfs::{GuestFs, NodeAttrs};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

fn attrs(m: &std::fs::Metadata) -> NodeAttrs {
    NodeAttrs {
        mode: (m.mode() & 0o7777) as u16,
        uid: m.uid(),
        gid: m.gid(),
        mtime: m.mtime(),
    }
}

fn graft(fs: &mut ExtFs, src: &Path, dst: &str, stats: &mut (u64, u64, u64)) {
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().into_string().expect("UTF-8 names");
        let path = e.path();
        let guest = format!("{dst}/{name}");
        let m = std::fs::symlink_metadata(&path).unwrap();
        if m.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            fs.symlink(&guest, target.to_str().unwrap(), attrs(&m))
                .unwrap();
            stats.2 += 1;
        } else if m.is_dir() {
            fs.mkdir_p(&guest, attrs(&m)).unwrap();
            graft(fs, &path, &guest, stats);
        } else if m.is_file() {
            let mut f = std::fs::File::open(&path).unwrap();
            fs.create_file(&guest, &mut f, m.len(), attrs(&m)).unwrap();
            stats.0 += 1;
            stats.1 += m.len();
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: {} IMAGE OFFSET SRC_DIR GUEST_DIR", args[0]);
        std::process::exit(2);
    }
    let offset: u64 = args[2].parse().expect("offset");
    let t0 = Instant::now();
    let mut fs = ExtFs::open(Path::new(&args[1]), offset).expect("open");
    let src_meta = std::fs::metadata(&args[3]).unwrap();
    fs.mkdir_p(&args[4], attrs(&src_meta)).unwrap();
    let mut stats = (0, 0, 0);
    graft(&mut fs, Path::new(&args[3]), &args[4], &mut stats);
    let t1 = Instant::now();
    fs.close().expect("close");
    let t2 = Instant::now();
    println!(
        "grafted {} files ({} bytes) and {} symlinks: graft {:.2} s, close {:.2} s, total {:.2} s",
        stats.0,
        stats.1,
        stats.2,
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        (t2 - t0).as_secs_f64()
    );
}
