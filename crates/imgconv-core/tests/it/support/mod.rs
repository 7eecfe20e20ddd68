//! Shared test helpers: [`shared`] (fixtures, outside tools, PRNG, skips; re-exported here)
//! and one module of fixture builders per area.

pub mod donor;
pub mod ext_fixture;
pub mod fixups;
pub mod qemu;
mod shared;
pub mod stream;
pub mod xva;

pub use shared::*;

use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{MemFs, TreeRead};
use std::fs;
use std::path::Path;

/// Copy a MemFs into a host directory (files and directories: what our writers make), for
/// `mkfs.ext4 -d`.
pub fn memfs_to_dir(fs: &mut MemFs, root: &Path) {
    for (path, kind) in fs.list() {
        let host = root.join(path.trim_start_matches('/'));
        match kind {
            NodeKind::Dir => fs::create_dir_all(&host).unwrap(),
            NodeKind::File => {
                fs::create_dir_all(host.parent().unwrap()).unwrap();
                fs::write(&host, fs.read_file(&path, 64 << 20).unwrap().unwrap()).unwrap();
            }
            other => panic!("unexpected {other:?} at {path}"),
        }
    }
}
