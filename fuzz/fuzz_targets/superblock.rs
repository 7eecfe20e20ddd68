//! cargo-fuzz target: see ../harness.rs (`harness::superblock`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::superblock(data));
