//! The CLI's integration tests, one module per area, in one test binary. `common` holds
//! the CLI helpers (running the binary, building images); `support` is the core's shared
//! test helper module (fixtures, outside tools, PRNG, skips), loaded by path.

// Each area uses a different subset of the shared helpers.
#![allow(dead_code)]

mod common;
#[path = "../../../imgconv-core/tests/it/support/shared.rs"]
mod support;

mod cli;
mod convert;
mod hostile_maps;
mod input_integrity;
mod interrupt;
mod verify;
