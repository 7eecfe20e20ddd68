//! The CLI's integration tests, one module per area, in one test binary. `common` holds
//! the CLI helpers (running the binary, building images); `support` is the core's shared
//! test helper module (fixtures, outside tools, PRNG, skips), loaded by path.

// Each area uses a different subset of the shared helpers.
#![allow(dead_code)]

mod common;
#[path = "../../../imgconv-core/tests/it/support/shared.rs"]
mod support;
#[path = "../../../imgconv-core/tests/it/support/xva.rs"]
mod xva_writer;

mod batch_shard;
mod cli;
mod convert;
mod crashed_guest;
mod diff;
mod formats;
mod hostile_maps;
mod input_integrity;
mod inspect;
mod interrupt;
mod manual;
mod output_safety;
mod progress;
mod schema;
mod setup;
mod verify;
mod xen_config;
