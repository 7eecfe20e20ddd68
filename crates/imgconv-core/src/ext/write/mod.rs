//! The ext engine: write into an existing ext2/3/4 filesystem (the converted guest's root,
//! inside the output image) through the system's libext2fs, the reference implementation
//! that mke2fs -d, debugfs and e2fsck use. See docs/ext-engine.md for why this and
//! not a pure-Rust writer, and for the call sequence that leaves ext2/3/4 `e2fsck -fn`
//! clean; this module follows it.
//!
//! [`ExtFs`] is the safe wrapper. It implements [`GuestFs`] with exactly the semantics of
//! `guestfs::MemFs`: guest paths are resolved by the shared [`crate::tree::resolve`]
//! over the entries of each directory (listed once through `ext2fs_dir_iterate2` and kept
//! in a bounded cache, see `dcache.rs`; `ext2fs_lookup` for a directory too large to keep),
//! following the guest's own symlinks inside the guest (absolute
//! targets restart at the guest root inode 2, `..` at the root stays there, more than
//! [`guestfs::MAX_SYMLINK_HOPS`] links is [`GuestFsError::SymlinkLoop`]). Nothing here ever
//! touches the host filesystem except the image file itself.
//!
//! What each write does on disk:
//! - `mkdir_p`: `ext2fs_mkdir` per missing component (`ext2fs_expand_dir` + retry when a
//!   linear parent is full), then mode, uid/gid (with the high halves) and times.
//! - `create_file`: `ext2fs_new_inode`, `ext2fs_link` (expand + retry; 1.47 keeps htree
//!   directories indexed), `ext2fs_inode_alloc_stats2`, an extent header when the
//!   filesystem has `extent` (block maps on ext2/3), `ext2fs_write_new_inode`, then the
//!   data streamed in 4 MiB steps: each run of non-zero blocks gets its blocks from one
//!   `ext2fs_fallocate` (initialised extents, contiguous where free space allows) and is
//!   written with one `io_channel_write_blk64` per physically contiguous stretch (large
//!   writes bypass and invalidate the library's small block cache, so it stays coherent);
//!   the inode (size, map, `i_blocks`, mode, owner, times) is written once at the end.
//!   All-zero blocks are skipped and stay holes, which read back as zeros (so never
//!   create a swap file with it: swapon refuses holes). A source error or short source undoes the half-made file.
//! - Times: atime = mtime = ctime = the given mtime (with the ext4 epoch bits when the
//!   inode has extra fields, else clamped to 32 bits); crtime is the time of writing.
//! - `replace_content`: same inode (owner, mode, mtime kept, as MemFs); its blocks are
//!   released and the new content written; ctime becomes now.
//! - `rename`: link the new name, then unlink the old one; a directory moved to another
//!   parent gets its `..` repointed and one link moves between the parents' counts. A
//!   directory cannot move into itself. Times are left alone.
//! - `remove`: unlink and drop one link; with no link left, the external xattr block
//!   reference, the data and mapping blocks and the inode are freed and `i_dtime` set.
//!   Blocks are freed as debugfs's `kill_file` does, not with `ext2fs_punch`, which in
//!   e2fsprogs 1.47 fails on an extent that ends at the filesystem's last block.
//!   (Values in `ea_inode` xattr inodes are not released; Debian does not use that
//!   feature.)
//! - Not written: xattrs, device nodes, FIFOs, sockets (the trait has no call for them).
//!
//! All `unsafe` is in `ffi.rs` (generated declarations in `bindings.rs`); the crate
//! root denies it everywhere else.

pub mod cow;
mod dcache;
// The one module allowed to use `unsafe` (the crate root denies it everywhere else).
#[allow(unsafe_code)]
mod ffi;

use crate::guestfs::{self, GuestFs, GuestFsError, NodeAttrs};
use crate::guestfs::{DirItem, NodeKind, NodeMeta};
use crate::tree::{TreeRead, Walk};
use ffi::{Errcode, Inode};
use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Errors of the ext engine. Each carries libext2fs's own error text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtError {
    /// The filesystem could not be opened read-write (bad superblock, unsupported feature,
    /// I/O error, corrupt group descriptors...).
    #[error("cannot open the ext filesystem at byte {offset} of {}: {message}", image.display())]
    Open {
        image: PathBuf,
        offset: u64,
        code: i64,
        message: String,
    },
    /// The journal holds transactions that were never replayed: writing now would be undone
    /// (or corrupted) by the replay at the next mount.
    #[error(
        "the ext filesystem at byte {offset} of {} needs journal recovery (it was not cleanly \
         unmounted); replay the journal first with `e2fsck -fy`",
        image.display()
    )]
    NeedsRecovery { image: PathBuf, offset: u64 },
    /// Not cleanly unmounted, or errors recorded: the allocation bitmaps may be stale, and
    /// allocating from them could overwrite files.
    #[error(
        "the ext filesystem at byte {offset} of {} was not cleanly unmounted or has errors \
         recorded, so its bitmaps cannot be trusted; repair it first with `e2fsck -fy`",
        image.display()
    )]
    Unclean { image: PathBuf, offset: u64 },
    /// An operation inside the filesystem failed.
    #[error("{op} {path}: {message}")]
    Op {
        op: &'static str,
        path: String,
        code: i64,
        message: String,
    },
    /// Writing the metadata (bitmaps, group descriptors, superblock) at close failed.
    #[error("cannot write the ext filesystem at byte {offset} of {}: {message}", image.display())]
    Close {
        image: PathBuf,
        offset: u64,
        code: i64,
        message: String,
    },
}

impl ExtError {
    fn op(op: &'static str, path: &str, code: Errcode) -> Self {
        ExtError::Op {
            op,
            path: path.to_string(),
            code,
            message: ffi::error_text(code),
        }
    }
}

impl From<ExtError> for GuestFsError {
    fn from(e: ExtError) -> Self {
        match e {
            ExtError::Op {
                op,
                path,
                code,
                message,
            } => match no_space(code) {
                Some(in_guest) => GuestFsError::NoSpace {
                    op,
                    path,
                    why: message,
                    in_guest,
                },
                None => GuestFsError::Engine {
                    op,
                    path,
                    why: message,
                },
            },
            other => GuestFsError::Engine {
                op: "ext engine",
                path: String::new(),
                why: other.to_string(),
            },
        }
    }
}

/// Whether a libext2fs error code means no room: `Some(true)` when the guest filesystem
/// has no free block, `Some(false)` when the filesystem under the output image is full
/// (the I/O manager passes the write's errno through).
fn no_space(code: Errcode) -> Option<bool> {
    if code == ffi::ET_BLOCK_ALLOC_FAIL {
        return Some(true);
    }
    let errno = i32::try_from(code).ok()?;
    crate::error::is_out_of_space(&std::io::Error::from_raw_os_error(errno)).then_some(false)
}

impl ExtError {
    /// What the error concerns: a journal that needs replaying is the input's, no room
    /// the output's; the engine failing otherwise is internal.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        let code = match self {
            ExtError::NeedsRecovery { .. } | ExtError::Unclean { .. } => return K::Input,
            ExtError::Open { code, .. }
            | ExtError::Op { code, .. }
            | ExtError::Close { code, .. } => *code,
        };
        if no_space(code).is_some() {
            K::Output
        } else {
            K::Internal
        }
    }
}

fn engine(op: &'static str, path: &str, code: Errcode) -> GuestFsError {
    ExtError::op(op, path, code).into()
}

fn engine_msg(op: &'static str, path: &str, why: impl Into<String>) -> GuestFsError {
    GuestFsError::Engine {
        op,
        path: path.to_string(),
        why: why.into(),
    }
}

/// The guest root directory's inode.
const ROOT: u32 = ffi::ROOT_INO;
/// Bytes read from a new file's source per step (a multiple of every ext block size).
const COPY_CHUNK: usize = 4 << 20;
/// Free blocks a run of more than 12 blocks needs beyond its data blocks (and 1/256 of
/// them) for extent tree or indirect blocks before it is allocated.
const ALLOC_SLACK_BLOCKS: u64 = 16;
/// Longest name of one directory entry.
const NAME_MAX: usize = 255;
/// The kernel's limit on a symlink target (PATH_MAX, and never more than one block).
const SYMLINK_MAX: u64 = 4096;

/// An ext2/3/4 filesystem opened read-write inside an image file, at a byte offset.
///
/// Only ever open the OUTPUT image with it: the converter works on a fresh copy, the input
/// is read with the read-only [`crate::ext::read::ExtReader`].
///
/// Finish with [`ExtFs::close`], which writes the bitmaps, group descriptors, superblock
/// and their checksums. Dropping an `ExtFs` without closing it frees the library's memory
/// with `ext2fs_free` and deliberately does NOT write that metadata: a conversion that did
/// not reach `close` has failed, and its output is deleted anyway, so the engine never
/// writes a half-finished state on purpose. Note that file data and inode-table blocks
/// already handed to libext2fs's I/O layer may still reach the image (its block cache is
/// flushed when the device is closed), so such an image is inconsistent and must be
/// discarded, never used.
///
/// Not `Send`/`Sync`: a libext2fs handle must be used by one thread at a time.
pub struct ExtFs {
    fs: ffi::Filesystem,
    image: PathBuf,
    offset: u64,
    block_size: u32,
    inode_size: u16,
    extents: bool,
    dir_nlink: bool,
    /// Directory entries and symlink targets already read (see [`dcache`]).
    dcache: dcache::DirCache,
}

/// The version of the libext2fs this process runs with, e.g. "1.47.0" (for `--version`
/// and bug reports: the loaded library, not the headers the crate was built against).
pub fn library_version() -> String {
    ffi::library_version()
}

impl std::fmt::Debug for ExtFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtFs")
            .field("image", &self.image)
            .field("offset", &self.offset)
            .field("block_size", &self.block_size)
            .finish_non_exhaustive()
    }
}

impl ExtFs {
    /// Open the filesystem that starts at byte `offset` of `image`, read-write
    /// (`ext2fs_open2` with `EXT2_FLAG_RW | EXT2_FLAG_64BITS`, io option `offset=N`,
    /// the unix I/O manager), and load its allocation bitmaps.
    ///
    /// Refuses a filesystem whose journal needs recovery ([`ExtError::NeedsRecovery`]) and
    /// one whose group descriptors are not sane (`ext2fs_check_desc`). Nothing is written
    /// by opening.
    pub fn open(image: &Path, offset: u64) -> Result<ExtFs, ExtError> {
        let open_err = |code: Errcode| ExtError::Open {
            image: image.to_path_buf(),
            offset,
            code,
            message: ffi::error_text(code),
        };
        let c_image = CString::new(image.as_os_str().as_bytes())
            .map_err(|_| open_err(Errcode::from(libc::EINVAL)))?;
        let options = (offset != 0)
            .then(|| CString::new(format!("offset={offset}")).expect("digits contain no NUL byte"));
        let fs = ffi::Filesystem::open_rw(&c_image, options.as_deref()).map_err(open_err)?;
        Self::checked(fs, image, offset)
    }

    /// Open the filesystem through a [`cow::CowDevice`]: the output's root filesystem as
    /// the stream will leave it, while the stream is still running. `image` and `offset`
    /// name the output in messages.
    pub fn open_cow<D: crate::blockio::BlockDevice + 'static>(
        device: cow::CowDevice<D>,
        image: &Path,
        offset: u64,
    ) -> Result<ExtFs, ExtError> {
        Self::open_device(device, image, offset)
    }

    /// Open the filesystem that is all of `device` (byte 0 of the device is byte 0 of
    /// the filesystem), through imgconv's I/O manager: for an output that is not a raw
    /// file (a qcow2 image). `image` and `offset` name the output in messages.
    pub fn open_device(
        device: impl crate::blockio::BlockDevice + 'static,
        image: &Path,
        offset: u64,
    ) -> Result<ExtFs, ExtError> {
        let fs = ffi::Filesystem::open_device(Box::new(device)).map_err(|code| ExtError::Open {
            image: image.to_path_buf(),
            offset,
            code,
            message: ffi::error_text(code),
        })?;
        Self::checked(fs, image, offset)
    }

    /// Refuse a filesystem that needs recovery or whose descriptors are wrong, and load
    /// the bitmaps.
    fn checked(mut fs: ffi::Filesystem, image: &Path, offset: u64) -> Result<ExtFs, ExtError> {
        let open_err = |code: Errcode| ExtError::Open {
            image: image.to_path_buf(),
            offset,
            code,
            message: ffi::error_text(code),
        };
        let info = fs.super_info();
        if info.feature_incompat & ffi::INCOMPAT_RECOVER != 0 {
            // `fs` is dropped: freed without writing anything.
            return Err(ExtError::NeedsRecovery {
                image: image.to_path_buf(),
                offset,
            });
        }
        // s_state (super.rst): VALID_FS 0x1 set and ERROR_FS 0x2 clear, or the bitmaps
        // this engine allocates from may be stale.
        if info.state & 0x1 == 0 || info.state & 0x2 != 0 {
            return Err(ExtError::Unclean {
                image: image.to_path_buf(),
                offset,
            });
        }
        // Allocating from a filesystem whose descriptors point at the wrong blocks would
        // overwrite metadata: check them first, as e2fsck does.
        fs.check_desc().map_err(open_err)?;
        fs.read_bitmaps().map_err(open_err)?;
        Ok(ExtFs {
            fs,
            image: image.to_path_buf(),
            offset,
            block_size: info.block_size,
            inode_size: info.inode_size,
            extents: info.feature_incompat & ffi::INCOMPAT_EXTENTS != 0,
            dir_nlink: info.feature_ro_compat & ffi::RO_COMPAT_DIR_NLINK != 0,
            dcache: dcache::DirCache::default(),
        })
    }

    /// Write all metadata with checksums (`ext2fs_close_free`) and close the image.
    pub fn close(self) -> Result<(), ExtError> {
        let ExtFs {
            fs, image, offset, ..
        } = self;
        fs.close().map_err(|code| ExtError::Close {
            image,
            offset,
            code,
            message: ffi::error_text(code),
        })
    }

    /// The image file this filesystem lives in.
    pub fn image(&self) -> &Path {
        &self.image
    }

    /// Byte offset of the filesystem inside [`ExtFs::image`].
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.fs.super_info().uuid)
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Total number of blocks.
    pub fn blocks_count(&self) -> u64 {
        self.fs.super_info().blocks_count
    }

    /// Free blocks, as currently accounted (changes as files are written).
    pub fn free_blocks(&self) -> u64 {
        self.fs.super_info().free_blocks
    }

    /// `s_feature_compat` bits.
    pub fn feature_compat(&self) -> u32 {
        self.fs.super_info().feature_compat
    }

    /// `s_feature_incompat` bits.
    pub fn feature_incompat(&self) -> u32 {
        self.fs.super_info().feature_incompat
    }

    /// `s_feature_ro_compat` bits.
    pub fn feature_ro_compat(&self) -> u32 {
        self.fs.super_info().feature_ro_compat
    }

    // ---- reading -------------------------------------------------------------------

    fn read_inode(&self, ino: u32, path: &str) -> Result<Inode, GuestFsError> {
        self.fs
            .read_inode(ino)
            .map_err(|c| engine("read inode of", path, c))
    }

    fn write_inode(&mut self, ino: u32, inode: &Inode, path: &str) -> Result<(), GuestFsError> {
        self.fs
            .write_inode(ino, inode)
            .map_err(|c| engine("write inode of", path, c))
    }

    /// Which of atime/mtime/ctime have their `_extra` field on disk for this inode.
    fn extra_times(&self, inode: &Inode) -> [bool; 3] {
        let room = ffi::GOOD_OLD_INODE_SIZE + inode.extra_isize();
        Inode::EXTRA_TIME_ENDS.map(|end| self.inode_size > ffi::GOOD_OLD_INODE_SIZE && room >= end)
    }

    fn meta(&self, ino: u32, inode: &Inode, path: &str) -> Result<NodeMeta, GuestFsError> {
        let kind = kind_of(inode.mode()).ok_or_else(|| {
            engine_msg(
                "stat",
                path,
                format!("inode {ino} has an invalid mode {:o}", inode.mode()),
            )
        })?;
        let extra = self.extra_times(inode);
        let times = inode.raw_times();
        Ok(NodeMeta {
            kind,
            mode: inode.mode() & 0o7777,
            uid: inode.uid(),
            gid: inode.gid(),
            len: inode.size(),
            mtime: decode_time(times[1], extra[1]),
            atime: decode_time(times[0], extra[0]),
        })
    }

    /// Read up to `size` bytes of an inode's data through `ext2fs_file_read` (handles
    /// extents, block maps and inline data).
    fn read_data(&mut self, ino: u32, size: u64, path: &str) -> Result<Vec<u8>, GuestFsError> {
        let len = usize::try_from(size).map_err(|_| GuestFsError::TooLarge {
            path: path.to_string(),
            size,
            cap: usize::MAX as u64,
        })?;
        let mut data = vec![0u8; len];
        let mut file = self
            .fs
            .open_file(ino, false)
            .map_err(|c| engine("open", path, c))?;
        let mut done = 0;
        while done < len {
            let n = file
                .read(&mut data[done..])
                .map_err(|c| engine("read", path, c))?;
            if n == 0 {
                break;
            }
            done += n;
        }
        file.close().map_err(|c| engine("close", path, c))?;
        if done != len {
            return Err(engine_msg(
                "read",
                path,
                format!("got {done} of {len} bytes (corrupt inode?)"),
            ));
        }
        Ok(data)
    }

    /// A symlink's target: inline in `i_block` for fast links, else the first data block
    /// (or inline data), read through the file API.
    fn link_target(
        &mut self,
        ino: u32,
        inode: &Inode,
        path: &str,
    ) -> Result<Vec<u8>, GuestFsError> {
        let size = inode.size();
        if size == 0 || size > SYMLINK_MAX || size >= u64::from(self.block_size) {
            return Err(engine_msg(
                "readlink",
                path,
                format!("symlink inode {ino} claims a {size}-byte target (corrupt inode?)"),
            ));
        }
        if inode.flags() & ffi::INLINE_DATA_FL == 0 && !self.fs.inode_has_valid_blocks(inode) {
            let bytes = inode.i_block_bytes();
            let len = size as usize;
            if len > bytes.len() {
                return Err(engine_msg(
                    "readlink",
                    path,
                    format!("fast symlink inode {ino} claims {size} bytes (corrupt inode?)"),
                ));
            }
            return Ok(bytes[..len].to_vec());
        }
        self.read_data(ino, size, path)
    }

    /// Resolve a guest path by the shared guest-path rules ([`crate::tree::resolve`]):
    /// returns the parent directory, the final name (empty when the path ends at a
    /// directory reached through `..`, a symlink, or the root) and the inode if it exists.
    fn resolve(&mut self, path: &str, follow: bool) -> Result<Found, GuestFsError> {
        let r = crate::tree::resolve(self, path, follow)
            .map_err(|e| GuestFsError::resolving(path, e))?;
        Ok(Found {
            parent: r.parent,
            name: r.name,
            ino: r.node.map(|(ino, _)| ino),
        })
    }

    /// Resolve and map "not found" to `None`, as MemFs's stat-like calls do.
    fn resolve_existing(&mut self, path: &str, follow: bool) -> Result<Option<u32>, GuestFsError> {
        match self.resolve(path, follow) {
            Ok(Found { ino, .. }) => Ok(ino),
            Err(GuestFsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---- writing -------------------------------------------------------------------

    /// Where a new node named by `path` goes: its parent directory and entry name.
    /// Fails with `AlreadyExists` when the path names something (even a dangling symlink)
    /// or ends at a directory.
    fn new_entry(&mut self, path: &str) -> Result<(u32, CString), GuestFsError> {
        let found = self.resolve(path, false)?;
        if found.ino.is_some() || found.name.is_empty() {
            return Err(GuestFsError::AlreadyExists { path: path.into() });
        }
        Ok((found.parent, entry_name(&found.name, path)?))
    }

    /// Run a call that adds an entry to directory `dir`; if the (linear) directory is full,
    /// grow it by one block with `ext2fs_expand_dir` and try once more.
    fn with_room_in(
        &mut self,
        dir: u32,
        op: &'static str,
        path: &str,
        mut call: impl FnMut(&mut ffi::Filesystem) -> Result<(), Errcode>,
    ) -> Result<(), GuestFsError> {
        match call(&mut self.fs) {
            Err(ffi::ET_DIR_NO_SPACE) => {
                self.fs
                    .expand_dir(dir)
                    .map_err(|c| engine("expand the directory of", path, c))?;
                call(&mut self.fs).map_err(|c| engine(op, path, c))
            }
            other => other.map_err(|c| engine(op, path, c)),
        }
    }

    /// Set type+permission bits, owner and times (atime = mtime = ctime) on an inode.
    fn apply_attrs(
        &mut self,
        ino: u32,
        type_bits: u16,
        attrs: &NodeAttrs,
        path: &str,
    ) -> Result<(), GuestFsError> {
        let mut inode = self.read_inode(ino, path)?;
        self.set_attrs(&mut inode, type_bits, attrs);
        self.write_inode(ino, &inode, path)
    }

    /// [`ExtFs::apply_attrs`] on an inode in memory.
    fn set_attrs(&self, inode: &mut Inode, type_bits: u16, attrs: &NodeAttrs) {
        inode.set_mode(type_bits | (attrs.mode & 0o7777));
        inode.set_uid(attrs.uid);
        inode.set_gid(attrs.gid);
        let extra = self.extra_times(inode);
        let times = [0, 1, 2].map(|i| encode_time(attrs.mtime, extra[i]));
        inode.set_raw_times(times, extra);
    }

    fn set_ctime_now(&self, inode: &mut Inode) {
        let extra = self.extra_times(inode);
        let mut times = inode.raw_times();
        times[2] = encode_time(now(), extra[2]);
        inode.set_raw_times(times, extra);
    }

    /// Create one directory (the parent must exist).
    fn mkdir_one(&mut self, path: &str, attrs: &NodeAttrs) -> Result<(), GuestFsError> {
        let (parent, name) = self.new_entry(path)?;
        let ino = self
            .fs
            .new_inode(parent, ffi::S_IFDIR | 0o755)
            .map_err(|c| engine("allocate an inode for", path, c))?;
        self.with_room_in(parent, "mkdir", path, |fs| fs.mkdir(parent, ino, &name))?;
        self.dcache
            .added(parent, name.to_bytes(), ino, NodeKind::Dir);
        self.dcache.created_dir(ino);
        self.apply_attrs(ino, ffi::S_IFDIR, attrs, path)
    }

    /// The entry `name` of directory `dir` with its kind, through the directory cache:
    /// a directory is listed once, then looked up in memory; one too large to keep, or
    /// whose listing fails (a corrupt block after the entry wanted), is asked of
    /// `ext2fs_lookup` each time, as before the cache.
    fn lookup_entry(
        &mut self,
        dir: u32,
        name: &[u8],
        path: &str,
    ) -> Result<Option<(u32, Option<NodeKind>)>, GuestFsError> {
        let mut listed = false;
        loop {
            match self.dcache.lookup(dir, name) {
                dcache::Lookup::Hit(e) => {
                    let kind = match e.kind {
                        Some(kind) => kind,
                        None => {
                            let kind = kind_of(self.read_inode(e.ino, path)?.mode());
                            self.dcache.set_kind(dir, name, kind);
                            kind
                        }
                    };
                    return Ok(Some((e.ino, kind)));
                }
                dcache::Lookup::Absent => return Ok(None),
                dcache::Lookup::Unlisted if !listed => {
                    listed = true;
                    if let Some(listing) = self.list_dir(dir) {
                        if self.dcache.fill(dir, listing) {
                            continue;
                        }
                    } else {
                        self.dcache.mark_uncached(dir);
                    }
                }
                dcache::Lookup::Unlisted | dcache::Lookup::Uncached => {}
            }
            let Some(ino) = self
                .fs
                .lookup(dir, name)
                .map_err(|c| engine("look up", path, c))?
            else {
                return Ok(None);
            };
            let inode = self.read_inode(ino, path)?;
            return Ok(Some((ino, kind_of(inode.mode()))));
        }
    }

    /// The live entries of a directory (without `.` and `..`), in on-disk order; `None`
    /// when the library cannot list it whole or it is too large to keep.
    fn list_dir(&mut self, dir: u32) -> Option<Vec<(Vec<u8>, u32)>> {
        let mut out = Vec::new();
        let mut too_many = false;
        self.fs
            .dir_iterate(dir, &mut |e| {
                if e.name != b"." && e.name != b".." {
                    if out.len() > dcache::MAX_DIR_ENTRIES {
                        too_many = true;
                        return ffi::DirStep::Stop;
                    }
                    out.push((e.name.to_vec(), e.ino));
                }
                ffi::DirStep::Continue
            })
            .ok()?;
        (!too_many).then_some(out)
    }

    /// Write a new file's data from `content`: exactly `size` bytes, all-zero blocks left
    /// as holes (they read back as zeros), then its times.
    ///
    /// No per-block library calls: each run of non-zero blocks of a chunk is given its
    /// blocks in one `ext2fs_fallocate` (contiguous where free space allows) and written
    /// with one positioned write per physically contiguous stretch through the library's
    /// I/O channel; the inode is written once at the end.
    fn fill_new_file(
        &mut self,
        ino: u32,
        content: &mut dyn Read,
        size: u64,
        attrs: &NodeAttrs,
        path: &str,
    ) -> Result<(), GuestFsError> {
        let bs = self.block_size as usize;
        let chunk = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(COPY_CHUNK)
            .div_ceil(bs)
            .max(1)
            * bs;
        let mut buf = vec![0u8; chunk];
        let mut inode = self.read_inode(ino, path)?;
        let written = self.fill_blocks(ino, &mut inode, content, size, &mut buf, path);
        // Write the inode even on failure: the caller frees a failed file's blocks from
        // its on-disk map, which must list what was allocated. Its attributes go in the
        // same write (as `apply_attrs` sets them).
        inode.set_size(size);
        self.set_attrs(&mut inode, ffi::S_IFREG, attrs);
        let saved = self.write_inode(ino, &inode, path);
        written?;
        saved
    }

    /// The data part of [`ExtFs::fill_new_file`]; `inode` is the new file's in-memory
    /// inode, updated as blocks are allocated.
    fn fill_blocks(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        content: &mut dyn Read,
        size: u64,
        buf: &mut [u8],
        path: &str,
    ) -> Result<(), GuestFsError> {
        let bs = self.block_size as usize;
        let mut pos: u64 = 0;
        while pos < size {
            let want = (size - pos).min(buf.len() as u64) as usize;
            let got =
                read_full(content, &mut buf[..want]).map_err(|source| GuestFsError::Source {
                    path: path.into(),
                    source,
                })?;
            if got < want {
                return Err(GuestFsError::Source {
                    path: path.into(),
                    source: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "content shorter than its size",
                    ),
                });
            }
            // The last block of the file is written whole: zero its tail.
            let padded = want.div_ceil(bs) * bs;
            buf[want..padded].fill(0);
            // `pos` is block-aligned here (chunks are whole blocks), so block i of the
            // buffer is block (pos / bs + i) of the file.
            let first = pos / bs as u64;
            let blocks = padded / bs;
            let mut i = 0;
            while i < blocks {
                if crate::bytes::is_zero(&buf[i * bs..(i + 1) * bs]) {
                    i += 1;
                    continue;
                }
                let mut j = i + 1;
                while j < blocks && !crate::bytes::is_zero(&buf[j * bs..(j + 1) * bs]) {
                    j += 1;
                }
                self.write_run(ino, inode, first + i as u64, &buf[i * bs..j * bs], path)?;
                i = j;
            }
            pos += want as u64;
        }
        Ok(())
    }

    /// Give logical blocks `[lblk, lblk + data.len() / block size)` of a new file blocks and
    /// write `data` (whole blocks) into them.
    fn write_run(
        &mut self,
        ino: u32,
        inode: &mut Inode,
        lblk: u64,
        data: &[u8],
        path: &str,
    ) -> Result<(), GuestFsError> {
        let bs = self.block_size as usize;
        let n = (data.len() / bs) as u64;
        // Refuse up front what cannot fit (with room for extent tree or indirect blocks):
        // a fallocate that runs out of space half-way may leave blocks marked used that no
        // inode maps.
        let mapping = if n > 12 {
            n / 256 + ALLOC_SLACK_BLOCKS
        } else {
            0
        };
        if self.fs.super_info().free_blocks < n + mapping {
            return Err(engine(
                "allocate blocks for",
                path,
                ffi::ET_BLOCK_ALLOC_FAIL,
            ));
        }
        self.fs
            .allocate_range(ino, inode, lblk, n)
            .map_err(|c| engine("allocate blocks for", path, c))?;
        let map = |fs: &mut ffi::Filesystem, inode: &mut Inode, b: u64| match fs
            .map_block(ino, inode, b)
        {
            Ok(0) => Err(engine_msg(
                "write",
                path,
                format!("logical block {b} has no block after allocation"),
            )),
            Ok(p) => Ok(p),
            Err(c) => Err(engine("map a block of", path, c)),
        };
        let mut k = 0;
        let mut phys = map(&mut self.fs, inode, lblk)?;
        while k < n {
            // The longest physically contiguous stretch from block k.
            let mut m = 1;
            let mut next = None;
            while k + m < n {
                let p = map(&mut self.fs, inode, lblk + k + m)?;
                if p != phys + m {
                    next = Some(p);
                    break;
                }
                m += 1;
            }
            let (s, e) = (k as usize * bs, (k + m) as usize * bs);
            self.fs
                .write_blocks(phys, &data[s..e])
                .map_err(|c| engine("write", path, c))?;
            k += m;
            if let Some(p) = next {
                phys = p;
            }
        }
        Ok(())
    }

    /// Drop one link to `ino` (whose directory entry is already gone); when none is left,
    /// free its xattr block, data blocks and the inode itself, and set `i_dtime`.
    fn drop_link(&mut self, ino: u32, path: &str) -> Result<(), GuestFsError> {
        let mut inode = self.read_inode(ino, path)?;
        let links = inode.links().saturating_sub(1);
        inode.set_links(links);
        self.set_ctime_now(&mut inode);
        if links == 0 {
            inode.set_dtime(now() as u32);
            self.fs
                .free_ext_attr(ino, &mut inode)
                .map_err(|c| engine("free the xattr block of", path, c))?;
            if self.fs.inode_has_valid_blocks(&inode) {
                self.fs
                    .release_blocks(ino)
                    .map_err(|c| engine("free the blocks of", path, c))?;
            }
            let is_dir = inode.mode() & ffi::S_IFMT == ffi::S_IFDIR;
            self.fs.inode_alloc_stats(ino, -1, is_dir);
            self.dcache.inode_freed();
        }
        self.write_inode(ino, &inode, path)
    }

    /// Empty a regular file, keeping its inode and xattr block. Block-mapped and extent
    /// files release their blocks and get an empty map (see `ffi::release_blocks` for why
    /// not `ext2fs_punch`); inline-data files are truncated by the library.
    fn truncate_to_zero(
        &mut self,
        ino: u32,
        inode: &Inode,
        path: &str,
    ) -> Result<(), GuestFsError> {
        if inode.flags() & ffi::INLINE_DATA_FL != 0 || !self.fs.inode_has_valid_blocks(inode) {
            let mut file = self
                .fs
                .open_file(ino, true)
                .map_err(|c| engine("open", path, c))?;
            file.set_size(0).map_err(|c| engine("truncate", path, c))?;
            return file.close().map_err(|c| engine("close", path, c));
        }
        self.fs
            .release_blocks(ino)
            .map_err(|c| engine("free the blocks of", path, c))?;
        let mut inode = *inode;
        inode.clear_block_map();
        if inode.flags() & ffi::EXTENTS_FL != 0 {
            self.fs
                .init_extent_header(ino, &mut inode)
                .map_err(|c| engine("set up extents for", path, c))?;
        }
        inode.set_size(0);
        let xattr_blocks = u64::from(inode.has_xattr_block());
        self.fs
            .set_block_count(&mut inode, xattr_blocks)
            .map_err(|c| engine("truncate", path, c))?;
        self.write_inode(ino, &inode, path)
    }

    /// Undo a half-created file: remove its entry and free it. Best effort, used only on an
    /// error path (the caller reports the original error).
    fn discard_new(&mut self, parent: u32, name: &CStr, ino: u32, path: &str) {
        if self.fs.unlink(parent, name, ino).is_ok() {
            self.dcache.removed(parent, name.to_bytes());
            let _ = self.drop_link(ino, path);
        }
    }

    /// Is `dir` the directory `ancestor` or inside it? Walks `..` entries up to the root.
    fn is_within(&mut self, mut dir: u32, ancestor: u32, path: &str) -> Result<bool, GuestFsError> {
        // A sane tree is far shallower; the bound stops a corrupt `..` cycle.
        for _ in 0..4096 {
            if dir == ancestor {
                return Ok(true);
            }
            if dir == ROOT {
                return Ok(false);
            }
            dir = self
                .fs
                .lookup(dir, b"..")
                .map_err(|c| engine("look up", path, c))?
                .ok_or_else(|| engine_msg("rename", path, "a directory has no `..` entry"))?;
        }
        Err(engine_msg(
            "rename",
            path,
            "the `..` chain does not reach the root",
        ))
    }

    /// Can directory `dir` take one more subdirectory? Without dir_nlink its link count
    /// must stay below `EXT2_LINK_MAX`.
    fn check_room_for_subdir(&mut self, dir: u32, path: &str) -> Result<(), GuestFsError> {
        let links = self.read_inode(dir, path)?.links();
        if !self.dir_nlink && links != 1 && links + 1 >= ffi::LINK_MAX {
            return Err(engine_msg(
                "rename",
                path,
                "the target directory has too many subdirectories",
            ));
        }
        Ok(())
    }

    /// Add one to a directory's link count (for a new subdirectory), honouring dir_nlink:
    /// a count of 1 means "too many to count".
    fn inc_dir_links(&mut self, dir: u32, path: &str) -> Result<(), GuestFsError> {
        let mut inode = self.read_inode(dir, path)?;
        match inode.links() {
            1 => return Ok(()),
            n if n + 1 >= ffi::LINK_MAX => inode.set_links(1),
            n => inode.set_links(n + 1),
        }
        self.write_inode(dir, &inode, path)
    }

    fn dec_dir_links(&mut self, dir: u32, path: &str) -> Result<(), GuestFsError> {
        let mut inode = self.read_inode(dir, path)?;
        if inode.links() > 2 {
            inode.set_links(inode.links() - 1);
            self.write_inode(dir, &inode, path)?;
        }
        Ok(())
    }
}

/// One step of path resolution for [`crate::tree::resolve`]: nodes are inode numbers.
impl Walk for ExtFs {
    type Node = u32;
    type Error = GuestFsError;

    fn root(&mut self) -> Result<u32, GuestFsError> {
        Ok(ROOT)
    }

    fn lookup(
        &mut self,
        dir: &u32,
        name: &[u8],
        path: &str,
    ) -> Result<Option<(u32, Option<NodeKind>)>, GuestFsError> {
        self.lookup_entry(*dir, name, path)
    }

    fn link_target(&mut self, link: &u32, path: &str) -> Result<Vec<u8>, GuestFsError> {
        if let Some(target) = self.dcache.link(*link) {
            return Ok(target.to_vec());
        }
        let inode = self.read_inode(*link, path)?;
        let target = ExtFs::link_target(self, *link, &inode, path)?;
        self.dcache.set_link(*link, &target);
        Ok(target)
    }
}

/// Result of resolving a path.
struct Found {
    parent: u32,
    name: Vec<u8>,
    ino: Option<u32>,
}

impl TreeRead for ExtFs {
    type Error = GuestFsError;

    fn lstat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
        match self.resolve_existing(path, false)? {
            Some(ino) => {
                let inode = self.read_inode(ino, path)?;
                self.meta(ino, &inode, path).map(Some)
            }
            None => Ok(None),
        }
    }

    fn stat(&mut self, path: &str) -> Result<Option<NodeMeta>, GuestFsError> {
        match self.resolve_existing(path, true)? {
            Some(ino) => {
                let inode = self.read_inode(ino, path)?;
                self.meta(ino, &inode, path).map(Some)
            }
            None => Ok(None),
        }
    }

    fn read_file(&mut self, path: &str, cap: u64) -> Result<Option<Vec<u8>>, GuestFsError> {
        let Some(ino) = self.resolve_existing(path, true)? else {
            return Ok(None);
        };
        let inode = self.read_inode(ino, path)?;
        if kind_of(inode.mode()) != Some(NodeKind::File) {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        let size = inode.size();
        if size > cap {
            return Err(GuestFsError::TooLarge {
                path: path.into(),
                size,
                cap,
            });
        }
        self.read_data(ino, size, path).map(Some)
    }

    fn read_link(&mut self, path: &str) -> Result<Option<String>, GuestFsError> {
        let Some(ino) = self.resolve_existing(path, false)? else {
            return Ok(None);
        };
        let inode = self.read_inode(ino, path)?;
        if kind_of(inode.mode()) != Some(NodeKind::Symlink) {
            return Err(engine_msg("readlink", path, "not a symlink"));
        }
        let target = self.link_target(ino, &inode, path)?;
        String::from_utf8(target)
            .map(Some)
            .map_err(|_| engine_msg("readlink", path, "the target is not UTF-8"))
    }

    fn read_dir(&mut self, path: &str, cap: usize) -> Result<Option<Vec<DirItem>>, GuestFsError> {
        let Some(ino) = self.resolve_existing(path, true)? else {
            return Ok(None);
        };
        let inode = self.read_inode(ino, path)?;
        if kind_of(inode.mode()) != Some(NodeKind::Dir) {
            return Err(GuestFsError::NotADirectory { path: path.into() });
        }
        let mut entries: Vec<(String, u32)> = Vec::new();
        self.fs
            .dir_iterate(ino, &mut |e| {
                if e.name != b"." && e.name != b".." {
                    // Non-UTF-8 names cannot be named through this API (as in ExtReader).
                    if let Ok(name) = std::str::from_utf8(e.name) {
                        if entries.len() == cap {
                            // One past the cap is enough to refuse the directory.
                            entries.push((String::new(), 0));
                            return ffi::DirStep::Stop;
                        }
                        entries.push((name.to_string(), e.ino));
                    }
                }
                ffi::DirStep::Continue
            })
            .map_err(|c| engine("read directory", path, c))?;
        if entries.len() > cap {
            return Err(GuestFsError::TooManyEntries {
                path: path.into(),
                cap,
            });
        }
        entries.sort();
        let mut out = Vec::with_capacity(entries.len());
        for (name, child) in entries {
            let inode = self.read_inode(child, path)?;
            let kind = kind_of(inode.mode()).ok_or_else(|| {
                engine_msg(
                    "read directory",
                    path,
                    format!("entry {name} has an invalid inode mode {:o}", inode.mode()),
                )
            })?;
            out.push(DirItem { name, kind });
        }
        Ok(Some(out))
    }
}

impl GuestFs for ExtFs {
    fn mkdir_p(&mut self, path: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        let mut cur = String::new();
        for c in guestfs::components(path) {
            cur.push('/');
            cur.push_str(c);
            match self.stat(&cur)? {
                Some(m) if m.kind == NodeKind::Dir => {}
                Some(_) => return Err(GuestFsError::NotADirectory { path: cur }),
                None => self.mkdir_one(&cur, &attrs)?,
            }
        }
        Ok(())
    }

    fn create_file(
        &mut self,
        path: &str,
        content: &mut dyn Read,
        size: u64,
        attrs: NodeAttrs,
    ) -> Result<(), GuestFsError> {
        let (parent, name) = self.new_entry(path)?;
        let mode = ffi::S_IFREG | (attrs.mode & 0o7777);
        let ino = self
            .fs
            .new_inode(parent, mode)
            .map_err(|c| engine("allocate an inode for", path, c))?;
        self.with_room_in(parent, "link", path, |fs| {
            fs.link(parent, &name, ino, ffi::FT_REG_FILE)
        })?;
        self.dcache
            .added(parent, name.to_bytes(), ino, NodeKind::File);
        self.fs.inode_alloc_stats(ino, 1, false);

        let mut inode = Inode::zeroed();
        inode.set_mode(mode);
        inode.set_uid(attrs.uid);
        inode.set_gid(attrs.gid);
        inode.set_links(1);
        let low = encode_time(attrs.mtime, false);
        inode.set_raw_times([low; 3], [false; 3]);
        let result = (|| {
            if self.extents {
                self.fs
                    .init_extent_header(ino, &mut inode)
                    .map_err(|c| engine("set up extents for", path, c))?;
            }
            self.fs
                .write_new_inode(ino, &mut inode)
                .map_err(|c| engine("write the new inode of", path, c))?;
            self.fill_new_file(ino, content, size, &attrs, path)
        })();
        if result.is_err() {
            self.discard_new(parent, &name, ino, path);
        }
        result
    }

    fn replace_content(&mut self, path: &str, content: &[u8]) -> Result<(), GuestFsError> {
        let ino = match self.resolve(path, true)? {
            Found { ino: Some(ino), .. } => ino,
            _ => return Err(GuestFsError::NotFound { path: path.into() }),
        };
        let inode = self.read_inode(ino, path)?;
        if kind_of(inode.mode()) != Some(NodeKind::File) {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        self.truncate_to_zero(ino, &inode, path)?;
        let mut file = self
            .fs
            .open_file(ino, true)
            .map_err(|c| engine("open", path, c))?;
        file.write_all(content)
            .map_err(|c| engine("write", path, c))?;
        file.close().map_err(|c| engine("close", path, c))?;
        // Same inode, owner, mode and mtime (as MemFs); the change time says it changed.
        let mut inode = self.read_inode(ino, path)?;
        self.set_ctime_now(&mut inode);
        self.write_inode(ino, &inode, path)
    }

    fn symlink(&mut self, path: &str, target: &str, attrs: NodeAttrs) -> Result<(), GuestFsError> {
        let (parent, name) = self.new_entry(path)?;
        if target.is_empty() {
            return Err(engine_msg("symlink", path, "empty symlink target"));
        }
        let max = SYMLINK_MAX.min(u64::from(self.block_size)) - 1;
        if target.len() as u64 > max {
            return Err(engine_msg(
                "symlink",
                path,
                format!("the target is {} bytes, more than {max}", target.len()),
            ));
        }
        let c_target = CString::new(target)
            .map_err(|_| engine_msg("symlink", path, "the target contains a NUL byte"))?;
        let ino = self
            .fs
            .new_inode(parent, ffi::S_IFLNK | 0o777)
            .map_err(|c| engine("allocate an inode for", path, c))?;
        self.with_room_in(parent, "symlink", path, |fs| {
            fs.symlink(parent, ino, &name, &c_target)
        })?;
        self.dcache
            .added(parent, name.to_bytes(), ino, NodeKind::Symlink);
        self.apply_attrs(ino, ffi::S_IFLNK, &attrs, path)
    }

    /// Rename within the filesystem (see the module documentation).
    fn rename(&mut self, from: &str, to: &str) -> Result<(), GuestFsError> {
        let src = self.resolve(from, false)?;
        let ino = src
            .ino
            .ok_or_else(|| GuestFsError::NotFound { path: from.into() })?;
        if src.name.is_empty() {
            return Err(engine_msg("rename", from, "cannot rename the root or `..`"));
        }
        let src_name = entry_name(&src.name, from)?;
        let (dst_parent, dst_name) = self.new_entry(to)?;
        let inode = self.read_inode(ino, from)?;
        let kind = kind_of(inode.mode())
            .ok_or_else(|| engine_msg("rename", from, "the inode has an invalid mode"))?;
        let moves_dir = kind == NodeKind::Dir && src.parent != dst_parent;
        if kind == NodeKind::Dir && self.is_within(dst_parent, ino, to)? {
            return Err(engine_msg(
                "rename",
                from,
                format!("cannot move a directory inside itself ({to})"),
            ));
        }
        if moves_dir {
            self.check_room_for_subdir(dst_parent, to)?;
        }
        self.with_room_in(dst_parent, "link", to, |fs| {
            fs.link(dst_parent, &dst_name, ino, file_type(kind))
        })?;
        self.dcache
            .added(dst_parent, dst_name.to_bytes(), ino, kind);
        if moves_dir {
            self.inc_dir_links(dst_parent, to)?;
        }
        self.fs
            .unlink(src.parent, &src_name, ino)
            .map_err(|c| engine("unlink", from, c))?;
        self.dcache.removed(src.parent, src_name.to_bytes());
        if moves_dir {
            let mut found = false;
            self.fs
                .dir_iterate(ino, &mut |e| {
                    if e.name == b".." {
                        found = true;
                        ffi::DirStep::SetInodeAndStop(dst_parent)
                    } else {
                        ffi::DirStep::Continue
                    }
                })
                .map_err(|c| engine("update `..` of", to, c))?;
            if !found {
                return Err(engine_msg(
                    "rename",
                    from,
                    "the directory has no `..` entry",
                ));
            }
            self.dec_dir_links(src.parent, from)?;
        }
        Ok(())
    }

    /// Remove a file, symlink or special file (see the module documentation); hard links
    /// keep the inode alive.
    fn remove(&mut self, path: &str) -> Result<(), GuestFsError> {
        let found = self.resolve(path, false)?;
        let ino = found
            .ino
            .ok_or_else(|| GuestFsError::NotFound { path: path.into() })?;
        let inode = self.read_inode(ino, path)?;
        if found.name.is_empty() || kind_of(inode.mode()) == Some(NodeKind::Dir) {
            return Err(GuestFsError::IsADirectory { path: path.into() });
        }
        let name = entry_name(&found.name, path)?;
        self.fs
            .unlink(found.parent, &name, ino)
            .map_err(|c| engine("unlink", path, c))?;
        self.dcache.removed(found.parent, name.to_bytes());
        self.drop_link(ino, path)
    }
}

/// Read until `buf` is full or the source ends; returns the bytes read.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A directory entry name: 1..=255 bytes, no NUL (the path split already removed `/`).
fn entry_name(name: &[u8], path: &str) -> Result<CString, GuestFsError> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(engine_msg(
            "name",
            path,
            format!("a file name must be 1 to {NAME_MAX} bytes long"),
        ));
    }
    CString::new(name).map_err(|_| engine_msg("name", path, "the name contains a NUL byte"))
}

fn kind_of(mode: u16) -> Option<NodeKind> {
    Some(match mode & ffi::S_IFMT {
        ffi::S_IFREG => NodeKind::File,
        ffi::S_IFDIR => NodeKind::Dir,
        ffi::S_IFLNK => NodeKind::Symlink,
        ffi::S_IFCHR => NodeKind::CharDev,
        ffi::S_IFBLK => NodeKind::BlockDev,
        ffi::S_IFIFO => NodeKind::Fifo,
        ffi::S_IFSOCK => NodeKind::Socket,
        _ => return None,
    })
}

/// The directory-entry file type for a node kind (`filetype` feature).
fn file_type(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::File => ffi::FT_REG_FILE,
        NodeKind::Dir => ffi::FT_DIR,
        NodeKind::Symlink => ffi::FT_SYMLINK,
        NodeKind::CharDev => ffi::FT_CHRDEV,
        NodeKind::BlockDev => ffi::FT_BLKDEV,
        NodeKind::Fifo => ffi::FT_FIFO,
        NodeKind::Socket => ffi::FT_SOCK,
    }
}

/// Seconds since the epoch now (0 if the clock is before 1970).
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Encode seconds as ext4 does: the low 32 bits as a signed value, plus two epoch bits in
/// the `_extra` field (nanoseconds 0) when the inode has room for it, which extends the
/// range to 2446. Out-of-range times are clamped, as the kernel does.
fn encode_time(t: i64, with_extra: bool) -> (u32, u32) {
    let min = i64::from(i32::MIN);
    let max = if with_extra {
        i64::from(i32::MAX) + (3 << 32)
    } else {
        i64::from(i32::MAX)
    };
    let t = t.clamp(min, max);
    let low = t as i32;
    let epoch = (((t - i64::from(low)) >> 32) & 3) as u32;
    (low as u32, if with_extra { epoch } else { 0 })
}

/// Inverse of [`encode_time`].
fn decode_time((low, extra): (u32, u32), with_extra: bool) -> i64 {
    let base = i64::from(low as i32);
    if with_extra {
        base + (i64::from(extra & 3) << 32)
    } else {
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_through_the_ext4_encoding() {
        for t in [
            0,
            1,
            -1,
            1_700_000_000,
            i64::from(i32::MAX),
            1 << 31,
            1 << 33,
        ] {
            assert_eq!(decode_time(encode_time(t, true), true), t, "{t}");
        }
        assert_eq!(encode_time(1 << 31, true), (0x8000_0000, 1));
        // Without the extra field the range ends in 2038.
        assert_eq!(
            decode_time(encode_time(1 << 33, false), false),
            i64::from(i32::MAX)
        );
        assert_eq!(decode_time(encode_time(-5, false), false), -5);
    }

    #[test]
    fn entry_names_are_checked() {
        assert!(entry_name(b"ok", "/ok").is_ok());
        assert!(entry_name(&[b'a'; 256], "/x").is_err());
        assert!(entry_name(b"a\0b", "/x").is_err());
        assert!(entry_name(b"", "/").is_err());
    }

    #[test]
    fn error_text_comes_from_libext2fs() {
        let text = ffi::error_text(ffi::ET_DIR_NO_SPACE);
        assert!(text.contains("No free space in the directory"), "{text}");
        assert_eq!(
            ffi::error_text(Errcode::from(libc::ENOENT)),
            "No such file or directory"
        );
    }
}
