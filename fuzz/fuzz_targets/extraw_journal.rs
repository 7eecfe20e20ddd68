//! cargo-fuzz target: see ../harness.rs (`harness::extraw_journal`).
#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(init: harness::fuzz_init(), |data: &[u8]| harness::extraw_journal(data));
