//! cargo-fuzz target: see ../harness.rs (`harness::boot_records`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(init: harness::fuzz_init(), |data: &[u8]| harness::boot_records(data));
