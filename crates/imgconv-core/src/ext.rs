//! ext2/3/4, one tree: the on-disk superblock ([`superblock`]), group descriptors
//! ([`group_desc`]) and checksums ([`csum`]) that both sides share; [`read`], our own
//! reader (the inode-level engine, the path API [`read::ExtReader`] over it, and the
//! in-memory jbd2 replay); [`write`], the writer through libext2fs.
//!
//! One engine reads and another writes, each for what it does best:
//!
//! - **Reading is ours** because it runs on images nobody has checked yet (the source at
//!   inspection, donor images) and is on the graft's hot path. Every number read from
//!   disk is bounded before use, so a damaged image is an error, never a panic, an
//!   abort or an unbounded allocation (ext4-view, which it replaced, panicked on an
//!   htree node's unchecked `count` and aborted the process allocating a corrupt
//!   `i_size`). It lists a directory once and reads files by inode: the graft's donor
//!   reads went from 1.51 s with ext4-view to 159 ms (`cargo bench --bench pipeline --
//!   graft`). It also reads what ext4-view refused: journals needing recovery without
//!   v3 checksums (ext3's), inline data, meta_bg. ext4-view stays a dev-dependency only,
//!   for the parity tests (tests/it/extraw_parity.rs).
//! - **Writing is libext2fs's**, the library under `mke2fs -d`, `debugfs` and `e2fsck`:
//!   its own allocator and checksum code leave ext2, ext3 (block maps) and ext4
//!   (metadata_csum, 64bit, flex_bg, htree directories kept indexed) `e2fsck -fn` clean,
//!   which no other candidate did (lwext4 broke directory checksums; the pure-Rust
//!   crates only format new filesystems or write no block maps). It is C that trusts the
//!   image, so it only ever opens the output copy, and only after [`crate::blockcheck`]
//!   has walked, with the bounded reader, every block map it could follow. Its FFI
//!   (`write/ffi.rs`) is the crate's one `unsafe` module.
//!
//! docs/ext-engine.md describes both sides and their bounds.

pub mod csum;
pub mod group_desc;
pub mod read;
pub mod superblock;
pub mod write;
