//! ext2/3/4, one tree: the on-disk superblock ([`superblock`]), group descriptors
//! ([`group_desc`]) and checksums ([`csum`]) that both sides share; [`read`], our own
//! bounded reader (inode-level engine, path API and in-memory jbd2 replay); [`write`],
//! the libext2fs writer (its FFI is the crate's one `unsafe` module). See
//! docs/ext-engine.md.

pub mod csum;
pub mod group_desc;
pub mod read;
pub mod superblock;
pub mod write;
