//! imgconv-core: turn an exported Xen PV guest image into a raw disk image that boots
//! under KVM/QEMU (or any HVM hypervisor), offline, without root and without a VM.
//!
//! A conversion is a pipeline, one module per stage:
//!
//! `source` (inspect: what is this image?) → `layout` (plan: the target disk, a printable
//! value) → `stream` (used blocks into partition 1) → `graft` (donor kernel, initrd,
//! modules, GRUB files) → `fixups` (guest configuration) → `boot` (GRUB boot code,
//! grub.cfg) → [`verify()`] (the finished disk checked, by outside tools too, and
//! optionally booted under QEMU).
//!
//! The public API is what the crate root lists: [`convert()`] and its dry run [`plan()`],
//! [`inspect()`], [`ConvertOptions`] and the choices it carries, the plan and the result
//! ([`ConversionPlan`], [`Conversion`], [`Report`]), [`verify()`] and its
//! [`VerifyReport`], [`Progress`], and the errors
//! ([`Error`], [`ErrorKind`], [`Hint`]).
//!
//! The library never prints and never exits: every failure is a typed [`Error`], and
//! progress and cancellation go through the [`Progress`] trait.

#![deny(unsafe_code)]
#![warn(missing_docs)]

#[doc(hidden)]
pub mod blockcheck;
#[doc(hidden)]
pub mod blockdev;
#[doc(hidden)]
pub mod blockio;
#[doc(hidden)]
pub mod boot;
#[doc(hidden)]
pub mod bytes;
#[doc(hidden)]
pub mod compat;
pub mod convert;
#[doc(hidden)]
pub mod donor;
#[doc(hidden)]
pub mod e2fs_tools;
#[doc(hidden)]
pub mod error;
#[doc(hidden)]
pub mod ext;
#[doc(hidden)]
pub mod fixups;
#[doc(hidden)]
pub mod formats;
#[doc(hidden)]
pub mod graft;
#[doc(hidden)]
pub mod grub_files;
#[doc(hidden)]
pub mod guestfs;
#[doc(hidden)]
pub mod hardware;
#[doc(hidden)]
pub mod initrd;
#[doc(hidden)]
pub mod layout;
#[doc(hidden)]
pub mod libvirt;
#[doc(hidden)]
pub mod lvm;
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod partition;
#[doc(hidden)]
pub mod progress;
#[doc(hidden)]
pub mod qemu;
#[doc(hidden)]
pub mod report;
#[doc(hidden)]
pub mod serde_path;
#[doc(hidden)]
pub mod source;
#[doc(hidden)]
pub mod stream;
#[doc(hidden)]
pub mod swap;
#[doc(hidden)]
pub mod tool;
#[doc(hidden)]
pub mod tree;
pub mod verify;
#[doc(hidden)]
pub mod vm;
#[doc(hidden)]
pub mod window;
#[doc(hidden)]
pub mod xen_config;

// The API embedders rely on. The modules marked `#[doc(hidden)]` above are the pipeline's
// parts, public for the CLI, the integration tests, the benchmarks and the fuzz targets;
// they carry no stability promise.
pub use convert::{
    convert, plan, Conversion, ConversionPlan, ConvertOptions, CopyMethod, DiskBus, Firmware,
    GrubChoice, GrubOrigin, KernelChoice, KernelOrigin, Overlap, StageTime,
};
pub use error::{Error, ErrorKind, Hint, Result};
pub use progress::{NoProgress, Progress, Stage};
pub use report::{Change, Report};
pub use source::{inspect, Inspection};
pub use verify::{
    verify, BootCheck, Check, CheckName, CheckStatus, VerifyError, VerifyOptions, VerifyReport,
};
