//! Link the system's libext2fs and libcom_err (e2fsprogs), found through pkg-config.
//! The Rust bindings are generated once and committed (src/ext/write/bindings.rs), so no libclang
//! is needed at build time.
//!
//! The minimum is 1.47: the committed bindings and struct layouts are those of 1.47
//! (`struct_io_manager` with the callbacks 1.47 makes optional, `ext2_inode_large`), and
//! the engine relies on 1.47 behaviour, such as `ext2fs_link` keeping htree directories
//! indexed and `i_size_high` being valid for every inode type. An older library would
//! link and then corrupt directories, so it is refused here.
const MIN_E2FSPROGS: &str = "1.47";

fn main() {
    for lib in ["ext2fs", "com_err"] {
        if let Err(e) = pkg_config::Config::new()
            .atleast_version(MIN_E2FSPROGS)
            .probe(lib)
        {
            panic!(
                "imgconv-core needs the system library `{lib}` {MIN_E2FSPROGS} or newer \
                 (Debian 12: libext2fs-dev, comerr-dev); run scripts/setup. pkg-config said: {e}"
            );
        }
    }
}
