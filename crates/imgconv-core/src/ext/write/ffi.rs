//! The only module of imgconv with `unsafe`: a minimal, safe surface over the system's
//! libext2fs (e2fsprogs 1.47) and libcom_err.
//!
//! The raw declarations live in `bindings.rs`, generated once by `gen-bindings.sh` with
//! bindgen and committed (builds need no libclang); its layout tests run with the unit
//! tests and check that our view of `ext2_inode_large`, `ext2_super_block`,
//! `struct_ext2_filsys` and `ext2_dir_entry` matches the installed headers.
//!
//! Everything here is mechanical: each safe function makes exactly one library call (or a
//! fixed short sequence) and turns the C error code into `Err(Errcode)`. The policy (which
//! calls, in which order, what to do on `EXT2_ET_DIR_NO_SPACE`) lives in `ext/write/mod.rs`.
//!
//! Ownership model: [`Filesystem`] owns an `ext2_filsys` and frees it exactly once (close or
//! drop). [`File`] borrows the filesystem mutably for its whole life, so no other call can
//! run while a file handle is open, and it cannot outlive the filesystem. Neither type is
//! `Send` or `Sync` (they hold raw pointers): libext2fs handles are not thread-safe.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::marker::PhantomData;
use std::ptr::{self, NonNull};
use std::sync::{Mutex, Once};

#[allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
#[path = "bindings.rs"]
mod bindings;
use crate::blockio::BlockDevice;
use bindings as b;

/// A libext2fs / com_err error code (`errcode_t`).
pub(super) type Errcode = i64;

/// Error codes the wrapper reacts to.
pub(super) const ET_DIR_NO_SPACE: Errcode = b::EXT2_ET_DIR_NO_SPACE as Errcode;
pub(super) const ET_FILE_NOT_FOUND: Errcode = b::EXT2_ET_FILE_NOT_FOUND as Errcode;
pub(super) const ET_BLOCK_ALLOC_FAIL: Errcode = b::EXT2_ET_BLOCK_ALLOC_FAIL as Errcode;

/// Feature and flag bits (from ext2_fs.h).
pub(super) const INCOMPAT_RECOVER: u32 = b::EXT3_FEATURE_INCOMPAT_RECOVER;
pub(super) const INCOMPAT_EXTENTS: u32 = b::EXT3_FEATURE_INCOMPAT_EXTENTS;
pub(super) const RO_COMPAT_DIR_NLINK: u32 = b::EXT4_FEATURE_RO_COMPAT_DIR_NLINK;
pub(super) const INLINE_DATA_FL: u32 = b::EXT4_INLINE_DATA_FL;
pub(super) const EXTENTS_FL: u32 = b::EXT4_EXTENTS_FL;
pub(super) const ROOT_INO: u32 = b::EXT2_ROOT_INO;
pub(super) const LINK_MAX: u16 = b::EXT2_LINK_MAX as u16;
pub(super) const GOOD_OLD_INODE_SIZE: u16 = b::EXT2_GOOD_OLD_INODE_SIZE as u16;

/// Directory entry file types (`EXT2_FT_*`).
pub(super) const FT_REG_FILE: u8 = b::EXT2_FT_REG_FILE as u8;
pub(super) const FT_DIR: u8 = b::EXT2_FT_DIR as u8;
pub(super) const FT_CHRDEV: u8 = b::EXT2_FT_CHRDEV as u8;
pub(super) const FT_BLKDEV: u8 = b::EXT2_FT_BLKDEV as u8;
pub(super) const FT_FIFO: u8 = b::EXT2_FT_FIFO as u8;
pub(super) const FT_SOCK: u8 = b::EXT2_FT_SOCK as u8;
pub(super) const FT_SYMLINK: u8 = b::EXT2_FT_SYMLINK as u8;

/// Inode type bits (`LINUX_S_IF*`).
pub(super) const S_IFMT: u16 = b::LINUX_S_IFMT as u16;
pub(super) const S_IFSOCK: u16 = b::LINUX_S_IFSOCK as u16;
pub(super) const S_IFLNK: u16 = b::LINUX_S_IFLNK as u16;
pub(super) const S_IFREG: u16 = b::LINUX_S_IFREG as u16;
pub(super) const S_IFBLK: u16 = b::LINUX_S_IFBLK as u16;
pub(super) const S_IFDIR: u16 = b::LINUX_S_IFDIR as u16;
pub(super) const S_IFCHR: u16 = b::LINUX_S_IFCHR as u16;
pub(super) const S_IFIFO: u16 = b::LINUX_S_IFIFO as u16;

/// com_err keeps a process-wide list of error tables and formats unknown codes into a
/// static buffer, so registration happens once and lookups are serialised.
static ERROR_TABLE: Once = Once::new();
static ERROR_TEXT: Mutex<()> = Mutex::new(());

fn init_error_table() {
    ERROR_TABLE.call_once(|| {
        // SAFETY: registers libext2fs's static error table with com_err; takes no
        // arguments and is idempotent. `Once` keeps it from racing with itself.
        unsafe { b::initialize_ext2_error_table() };
    });
}

/// The human text of an error code: libext2fs's own message for its codes, strerror for
/// errno values, "Unknown code ..." otherwise.
pub(super) fn error_text(code: Errcode) -> String {
    init_error_table();
    let _guard = ERROR_TEXT.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: error_message accepts any code and returns a pointer to a NUL-terminated
    // string that is either static or in com_err's static buffer; the mutex keeps other
    // callers from overwriting that buffer until we have copied it.
    let text = unsafe { b::error_message(code as _) };
    if text.is_null() {
        return format!("error {code}");
    }
    // SAFETY: non-null, NUL-terminated (see above), copied before the guard is released.
    unsafe { CStr::from_ptr(text) }
        .to_string_lossy()
        .into_owned()
}

/// The version of the libext2fs the process runs with (`ext2fs_get_library_version`), e.g.
/// "1.47.0": the one loaded at run time, which may differ from the headers built against.
pub(super) fn library_version() -> String {
    let mut version: *const c_char = ptr::null();
    let mut date: *const c_char = ptr::null();
    // SAFETY: both are valid out-pointers; the library stores pointers to its own static,
    // NUL-terminated strings there (or leaves them untouched when it has none).
    unsafe { b::ext2fs_get_library_version(&mut version, &mut date) };
    if version.is_null() {
        return "unknown".to_string();
    }
    // SAFETY: non-null and NUL-terminated static storage of the library (see above).
    unsafe { CStr::from_ptr(version) }
        .to_string_lossy()
        .into_owned()
}

fn check(code: b::errcode_t) -> Result<(), Errcode> {
    if code == 0 {
        Ok(())
    } else {
        Err(code as Errcode)
    }
}

/// Facts from the superblock, copied out.
#[derive(Debug, Clone, Copy)]
pub(super) struct SuperInfo {
    pub uuid: [u8; 16],
    pub block_size: u32,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub feature_compat: u32,
    pub feature_incompat: u32,
    pub feature_ro_compat: u32,
    pub inode_size: u16,
    /// `s_state`: 1 = cleanly unmounted, 2 = errors recorded.
    pub state: u16,
}

/// An open libext2fs filesystem handle (`ext2_filsys`), read-write.
pub(super) struct Filesystem {
    fs: NonNull<b::struct_ext2_filsys>,
}

impl Filesystem {
    /// `ext2fs_open2(image, io_options, EXT2_FLAG_RW | EXT2_FLAG_64BITS, 0, 0,
    /// unix_io_manager)`. Nothing is written until [`Filesystem::close`].
    pub fn open_rw(image: &CStr, io_options: Option<&CStr>) -> Result<Self, Errcode> {
        init_error_table();
        let mut fs: b::ext2_filsys = ptr::null_mut();
        let flags = (b::EXT2_FLAG_RW | b::EXT2_FLAG_64BITS) as c_int;
        // SAFETY: `image` and `io_options` are NUL-terminated and outlive the call (the
        // library copies what it keeps); `unix_io_manager` is the library's own static
        // manager object, read by value (a pointer) and never written by us; `fs` is a
        // valid out-pointer. On failure the library frees its partial handle itself
        // (EXT2_FLAG_NOFREE_ON_ERROR is not passed).
        let rc = unsafe {
            b::ext2fs_open2(
                image.as_ptr(),
                io_options.map_or(ptr::null(), CStr::as_ptr),
                flags,
                0,
                0,
                b::unix_io_manager,
                &mut fs,
            )
        };
        check(rc)?;
        let fs = NonNull::new(fs).ok_or(NULL_HANDLE)?;
        Ok(Filesystem { fs })
    }

    /// Like [`Filesystem::open_rw`], on `device` through our I/O manager instead of a
    /// file. The device lives as long as the filesystem's channel (freed on close/drop).
    pub fn open_device(device: Box<dyn BlockDevice>) -> Result<Self, Errcode> {
        init_error_table();
        PENDING_DEVICE.with(|p| *p.borrow_mut() = Some(device));
        let mut fs: b::ext2_filsys = ptr::null_mut();
        let flags = (b::EXT2_FLAG_RW | b::EXT2_FLAG_64BITS) as c_int;
        // SAFETY: the name is a static NUL-terminated string; the manager table is a
        // static the library only reads; `fs` is a valid out-pointer. The library calls
        // `device_open` during this call, on this thread, which takes PENDING_DEVICE.
        let rc = unsafe {
            b::ext2fs_open2(
                c"imgconv-device".as_ptr(),
                ptr::null(),
                flags,
                0,
                0,
                ptr::addr_of!(DEVICE_MANAGER.0).cast_mut().cast(),
                &mut fs,
            )
        };
        // Not taken when the library failed before opening the channel.
        PENDING_DEVICE.with(|p| p.borrow_mut().take());
        check(rc)?;
        let fs = NonNull::new(fs).ok_or(NULL_HANDLE)?;
        Ok(Filesystem { fs })
    }

    fn raw(&self) -> b::ext2_filsys {
        self.fs.as_ptr()
    }

    /// `ext2fs_check_desc`: are the group descriptors sane (bitmaps and inode tables
    /// inside the filesystem and their groups, not overlapping)? e2fsck's first check;
    /// `ext2fs_open2` itself does not make it.
    pub fn check_desc(&self) -> Result<(), Errcode> {
        // SAFETY: `self.fs` is a live handle; the call only reads it (and allocates and
        // frees a scratch bitmap of its own).
        check(unsafe { b::ext2fs_check_desc(self.raw()) })
    }

    /// `ext2fs_read_bitmaps`: load the block and inode allocation bitmaps.
    pub fn read_bitmaps(&mut self) -> Result<(), Errcode> {
        // SAFETY: `self.fs` is a live handle owned by us (invariant of Filesystem).
        check(unsafe { b::ext2fs_read_bitmaps(self.raw()) })
    }

    /// Copy the interesting superblock fields.
    pub fn super_info(&self) -> SuperInfo {
        // SAFETY: a live handle always points at its in-memory superblock copy
        // (`fs->super`), which stays valid until the handle is freed; we only read it, and
        // `&self` keeps any mutating call from running meanwhile.
        let (sb, block_size) = unsafe { (&*(*self.raw()).super_, (*self.raw()).blocksize) };
        // SAFETY: both take the live superblock pointer and only read it.
        let (blocks_count, free_blocks) = unsafe {
            (
                b::ext2fs_blocks_count((*self.raw()).super_),
                b::ext2fs_free_blocks_count((*self.raw()).super_),
            )
        };
        SuperInfo {
            uuid: sb.s_uuid,
            block_size,
            blocks_count,
            free_blocks,
            feature_compat: sb.s_feature_compat,
            feature_incompat: sb.s_feature_incompat,
            feature_ro_compat: sb.s_feature_ro_compat,
            inode_size: if sb.s_rev_level == 0 {
                GOOD_OLD_INODE_SIZE
            } else {
                sb.s_inode_size
            },
            state: sb.s_state,
        }
    }

    /// `ext2fs_close_free`: write bitmaps, group descriptors and superblock (with
    /// checksums), flush, close the device and free the handle, even on error.
    pub fn close(self) -> Result<(), Errcode> {
        let mut raw = self.raw();
        std::mem::forget(self);
        // SAFETY: we own the handle and have just given up ownership (forget), so it is
        // freed exactly once; close_free frees it whether or not flushing succeeded and
        // sets `raw` to NULL.
        check(unsafe { b::ext2fs_close_free(&mut raw) })
    }

    /// `ext2fs_lookup` of one name in a directory; `Ok(None)` if absent.
    pub fn lookup(&self, dir: u32, name: &[u8]) -> Result<Option<u32>, Errcode> {
        let len = c_int::try_from(name.len()).map_err(|_| Errcode::from(libc::ENAMETOOLONG))?;
        let mut ino: b::ext2_ino_t = 0;
        // SAFETY: the name is passed with its length (no NUL needed) and only read; the
        // NULL block buffer makes the library allocate its own; `ino` is a valid out-pointer.
        let rc = unsafe {
            b::ext2fs_lookup(
                self.raw(),
                dir,
                name.as_ptr().cast::<c_char>(),
                len,
                ptr::null_mut(),
                &mut ino,
            )
        };
        match rc as Errcode {
            0 => Ok(Some(ino)),
            ET_FILE_NOT_FOUND => Ok(None),
            e => Err(e),
        }
    }

    /// `ext2fs_read_inode_full` into a large inode (the tail beyond the on-disk inode size
    /// stays zero).
    pub fn read_inode(&self, ino: u32) -> Result<Inode, Errcode> {
        let mut inode = Inode::zeroed();
        // SAFETY: the buffer is a whole ext2_inode_large and `bufsize` says so; the library
        // copies at most that many bytes.
        check(unsafe {
            b::ext2fs_read_inode_full(self.raw(), ino, inode.as_mut_ptr(), Inode::SIZE)
        })?;
        Ok(inode)
    }

    /// `ext2fs_write_inode_full` (checksum computed by the library).
    pub fn write_inode(&mut self, ino: u32, inode: &Inode) -> Result<(), Errcode> {
        let mut copy = *inode;
        // SAFETY: as read_inode; the library reads `bufsize` bytes from the buffer and
        // merges them with the rest of the on-disk inode when it is larger.
        check(unsafe {
            b::ext2fs_write_inode_full(self.raw(), ino, copy.as_mut_ptr(), Inode::SIZE)
        })
    }

    /// `ext2fs_write_new_inode`: first write of a freshly allocated inode (sets
    /// `i_extra_isize`, zero times become "now").
    pub fn write_new_inode(&mut self, ino: u32, inode: &mut Inode) -> Result<(), Errcode> {
        // SAFETY: the library reads the classic 128-byte prefix of our large inode, whose
        // layout is the same (checked by the bindgen layout tests), and may update it.
        check(unsafe { b::ext2fs_write_new_inode(self.raw(), ino, inode.as_mut_ptr()) })
    }

    /// `ext2fs_new_inode`: pick a free inode near `dir` (not yet marked in use).
    pub fn new_inode(&mut self, dir: u32, mode: u16) -> Result<u32, Errcode> {
        let mut ino: b::ext2_ino_t = 0;
        // SAFETY: NULL map means "the filesystem's inode bitmap"; `ino` is an out-pointer.
        check(unsafe {
            b::ext2fs_new_inode(
                self.raw(),
                dir,
                c_int::from(mode),
                ptr::null_mut(),
                &mut ino,
            )
        })?;
        Ok(ino)
    }

    /// `ext2fs_inode_alloc_stats2`: mark an inode used (+1) or free (-1) and update the
    /// group and superblock counters.
    pub fn inode_alloc_stats(&mut self, ino: u32, inuse: i32, is_dir: bool) {
        // SAFETY: plain values on a live handle; the library ignores out-of-range inodes
        // (it reports them through com_err's hook, which only prints).
        unsafe { b::ext2fs_inode_alloc_stats2(self.raw(), ino, inuse, c_int::from(is_dir)) }
    }

    /// `ext2fs_link`: add a directory entry (maintains htree indexes in 1.47). Returns
    /// `EXT2_ET_DIR_NO_SPACE` when a linear directory has no room.
    pub fn link(&mut self, dir: u32, name: &CStr, ino: u32, file_type: u8) -> Result<(), Errcode> {
        // SAFETY: `name` is NUL-terminated and only read during the call.
        check(unsafe {
            b::ext2fs_link(self.raw(), dir, name.as_ptr(), ino, c_int::from(file_type))
        })
    }

    /// `ext2fs_unlink` of the entry `name` that points at `ino`.
    pub fn unlink(&mut self, dir: u32, name: &CStr, ino: u32) -> Result<(), Errcode> {
        // SAFETY: as link.
        check(unsafe { b::ext2fs_unlink(self.raw(), dir, name.as_ptr(), ino, 0) })
    }

    /// `ext2fs_expand_dir`: add one block to a directory.
    pub fn expand_dir(&mut self, dir: u32) -> Result<(), Errcode> {
        // SAFETY: plain values on a live handle.
        check(unsafe { b::ext2fs_expand_dir(self.raw(), dir) })
    }

    /// `ext2fs_mkdir(fs, parent, ino, name)`: initialise and link a directory as inode
    /// `ino` (from [`Filesystem::new_inode`], not yet marked in use: the library marks it,
    /// and unmarks it again if linking fails).
    pub fn mkdir(&mut self, parent: u32, ino: u32, name: &CStr) -> Result<(), Errcode> {
        // SAFETY: `name` is NUL-terminated and only read during the call.
        check(unsafe { b::ext2fs_mkdir(self.raw(), parent, ino, name.as_ptr()) })
    }

    /// `ext2fs_symlink(fs, parent, ino, name, target)`: fast, inline or slow symlink as
    /// inode `ino` (marked in use by the library, as for [`Filesystem::mkdir`]).
    pub fn symlink(
        &mut self,
        parent: u32,
        ino: u32,
        name: &CStr,
        target: &CStr,
    ) -> Result<(), Errcode> {
        // SAFETY: both strings are NUL-terminated and only read during the call.
        check(unsafe { b::ext2fs_symlink(self.raw(), parent, ino, name.as_ptr(), target.as_ptr()) })
    }

    /// `ext2fs_extent_open2` + `ext2fs_extent_free` on an empty in-memory inode: writes an
    /// empty extent header into `i_block` and sets `EXT4_EXTENTS_FL`.
    pub fn init_extent_header(&mut self, ino: u32, inode: &mut Inode) -> Result<(), Errcode> {
        let mut handle: b::ext2_extent_handle_t = ptr::null_mut();
        // SAFETY: the library initialises the header in the inode we pass (128-byte prefix
        // of our large inode) and returns a handle we free right away.
        check(unsafe { b::ext2fs_extent_open2(self.raw(), ino, inode.as_mut_ptr(), &mut handle) })?;
        // SAFETY: `handle` came from a successful extent_open2 and is freed once.
        unsafe { b::ext2fs_extent_free(handle) };
        Ok(())
    }

    /// `ext2fs_inode_has_valid_blocks2`: does `i_block` hold block pointers (as opposed to
    /// a fast symlink's text or inline data)?
    pub fn inode_has_valid_blocks(&self, inode: &Inode) -> bool {
        let mut copy = *inode;
        // SAFETY: reads the 128-byte prefix of our inode copy.
        unsafe { b::ext2fs_inode_has_valid_blocks2(self.raw(), copy.as_mut_ptr()) != 0 }
    }

    /// Free every block the inode's `i_block` maps (data blocks and indirect/extent tree
    /// blocks), as debugfs's `kill_file` does: `ext2fs_block_iterate3` (read-only) lists
    /// them, `ext2fs_block_alloc_stats2(-1)` frees them (once per cluster on bigalloc).
    /// The inode itself is left as it is on disk.
    ///
    /// Not `ext2fs_punch`: in e2fsprogs 1.47.0-1.47.3 it refuses ("Illegal block number")
    /// any extent that ends at the last block of the filesystem, after having freed the
    /// extents before it.
    pub fn release_blocks(&mut self, ino: u32) -> Result<(), Errcode> {
        let mut blocks: Vec<u64> = Vec::new();
        // SAFETY: the callback receives `&mut blocks` back as `priv_data`; the vector
        // outlives the call and is only touched by the callback during it. NULL block
        // buffer: the library allocates its own. READ_ONLY: the callback changes nothing.
        check(unsafe {
            b::ext2fs_block_iterate3(
                self.raw(),
                ino,
                b::BLOCK_FLAG_READ_ONLY as c_int,
                ptr::null_mut(),
                Some(collect_block_trampoline),
                (&mut blocks as *mut Vec<u64>).cast::<c_void>(),
            )
        })?;
        // SAFETY: reading a plain field of the live handle.
        let cluster_bits = unsafe { (*self.raw()).cluster_ratio_bits } as u32;
        let mut last_cluster = None;
        for blk in blocks {
            let cluster = blk >> cluster_bits;
            if last_cluster == Some(cluster) {
                continue;
            }
            last_cluster = Some(cluster);
            // SAFETY: plain values on a live handle; the block came from the inode's own
            // map, and the library ignores (and reports) out-of-range numbers.
            unsafe { b::ext2fs_block_alloc_stats2(self.raw(), blk, -1) };
        }
        Ok(())
    }

    /// `ext2fs_fallocate(fs, EXT2_FALLOCATE_FORCE_INIT, ino, inode, ~0, start, len)`: map
    /// logical blocks `[start, start + len)` of the inode to newly allocated, initialised
    /// blocks (extent files: as few extents as free space allows, near the inode's goal;
    /// block maps: block by block). The blocks are marked used and counted in `i_blocks`;
    /// their content is NOT written (write it with [`Filesystem::write_blocks`]). `inode`
    /// is updated in memory and may also have been written to disk by the extent code;
    /// the caller writes its final state.
    pub fn allocate_range(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        start: u64,
        len: u64,
    ) -> Result<(), Errcode> {
        // SAFETY: plain values on a live handle; the library reads and updates the
        // 128-byte prefix of our large inode (same layout, checked by the bindgen tests)
        // and keeps no pointer to it after the call.
        check(unsafe {
            b::ext2fs_fallocate(
                self.raw(),
                b::EXT2_FALLOCATE_FORCE_INIT as c_int,
                ino,
                inode.as_mut_ptr(),
                !0,
                start,
                len,
            )
        })
    }

    /// `ext2fs_bmap2` without allocation: the physical block of logical block `lblk` of
    /// the inode (0 for a hole).
    pub fn map_block(&mut self, ino: u32, inode: &mut Inode, lblk: u64) -> Result<u64, Errcode> {
        let mut phys: b::blk64_t = 0;
        // SAFETY: flags 0 (no allocation), so the library only reads the inode's map
        // (through our in-memory inode and its own block buffer: NULL asks it to
        // allocate one); `phys` is a valid out-pointer, and NULL ret_flags is allowed.
        check(unsafe {
            b::ext2fs_bmap2(
                self.raw(),
                ino,
                inode.as_mut_ptr(),
                ptr::null_mut(),
                0,
                lblk,
                ptr::null_mut(),
                &mut phys,
            )
        })?;
        Ok(phys)
    }

    /// `io_channel_write_blk64(fs->io, block, n, data)`: write `data` (a whole number of
    /// blocks) at filesystem block `block` through the library's own I/O channel, so its
    /// block cache stays coherent (runs longer than a few blocks flush and invalidate
    /// that cache and go to the device as one positioned write).
    pub fn write_blocks(&mut self, block: u64, data: &[u8]) -> Result<(), Errcode> {
        // SAFETY: reading a plain field of the live handle.
        let bs = unsafe { (*self.raw()).blocksize } as usize;
        if bs == 0 || data.len() % bs != 0 {
            return Err(Errcode::from(libc::EINVAL));
        }
        let count = c_int::try_from(data.len() / bs).map_err(|_| Errcode::from(libc::EINVAL))?;
        // SAFETY: `fs->io` is the live handle's open channel; the library reads exactly
        // `count * blocksize` == data.len() bytes from `data` during the call.
        check(unsafe {
            b::io_channel_write_blk64((*self.raw()).io, block, count, data.as_ptr().cast())
        })
    }

    /// `ext2fs_iblk_set`: set `i_blocks` to `blocks` filesystem blocks (in the units the
    /// inode uses: 512-byte sectors or, with huge_file, blocks; times the cluster ratio).
    pub fn set_block_count(&self, inode: &mut Inode, blocks: u64) -> Result<(), Errcode> {
        // SAFETY: updates the 128-byte prefix of our inode in memory only.
        check(unsafe { b::ext2fs_iblk_set(self.raw(), inode.as_mut_ptr(), blocks) })
    }

    /// `ext2fs_free_ext_attr`: drop the inode's reference to its external xattr block
    /// (freeing the block when nobody else uses it). Updates `inode` in memory only.
    pub fn free_ext_attr(&mut self, ino: u32, inode: &mut Inode) -> Result<(), Errcode> {
        // SAFETY: takes a whole ext2_inode_large, which `Inode` is.
        check(unsafe { b::ext2fs_free_ext_attr(self.raw(), ino, &mut inode.0) })
    }

    /// `ext2fs_dir_iterate2` over the live entries of a directory (including `.` and
    /// `..`). The visitor may rewrite an entry's inode number or stop the walk.
    pub fn dir_iterate(
        &mut self,
        dir: u32,
        visit: &mut dyn FnMut(DirEntry<'_>) -> DirStep,
    ) -> Result<(), Errcode> {
        let mut state = IterState {
            visit,
            panicked: false,
        };
        // SAFETY: the callback receives `&mut state` back as `priv_data`; `state` outlives
        // the call, and the library calls the callback only during it.
        let rc = unsafe {
            b::ext2fs_dir_iterate2(
                self.raw(),
                dir,
                0,
                ptr::null_mut(),
                Some(dir_iterate_trampoline),
                (&mut state as *mut IterState<'_>).cast::<c_void>(),
            )
        };
        if state.panicked {
            return Err(Errcode::from(libc::EIO));
        }
        check(rc)
    }

    /// `ext2fs_file_open`: a file handle on an inode, for reading or (with `write`)
    /// writing.
    pub fn open_file(&mut self, ino: u32, write: bool) -> Result<File<'_>, Errcode> {
        let mut file: b::ext2_file_t = ptr::null_mut();
        let flags = if write {
            b::EXT2_FILE_WRITE as c_int
        } else {
            0
        };
        // SAFETY: plain values and an out-pointer; the handle is owned by the returned
        // `File`, which borrows `self` so the filesystem outlives it.
        check(unsafe { b::ext2fs_file_open(self.raw(), ino, flags, &mut file) })?;
        let file = NonNull::new(file).ok_or(NULL_HANDLE)?;
        Ok(File {
            file,
            _fs: PhantomData,
        })
    }
}

impl Drop for Filesystem {
    /// `ext2fs_free`: release memory and close the device WITHOUT writing the in-memory
    /// bitmaps, group descriptors or superblock. See `ExtFs`'s documentation for why.
    fn drop(&mut self) {
        // SAFETY: we own the handle; `close` forgets `self`, so this runs only for handles
        // that were never closed, exactly once.
        unsafe { b::ext2fs_free(self.raw()) }
    }
}

// ---- An I/O manager over a Rust block device -------------------------------------------
//
// libext2fs reaches its device only through an `io_manager` (a table of callbacks) and the
// `io_channel` it opens (lib/ext2fs/ext2_io.h). `Filesystem::open_device` hands it ours, so
// a filesystem can live somewhere that is not one plain file: the copy-on-write view of
// `ext/write/cow.rs`. The callbacks below are thin: they find the `BlockDevice` behind the
// channel and call it; all policy is in safe code.

// A filesystem opened with [`Filesystem::open_device`] reads and writes a
// `blockio::BlockDevice`; offsets are bytes from the start of the filesystem.

/// Error codes from ext2_err.h (e2fsprogs 1.47; bindgen did not export them). A unit test
/// checks each against libext2fs's own message for it.
const ET_MAGIC_IO_CHANNEL: b::errcode_t = 2133571333;
const ET_MAGIC_IO_MANAGER: b::errcode_t = 2133571335;
const ET_SHORT_READ: b::errcode_t = 2133571364;
const ET_SHORT_WRITE: b::errcode_t = 2133571365;
const ET_BAD_DEVICE_NAME: b::errcode_t = 2133571386;
const ET_INVALID_ARGUMENT: b::errcode_t = 2133571399;

/// `struct struct_io_channel` (ext2_io.h), field for field; bindings.rs has it only as an
/// opaque blob, and a test checks the two sizes agree. The error hooks and the unused
/// pointers are kept as plain pointers: we never call or set them.
#[repr(C)]
struct IoChannel {
    magic: b::errcode_t,
    manager: b::io_manager,
    name: *mut c_char,
    block_size: c_int,
    read_error: *mut c_void,
    write_error: *mut c_void,
    refcount: c_int,
    flags: c_int,
    reserved: [std::ffi::c_long; 14],
    private_data: *mut c_void,
    app_data: *mut c_void,
    align: c_int,
}

type ReadBlk =
    unsafe extern "C" fn(b::io_channel, std::ffi::c_ulong, c_int, *mut c_void) -> b::errcode_t;
type WriteBlk =
    unsafe extern "C" fn(b::io_channel, std::ffi::c_ulong, c_int, *const c_void) -> b::errcode_t;
type ReadBlk64 =
    unsafe extern "C" fn(b::io_channel, std::ffi::c_ulonglong, c_int, *mut c_void) -> b::errcode_t;
type WriteBlk64 = unsafe extern "C" fn(
    b::io_channel,
    std::ffi::c_ulonglong,
    c_int,
    *const c_void,
) -> b::errcode_t;

/// `struct struct_io_manager` (ext2_io.h). Callbacks left NULL are optional in 1.47:
/// `write_byte` (the superblock is then written as a negative-count block write),
/// `get_stats` (only e2fsck reads it), `discard` and `cache_readahead`. `zeroout` is NOT
/// optional for us: without it `ext2fs_zero_blocks2` (fallocate's FORCE_INIT) writes
/// zeros through a buffer kept in static variables, which two conversions in two threads
/// of one process share and race on (seen: a division by zero in libext2fs).
#[repr(C)]
struct IoManager {
    magic: b::errcode_t,
    name: *const c_char,
    open: unsafe extern "C" fn(*const c_char, c_int, *mut b::io_channel) -> b::errcode_t,
    close: unsafe extern "C" fn(b::io_channel) -> b::errcode_t,
    set_blksize: unsafe extern "C" fn(b::io_channel, c_int) -> b::errcode_t,
    read_blk: ReadBlk,
    write_blk: WriteBlk,
    flush: unsafe extern "C" fn(b::io_channel) -> b::errcode_t,
    write_byte: *const c_void,
    set_option: unsafe extern "C" fn(b::io_channel, *const c_char, *const c_char) -> b::errcode_t,
    get_stats: *const c_void,
    read_blk64: ReadBlk64,
    write_blk64: WriteBlk64,
    discard: *const c_void,
    cache_readahead: *const c_void,
    zeroout: unsafe extern "C" fn(
        b::io_channel,
        std::ffi::c_ulonglong,
        std::ffi::c_ulonglong,
    ) -> b::errcode_t,
    reserved: [std::ffi::c_long; 14],
}

/// The one manager table, never written.
struct SharedManager(IoManager);
// SAFETY: the table is immutable after initialisation; its pointers are a static string
// and function pointers, valid from any thread.
unsafe impl Sync for SharedManager {}

static DEVICE_MANAGER: SharedManager = SharedManager(IoManager {
    magic: ET_MAGIC_IO_MANAGER,
    name: c"imgconv block device".as_ptr(),
    open: device_open,
    close: device_close,
    set_blksize: device_set_blksize,
    read_blk: device_read_blk,
    write_blk: device_write_blk,
    flush: device_flush,
    write_byte: ptr::null(),
    set_option: device_set_option,
    get_stats: ptr::null(),
    read_blk64: device_read_blk64,
    write_blk64: device_write_blk64,
    discard: ptr::null(),
    cache_readahead: ptr::null(),
    zeroout: device_zeroout,
    reserved: [0; 14],
});

thread_local! {
    /// The device `ext2fs_open2` is about to open: `open_device` puts it here and
    /// `device_open` (called by the library, on this thread, during that call) takes it.
    static PENDING_DEVICE: std::cell::RefCell<Option<Box<dyn BlockDevice>>> =
        const { std::cell::RefCell::new(None) };
}

/// What `private_data` of our channels points at.
struct DeviceState {
    device: Box<dyn BlockDevice>,
}

fn io_errcode(e: &std::io::Error, short: b::errcode_t) -> b::errcode_t {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::WriteZero => short,
        _ => b::errcode_t::from(e.raw_os_error().unwrap_or(libc::EIO)),
    }
}

/// Run a callback body, turning a panic into EIO instead of unwinding into C.
fn guarded(f: impl FnOnce() -> b::errcode_t) -> b::errcode_t {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(libc::EIO as b::errcode_t)
}

/// The byte range of `count` blocks at `block` (a negative count is a byte count, as in
/// unix_io), checked against overflow.
fn byte_range(channel: &IoChannel, block: u64, count: c_int) -> Option<(u64, usize)> {
    let bs = u64::try_from(channel.block_size).ok()?;
    let len = if count < 0 {
        u64::from(count.unsigned_abs())
    } else {
        u64::try_from(count).ok()?.checked_mul(bs)?
    };
    Some((block.checked_mul(bs)?, usize::try_from(len).ok()?))
}

/// # Safety
/// `channel` must be a channel made by `device_open` and not yet closed.
unsafe fn channel_parts<'a>(
    channel: b::io_channel,
) -> Option<(&'a mut IoChannel, &'a DeviceState)> {
    // SAFETY: per the contract, `channel` points at our live IoChannel, whose
    // private_data is the DeviceState we boxed in `device_open`.
    let chan = unsafe { channel.cast::<IoChannel>().as_mut()? };
    let state = unsafe { chan.private_data.cast::<DeviceState>().as_ref()? };
    Some((chan, state))
}

unsafe extern "C" fn device_open(
    _name: *const c_char,
    _flags: c_int,
    out: *mut b::io_channel,
) -> b::errcode_t {
    guarded(|| {
        let Some(device) = PENDING_DEVICE.with(|p| p.borrow_mut().take()) else {
            return ET_BAD_DEVICE_NAME;
        };
        if out.is_null() {
            return ET_INVALID_ARGUMENT;
        }
        let state = Box::into_raw(Box::new(DeviceState { device }));
        let chan = Box::new(IoChannel {
            magic: ET_MAGIC_IO_CHANNEL,
            // The library only reads the table through this pointer.
            manager: ptr::addr_of!(DEVICE_MANAGER.0).cast_mut().cast(),
            name: c"imgconv-device".to_owned().into_raw(),
            block_size: 1024,
            read_error: ptr::null_mut(),
            write_error: ptr::null_mut(),
            refcount: 1,
            flags: 0,
            reserved: [0; 14],
            private_data: state.cast(),
            app_data: ptr::null_mut(),
            align: 0,
        });
        // SAFETY: `out` is the library's non-null out-pointer for the new channel.
        unsafe { *out = Box::into_raw(chan).cast() };
        0
    })
}

unsafe extern "C" fn device_close(channel: b::io_channel) -> b::errcode_t {
    guarded(|| {
        // SAFETY: the library closes only channels it opened through us.
        let Some(chan) = (unsafe { channel.cast::<IoChannel>().as_mut() }) else {
            return ET_INVALID_ARGUMENT;
        };
        chan.refcount -= 1;
        if chan.refcount > 0 {
            return 0;
        }
        // SAFETY: the last reference is gone: free exactly what device_open allocated
        // (the channel, its name and its state), once.
        unsafe {
            let chan = Box::from_raw(channel.cast::<IoChannel>());
            drop(std::ffi::CString::from_raw(chan.name));
            drop(Box::from_raw(chan.private_data.cast::<DeviceState>()));
        }
        0
    })
}

unsafe extern "C" fn device_set_blksize(channel: b::io_channel, size: c_int) -> b::errcode_t {
    guarded(|| {
        // SAFETY: a live channel of ours (the library's contract).
        let Some((chan, _)) = (unsafe { channel_parts(channel) }) else {
            return ET_INVALID_ARGUMENT;
        };
        if size <= 0 {
            return ET_INVALID_ARGUMENT;
        }
        chan.block_size = size;
        0
    })
}

/// The common part of the block read and write callbacks: find the device and the byte
/// range of the request, then run `op` on them (nothing for an empty request).
///
/// # Safety
/// `channel` must be a live channel made by `device_open`.
unsafe fn block_request(
    channel: b::io_channel,
    block: u64,
    count: c_int,
    op: impl FnOnce(&dyn BlockDevice, u64, usize) -> b::errcode_t,
) -> b::errcode_t {
    guarded(|| {
        // SAFETY: a live channel of ours (the caller's contract).
        let Some((chan, state)) = (unsafe { channel_parts(channel) }) else {
            return ET_INVALID_ARGUMENT;
        };
        let Some((offset, len)) = byte_range(chan, block, count) else {
            return ET_INVALID_ARGUMENT;
        };
        if len == 0 {
            return 0;
        }
        op(state.device.as_ref(), offset, len)
    })
}

unsafe extern "C" fn device_read_blk64(
    channel: b::io_channel,
    block: std::ffi::c_ulonglong,
    count: c_int,
    data: *mut c_void,
) -> b::errcode_t {
    // SAFETY: the library calls this only on channels it opened through us.
    unsafe {
        block_request(channel, block, count, |device, offset, len| {
            // SAFETY: the library passes a buffer of at least the requested size.
            let buf = std::slice::from_raw_parts_mut(data.cast::<u8>(), len);
            match device.read_at(offset, buf) {
                Ok(()) => 0,
                Err(e) => io_errcode(&e, ET_SHORT_READ),
            }
        })
    }
}

unsafe extern "C" fn device_write_blk64(
    channel: b::io_channel,
    block: std::ffi::c_ulonglong,
    count: c_int,
    data: *const c_void,
) -> b::errcode_t {
    // SAFETY: the library calls this only on channels it opened through us.
    unsafe {
        block_request(channel, block, count, |device, offset, len| {
            // SAFETY: the library passes a buffer of at least the requested size.
            let buf = std::slice::from_raw_parts(data.cast::<u8>(), len);
            match device.write_at(offset, buf) {
                Ok(()) => 0,
                Err(e) => io_errcode(&e, ET_SHORT_WRITE),
            }
        })
    }
}

unsafe extern "C" fn device_zeroout(
    channel: b::io_channel,
    block: std::ffi::c_ulonglong,
    count: std::ffi::c_ulonglong,
) -> b::errcode_t {
    guarded(|| {
        // SAFETY: a live channel of ours (the library's contract).
        let Some((chan, state)) = (unsafe { channel_parts(channel) }) else {
            return ET_INVALID_ARGUMENT;
        };
        let bs = u64::try_from(chan.block_size).unwrap_or(0);
        let (Some(offset), Some(len)) = (block.checked_mul(bs), count.checked_mul(bs)) else {
            return ET_INVALID_ARGUMENT;
        };
        match state.device.zero_range(offset, len) {
            Ok(()) => 0,
            Err(e) => io_errcode(&e, ET_SHORT_WRITE),
        }
    })
}

unsafe extern "C" fn device_read_blk(
    channel: b::io_channel,
    block: std::ffi::c_ulong,
    count: c_int,
    data: *mut c_void,
) -> b::errcode_t {
    // `c_ulong` is u64 here and 32-bit on other targets.
    #[allow(clippy::useless_conversion)]
    let block = block.into();
    // SAFETY: same contract as read_blk64.
    unsafe { device_read_blk64(channel, block, count, data) }
}

unsafe extern "C" fn device_write_blk(
    channel: b::io_channel,
    block: std::ffi::c_ulong,
    count: c_int,
    data: *const c_void,
) -> b::errcode_t {
    // `c_ulong` is u64 here and 32-bit on other targets.
    #[allow(clippy::useless_conversion)]
    let block = block.into();
    // SAFETY: same contract as write_blk64.
    unsafe { device_write_blk64(channel, block, count, data) }
}

unsafe extern "C" fn device_flush(channel: b::io_channel) -> b::errcode_t {
    guarded(|| {
        // SAFETY: a live channel of ours (the library's contract).
        let Some((_, state)) = (unsafe { channel_parts(channel) }) else {
            return ET_INVALID_ARGUMENT;
        };
        match state.device.flush() {
            Ok(()) => 0,
            Err(e) => io_errcode(&e, ET_SHORT_WRITE),
        }
    })
}

unsafe extern "C" fn device_set_option(
    _channel: b::io_channel,
    _option: *const c_char,
    _arg: *const c_char,
) -> b::errcode_t {
    // No options (unix_io's "offset=" is the device's business here).
    ET_INVALID_ARGUMENT
}

/// Error used if the library reported success but returned no handle (it never does in
/// 1.47; this keeps the wrapper from ever holding a null handle).
const NULL_HANDLE: Errcode = libc::EFAULT as Errcode;

/// One live directory entry as seen by [`Filesystem::dir_iterate`].
pub(super) struct DirEntry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
}

/// What [`Filesystem::dir_iterate`]'s visitor wants next.
pub(super) enum DirStep {
    Continue,
    /// Stop the walk here.
    Stop,
    /// Point this entry at another inode, then stop.
    SetInodeAndStop(u32),
}

struct IterState<'v> {
    visit: &'v mut dyn FnMut(DirEntry<'_>) -> DirStep,
    panicked: bool,
}

unsafe extern "C" fn dir_iterate_trampoline(
    _dir: b::ext2_ino_t,
    _entry: c_int,
    dirent: *mut b::ext2_dir_entry,
    _offset: c_int,
    _blocksize: c_int,
    _buf: *mut c_char,
    priv_data: *mut c_void,
) -> c_int {
    // SAFETY: `priv_data` is the `&mut IterState` passed by dir_iterate, alive and not
    // otherwise borrowed during the iteration.
    let state = unsafe { &mut *priv_data.cast::<IterState<'_>>() };
    // SAFETY: libext2fs validated the entry before calling us (rec_len within the block,
    // name_len + 8 <= rec_len), so the header fields and `name_len & 0xff` name bytes lie
    // inside its block buffer. We read through raw pointers and never form a reference to
    // the whole 264-byte C struct, which may extend past the end of the buffer.
    // The high byte of name_len is the file type (filetype feature); the name length is
    // the low byte.
    let (ino, name) = unsafe {
        let ino = ptr::addr_of!((*dirent).inode).read_unaligned();
        let name_len = ptr::addr_of!((*dirent).name_len).read_unaligned();
        let name_ptr = ptr::addr_of!((*dirent).name).cast::<u8>();
        let name = std::slice::from_raw_parts(name_ptr, usize::from(name_len & 0xff));
        (ino, name)
    };
    let entry = DirEntry { name, ino };
    let visit = &mut state.visit;
    let step = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| visit(entry)));
    match step {
        Ok(DirStep::Continue) => 0,
        Ok(DirStep::Stop) => b::DIRENT_ABORT as c_int,
        Ok(DirStep::SetInodeAndStop(new)) => {
            // SAFETY: same entry as above; the inode field is inside the validated header.
            unsafe { ptr::addr_of_mut!((*dirent).inode).write_unaligned(new) };
            (b::DIRENT_CHANGED | b::DIRENT_ABORT) as c_int
        }
        Err(_) => {
            state.panicked = true;
            b::DIRENT_ABORT as c_int
        }
    }
}

unsafe extern "C" fn collect_block_trampoline(
    _fs: b::ext2_filsys,
    blocknr: *mut b::blk64_t,
    _blockcnt: b::e2_blkcnt_t,
    _ref_blk: b::blk64_t,
    _ref_offset: c_int,
    priv_data: *mut c_void,
) -> c_int {
    // SAFETY: `priv_data` is the `&mut Vec<u64>` passed by release_blocks, alive and not
    // otherwise borrowed during the iteration; `blocknr` points at the library's current
    // block number. Pushing cannot unwind (allocation failure aborts).
    unsafe {
        (*priv_data.cast::<Vec<u64>>()).push(*blocknr);
    }
    0
}

/// An open libext2fs file (`ext2_file_t`). Closing flushes its buffer and writes its
/// inode; drop closes too (ignoring the result), so prefer [`File::close`].
pub(super) struct File<'fs> {
    file: NonNull<b::ext2_file>,
    _fs: PhantomData<&'fs mut Filesystem>,
}

impl File<'_> {
    /// `ext2fs_file_read`: up to `buf.len()` bytes (at most 4 GiB - 1 per call) from the
    /// current position; 0 at end of file.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Errcode> {
        let want = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
        let mut got: c_uint = 0;
        // SAFETY: the library writes at most `want` <= buf.len() bytes into `buf`.
        check(unsafe {
            b::ext2fs_file_read(self.file.as_ptr(), buf.as_mut_ptr().cast(), want, &mut got)
        })?;
        Ok(got as usize)
    }

    /// `ext2fs_file_write` of all of `buf` at the current position (blocks are allocated
    /// as needed and `i_size` grows with the position).
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Errcode> {
        while !buf.is_empty() {
            let n = c_uint::try_from(buf.len()).unwrap_or(c_uint::MAX);
            let mut written: c_uint = 0;
            // SAFETY: the library reads at most `n` <= buf.len() bytes from `buf`.
            check(unsafe {
                b::ext2fs_file_write(self.file.as_ptr(), buf.as_ptr().cast(), n, &mut written)
            })?;
            if written == 0 {
                return Err(Errcode::from(libc::EIO));
            }
            buf = &buf[written as usize..];
        }
        Ok(())
    }

    /// `ext2fs_file_set_size2`: set `i_size`, freeing blocks past it when shrinking.
    pub fn set_size(&mut self, size: u64) -> Result<(), Errcode> {
        let size = i64::try_from(size).map_err(|_| Errcode::from(libc::EFBIG))?;
        // SAFETY: plain values on a live file handle.
        check(unsafe { b::ext2fs_file_set_size2(self.file.as_ptr(), size) })
    }

    /// `ext2fs_file_close`: flush and release the handle.
    pub fn close(self) -> Result<(), Errcode> {
        let raw = self.file.as_ptr();
        std::mem::forget(self);
        // SAFETY: ownership was given up above, so the handle is closed exactly once.
        check(unsafe { b::ext2fs_file_close(raw) })
    }
}

impl Drop for File<'_> {
    fn drop(&mut self) {
        // SAFETY: we own the handle; `close` forgets `self`, so this runs at most once.
        let _ = unsafe { b::ext2fs_file_close(self.file.as_ptr()) };
    }
}

/// An inode as `struct ext2_inode_large` (160 bytes: the classic 128 plus the extra fields
/// up to `i_projid`). Fields past `128 + i_extra_isize` are meaningless on disk and only
/// written back unchanged.
#[derive(Clone, Copy)]
pub(super) struct Inode(b::ext2_inode_large);

impl Inode {
    const SIZE: c_int = std::mem::size_of::<b::ext2_inode_large>() as c_int;

    /// An all-zero inode.
    pub fn zeroed() -> Self {
        // SAFETY: ext2_inode_large is plain old data (integers, arrays of integers and
        // unions of such): the all-zero bit pattern is a valid value.
        Inode(unsafe { std::mem::MaybeUninit::zeroed().assume_init() })
    }

    fn as_mut_ptr(&mut self) -> *mut b::ext2_inode {
        (&mut self.0 as *mut b::ext2_inode_large).cast()
    }

    pub fn mode(&self) -> u16 {
        self.0.i_mode
    }
    pub fn set_mode(&mut self, mode: u16) {
        self.0.i_mode = mode;
    }
    pub fn uid(&self) -> u32 {
        // SAFETY: reading a u16 out of a union of plain integer structs; any bit pattern
        // is a valid u16.
        let high = unsafe { self.0.osd2.linux2.l_i_uid_high };
        u32::from(self.0.i_uid) | (u32::from(high) << 16)
    }
    pub fn set_uid(&mut self, uid: u32) {
        self.0.i_uid = uid as u16;
        self.0.osd2.linux2.l_i_uid_high = (uid >> 16) as u16;
    }
    pub fn gid(&self) -> u32 {
        // SAFETY: as uid.
        let high = unsafe { self.0.osd2.linux2.l_i_gid_high };
        u32::from(self.0.i_gid) | (u32::from(high) << 16)
    }
    pub fn set_gid(&mut self, gid: u32) {
        self.0.i_gid = gid as u16;
        self.0.osd2.linux2.l_i_gid_high = (gid >> 16) as u16;
    }
    /// `EXT2_I_SIZE`: 64-bit size (i_size_high is valid for every type since 1.47).
    pub fn size(&self) -> u64 {
        u64::from(self.0.i_size) | (u64::from(self.0.i_size_high) << 32)
    }
    pub fn links(&self) -> u16 {
        self.0.i_links_count
    }
    pub fn set_links(&mut self, links: u16) {
        self.0.i_links_count = links;
    }
    pub fn flags(&self) -> u32 {
        self.0.i_flags
    }
    pub fn set_size(&mut self, size: u64) {
        self.0.i_size = size as u32;
        self.0.i_size_high = (size >> 32) as u32;
    }
    /// Does the inode have an external xattr block (`i_file_acl`, with its high half)?
    pub fn has_xattr_block(&self) -> bool {
        // SAFETY: as uid.
        let high = unsafe { self.0.osd2.linux2.l_i_file_acl_high };
        self.0.i_file_acl != 0 || high != 0
    }
    /// Forget the block map: zero `i_block` (the blocks must have been released).
    pub fn clear_block_map(&mut self) {
        self.0.i_block = [0; 15];
    }
    pub fn set_dtime(&mut self, t: u32) {
        self.0.i_dtime = t;
    }
    /// `i_extra_isize`, 0 when the on-disk inode has only the classic 128 bytes.
    pub fn extra_isize(&self) -> u16 {
        self.0.i_extra_isize
    }
    /// The 60 bytes of `i_block` (a fast symlink's target lives there).
    pub fn i_block_bytes(&self) -> [u8; 60] {
        let mut out = [0u8; 60];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.0.i_block.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }
    /// Raw (low 32 bits, extra) pairs for atime, mtime, ctime.
    pub fn raw_times(&self) -> [(u32, u32); 3] {
        [
            (self.0.i_atime, self.0.i_atime_extra),
            (self.0.i_mtime, self.0.i_mtime_extra),
            (self.0.i_ctime, self.0.i_ctime_extra),
        ]
    }
    /// Set atime, mtime and ctime from (low 32 bits, extra) pairs; `with_extra` says
    /// whether the on-disk inode has room for the `_extra` fields.
    pub fn set_raw_times(&mut self, times: [(u32, u32); 3], with_extra: [bool; 3]) {
        self.0.i_atime = times[0].0;
        self.0.i_mtime = times[1].0;
        self.0.i_ctime = times[2].0;
        if with_extra[0] {
            self.0.i_atime_extra = times[0].1;
        }
        if with_extra[1] {
            self.0.i_mtime_extra = times[1].1;
        }
        if with_extra[2] {
            self.0.i_ctime_extra = times[2].1;
        }
    }
    /// Byte offsets (from the start of the inode) just past `i_atime_extra`,
    /// `i_mtime_extra` and `i_ctime_extra`: a field is on disk when
    /// `128 + i_extra_isize` reaches its end.
    pub const EXTRA_TIME_ENDS: [u16; 3] = [
        (std::mem::offset_of!(b::ext2_inode_large, i_atime_extra) + 4) as u16,
        (std::mem::offset_of!(b::ext2_inode_large, i_mtime_extra) + 4) as u16,
        (std::mem::offset_of!(b::ext2_inode_large, i_ctime_extra) + 4) as u16,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_structs_match_the_library_layout() {
        assert_eq!(
            std::mem::size_of::<IoChannel>(),
            std::mem::size_of::<b::struct_io_channel>()
        );
        assert_eq!(
            std::mem::size_of::<IoManager>(),
            std::mem::size_of::<b::struct_io_manager>()
        );
        assert_eq!(std::mem::offset_of!(IoChannel, block_size), 24);
        assert_eq!(std::mem::offset_of!(IoChannel, refcount), 48);
        assert_eq!(std::mem::offset_of!(IoChannel, private_data), 168);
        assert_eq!(std::mem::offset_of!(IoManager, read_blk64), 88);
        assert_eq!(std::mem::offset_of!(IoManager, zeroout), 120);
    }

    #[test]
    fn error_codes_are_the_librarys() {
        for (code, words) in [
            (ET_MAGIC_IO_CHANNEL, "io_channel"),
            (ET_MAGIC_IO_MANAGER, "io_manager"),
            (ET_SHORT_READ, "short read"),
            (ET_SHORT_WRITE, "short write"),
            (ET_BAD_DEVICE_NAME, "device name"),
            (ET_INVALID_ARGUMENT, "Invalid argument"),
        ] {
            let text = error_text(code as Errcode);
            assert!(text.contains(words), "{code}: {text}");
        }
    }
}
