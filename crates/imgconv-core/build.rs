//! Link the system's libext2fs and libcom_err (e2fsprogs), found through pkg-config.
//! The Rust bindings are generated once and committed (src/ext/ffi.rs), so no libclang
//! is needed at build time.
fn main() {
    for lib in ["ext2fs", "com_err"] {
        if let Err(e) = pkg_config::Config::new().atleast_version("1.42").probe(lib) {
            panic!(
                "imgconv-core needs the system library `{lib}` (Debian: libext2fs-dev, comerr-dev); \
                 run scripts/setup. pkg-config said: {e}"
            );
        }
    }
}
