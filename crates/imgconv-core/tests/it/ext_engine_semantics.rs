//! ExtFs must behave exactly like MemFs (the GuestFs model graft and fixups are tested
//! against): the same sequence of operations, including the failing ones, gives the same
//! results on both. Also: guest symlinks never reach the host.

use crate::support::ext_fixture as ext_engine_util;

use ext_engine_util::*;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::guestfs::NodeKind;
use imgconv_core::guestfs::{GuestFs, GuestFsError, MemFs, NodeAttrs};

/// An outcome reduced to what both implementations must agree on.
fn outcome<T: std::fmt::Debug>(r: Result<T, GuestFsError>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(GuestFsError::NotFound { path }) => format!("NotFound {path}"),
        Err(GuestFsError::AlreadyExists { path }) => format!("AlreadyExists {path}"),
        Err(GuestFsError::NotADirectory { path }) => format!("NotADirectory {path}"),
        Err(GuestFsError::SymlinkLoop { path }) => format!("SymlinkLoop {path}"),
        Err(GuestFsError::IsADirectory { path }) => format!("IsADirectory {path}"),
        Err(GuestFsError::TooLarge { path, size, cap }) => format!("TooLarge {path} {size} {cap}"),
        Err(GuestFsError::TooManyEntries { path, cap }) => format!("TooManyEntries {path} {cap}"),
        Err(GuestFsError::Engine { op, path, .. }) => format!("Engine {op} {path}"),
        Err(GuestFsError::NoSpace { op, path, .. }) => format!("NoSpace {op} {path}"),
        Err(GuestFsError::Source { path, source }) => format!("Source {path} {:?}", source.kind()),
    }
}

/// stat reduced to kind and (for non-directories) length: the fixture's own files have
/// host modes and times in the image but root/0 in MemFs.
fn stat_view(r: Result<Option<imgconv_core::guestfs::NodeMeta>, GuestFsError>) -> String {
    outcome(r.map(|m| {
        m.map(|m| {
            let len = if m.kind == NodeKind::Dir { 0 } else { m.len };
            (m.kind, len)
        })
    }))
}

/// Entries that exist only in the image fixture (MemFs has no hard links, no htree).
const IMAGE_ONLY: [&str; 5] = ["bigdir", "var", "lost+found", "hostname.hard", "old-config"];

fn dir_view(r: Result<Option<Vec<imgconv_core::guestfs::DirItem>>, GuestFsError>) -> String {
    outcome(r.map(|d| {
        d.map(|items| {
            items
                .into_iter()
                .filter(|i| !IMAGE_ONLY.contains(&i.name.as_str()))
                .map(|i| (i.name, i.kind))
                .collect::<Vec<_>>()
        })
    }))
}

/// Apply one scripted step to a GuestFs and describe the result.
fn step(fs: &mut dyn GuestFs, op: &str, a: &str, b: &str) -> String {
    let attrs = NodeAttrs {
        mode: 0o640,
        uid: 100_000,
        gid: 7,
        mtime: 1_234_567_890,
    };
    match op {
        "stat" => stat_view(fs.stat(a)),
        "lstat" => stat_view(fs.lstat(a)),
        "read" => outcome(fs.read_file(a, 1 << 20)),
        "read_capped" => outcome(fs.read_file(a, 3)),
        "readlink" => outcome(fs.read_link(a)),
        "readdir" => dir_view(fs.read_dir(a, 100_000)),
        "mkdir" => outcome(fs.mkdir_p(a, attrs)),
        "create" => outcome(fs.create_file(a, &mut b.as_bytes(), b.len() as u64, attrs)),
        "create_short" => outcome(fs.create_file(a, &mut b.as_bytes(), b.len() as u64 + 10, attrs)),
        "replace" => outcome(fs.replace_content(a, b.as_bytes())),
        "symlink" => outcome(fs.symlink(a, b, attrs)),
        "rename" => outcome(fs.rename(a, b)),
        "remove" => outcome(fs.remove(a)),
        "attrs" => outcome(
            fs.lstat(a)
                .map(|m| m.map(|m| (m.mode, m.uid, m.gid, m.mtime))),
        ),
        _ => panic!("unknown op {op}"),
    }
}

#[test]
fn extfs_matches_memfs_step_by_step() {
    let fx = small_fixture(Kind::Ext4, "256M");
    // A host file that a guest symlink names: it must never be reached.
    let host_secret = fx.dir.path().join("host-secret");
    std::fs::write(&host_secret, "host data").unwrap();
    let host_secret = host_secret.to_str().unwrap().to_string();

    let mut mem = MemFs::new()
        .with_file("/etc/fstab", FSTAB)
        .with_file("/etc/hostname", "xenguest\n")
        .with_file("/usr/lib/modules/x", "module x\n")
        .with_symlink("/lib", "usr/lib")
        .with_symlink("/etc/abs", "/usr/lib/modules/x")
        .with_symlink("/etc/escape", "../../../../usr/lib/modules/x");
    // MemFs::with_file makes /usr/lib/modules with mode 0755 like mkfs -d does.
    let mut ext = ExtFs::open(&fx.img, 0).unwrap();

    let script: Vec<(&str, &str, &str)> = vec![
        // Resolution inside the guest.
        ("read", "/lib/modules/x", ""),
        ("read", "/etc/escape", ""),
        ("read", "/etc/abs", ""),
        ("read", "/../../etc/fstab", ""),
        ("read", "/etc/../../../etc/./fstab", ""),
        ("stat", "/lib", ""),
        ("lstat", "/lib", ""),
        ("stat", "/", ""),
        ("stat", "/..", ""),
        ("stat", "/etc/fstab/x", ""),
        ("stat", "/nonexistent/x", ""),
        ("lstat", "/etc/nonexistent", ""),
        ("read", "/etc", ""),
        ("read", "/etc/missing", ""),
        ("read_capped", "/etc/fstab", ""),
        ("readlink", "/etc/fstab", ""),
        ("readlink", "/lib", ""),
        ("readlink", "/missing", ""),
        ("readdir", "/", ""),
        ("readdir", "/lib/modules", ""),
        ("readdir", "/etc/fstab", ""),
        ("readdir", "/nope", ""),
        // Guest symlinks to host paths stay in the guest.
        ("symlink", "/etc/hostlink", host_secret.as_str()),
        ("read", "/etc/hostlink", ""),
        ("stat", "/etc/hostlink", ""),
        ("symlink", "/etc/hostdir", "/tmp"),
        ("readdir", "/etc/hostdir", ""),
        ("create", "/etc/hostlink", "x"),
        // Loops.
        ("mkdir", "/loop", ""),
        ("symlink", "/loop/a", "b"),
        ("symlink", "/loop/b", "/loop/a"),
        ("read", "/loop/a", ""),
        ("stat", "/loop/b/x", ""),
        ("lstat", "/loop/a", ""),
        ("symlink", "/loop/self", "self/x"),
        ("stat", "/loop/self", ""),
        ("mkdir", "/loop/a/sub", ""),
        // mkdir -p, through symlinks, over files and dangling links.
        ("mkdir", "/lib/modules/6.1/kernel/drivers", ""),
        ("stat", "/usr/lib/modules/6.1/kernel/drivers", ""),
        ("attrs", "/usr/lib/modules/6.1/kernel", ""),
        ("mkdir", "/lib/modules/6.1", ""),
        ("mkdir", "/etc/fstab/sub", ""),
        ("symlink", "/dangling", "/no/such/dir"),
        ("mkdir", "/dangling", ""),
        ("mkdir", "/", ""),
        // Files.
        ("create", "/lib/modules/6.1/a.ko", "abc"),
        ("attrs", "/lib/modules/6.1/a.ko", ""),
        ("create", "/lib/modules/6.1/a.ko", "abc"),
        ("create", "/missing-dir/a", "abc"),
        ("create", "/etc/fstab/a", "abc"),
        ("create", "/", "abc"),
        ("create", "/etc/..", "abc"),
        ("create", "/lib", "abc"),
        ("create_short", "/etc/short", "abc"),
        ("stat", "/etc/short", ""),
        ("create", "/etc/empty", ""),
        ("read", "/etc/empty", ""),
        // Replace in place.
        ("replace", "/etc/abs", "new x through a symlink\n"),
        ("read", "/usr/lib/modules/x", ""),
        ("replace", "/etc/nothing", "x"),
        ("replace", "/etc", "x"),
        ("replace", "/etc/fstab", ""),
        ("read", "/etc/fstab", ""),
        // Symlinks.
        ("symlink", "/etc/fstab", "x"),
        ("symlink", "/etc/rel", "../lib/modules/6.1/a.ko"),
        ("read", "/etc/rel", ""),
        ("readlink", "/etc/rel", ""),
        ("attrs", "/etc/rel", ""),
        // Renames.
        ("rename", "/etc/missing", "/etc/x"),
        ("rename", "/etc/hostname", "/etc/fstab"),
        ("rename", "/etc/hostname", "/etc/hostname.imgconv-orig"),
        ("read", "/etc/hostname.imgconv-orig", ""),
        ("stat", "/etc/hostname", ""),
        ("rename", "/lib/modules/6.1", "/opt-moved"),
        ("rename", "/lib/modules/6.1/a.ko", "/x"),
        ("read", "/opt-moved/a.ko", ""),
        ("readdir", "/opt-moved", ""),
        ("rename", "/etc/rel", "/opt-moved/rel"),
        ("lstat", "/opt-moved/rel", ""),
        ("rename", "/etc/escape", "/missing-dir/x"),
        // Removal.
        ("remove", "/etc", ""),
        ("remove", "/", ""),
        ("remove", "/etc/missing", ""),
        ("remove", "/lib", ""),
        ("stat", "/lib", ""),
        ("stat", "/usr/lib/modules/x", ""),
        ("remove", "/opt-moved/a.ko", ""),
        ("readdir", "/opt-moved", ""),
        ("remove", "/loop/a", ""),
        ("lstat", "/loop/a", ""),
        ("readdir", "/", ""),
        ("readdir", "/etc", ""),
    ];

    for (op, a, b) in &script {
        let m = step(&mut mem, op, a, b);
        let e = step(&mut ext, op, a, b);
        assert_eq!(e, m, "{op} {a} {b}: ExtFs differs from MemFs");
    }
    ext.close().unwrap();
    fx.assert_fsck_clean();

    // Spot-check the host file was never touched or read into the guest.
    assert_eq!(std::fs::read_to_string(&host_secret).unwrap(), "host data");
}
