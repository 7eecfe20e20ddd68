//! imgconv-core: turn an exported Xen PV guest image into a raw disk image that boots
//! under KVM/QEMU (or any HVM hypervisor), offline, without root and without a VM.
//!
//! A conversion is a pipeline, one module per stage:
//!
//! `source` (inspect: what is this image?) → `layout` (plan: the target disk, a printable
//! value) → `stream` (used blocks into partition 1) → `graft` (donor kernel, initrd,
//! modules, GRUB files) → `fixups` (guest configuration) → `boot` (GRUB boot code,
//! grub.cfg) → verification by outside tools (done by the caller).
//!
//! The library never prints and never exits: every failure is a typed [`Error`], and
//! progress and cancellation go through the [`Progress`] trait.

pub mod blockcheck;
pub mod blockio;
pub mod boot;
pub mod bytes;
pub mod compat;
pub mod convert;
pub mod donor;
pub mod e2fs_tools;
pub mod error;
pub mod ext;
pub mod extraw;
pub mod extread;
pub mod fixups;
pub mod graft;
pub mod guestfs;
pub mod hardware;
pub mod initrd;
pub mod layout;
pub mod output;
pub mod partition;
pub mod progress;
pub mod readcache;
pub mod report;
pub mod source;
pub mod stream;
pub mod swap;

pub use error::{Error, Result};
pub use progress::{NoProgress, Progress, Stage};
