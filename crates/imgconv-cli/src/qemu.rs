//! `verify --boot`'s choices from the environment: `IMGCONV_QEMU` names another qemu
//! binary; `IMGCONV_ACCEL=kvm|tcg` forces the accelerator (otherwise KVM when it can run
//! a stock kernel, TCG when not). The boot test itself is the library's
//! ([`imgconv_core::qemu`]), run by [`imgconv_core::verify()`].

use imgconv_core::qemu::Accel;

/// The qemu binary to run.
pub fn qemu_binary() -> String {
    std::env::var("IMGCONV_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into())
}

/// The accelerator asked for.
pub fn accel() -> Accel {
    match std::env::var("IMGCONV_ACCEL").as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ => Accel::Auto,
    }
}
