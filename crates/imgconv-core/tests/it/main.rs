//! The integration tests of imgconv-core, one module per area, in one test binary so the
//! crate and its dependencies are linked once. `support` holds the shared helpers: the
//! one mkfs, debugfs and e2fsck wrapper, the PRNG, the fixture builders and the QEMU harness.

// Each area uses a different subset of the shared helpers.
#![allow(dead_code)]

mod support;

mod blockdev;
mod boot_core_image;
mod boot_disk;
mod convert_compat;
mod convert_lvm;
mod convert_synthetic;
mod convert_volumes;
mod convert_volumes_beside;
mod cow_device;
mod donor_corrupt;
mod donor_open;
mod donor_synthetic;
mod ext_engine;
mod ext_engine_edges;
mod ext_engine_large;
mod ext_engine_semantics;
mod extraw_parity;
mod fixtures_sanity;
mod fixups_diff;
mod fixups_distros;
mod fixups_dry_run;
mod fixups_ext;
mod fixups_fstab;
mod fixups_synthetic;
mod fixups_systemd;
mod fixups_sysvinit;
mod fixups_upstart;
mod formats_mutation;
mod graft_ext;
mod graft_memfs;
mod initrd_read;
mod inline_data;
mod inspect_errors;
mod inspect_guest;
mod journal_replay;
mod lvm_fixtures;
mod lvm_mutation;
mod mutation_fuzz_replay;
mod mutation_path_safety;
mod mutation_regressions;
mod mutation_suite;
mod overlap_equivalence;
mod progress_live;
mod stream_direct;
mod stream_grow;
mod stream_journal;
mod stream_layouts;
mod stream_roundtrip;
mod stream_synthetic;
mod uefi_convert;
mod uefi_disk;
mod update_grub_reboot;
mod xen_config_real;
mod xva_disks;
