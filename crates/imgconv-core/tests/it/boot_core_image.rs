//! core.img built in Rust against `grub-mkimage -O i386-pc` of the same module directory
//! (the host's /usr/lib/grub/i386-pc, Debian grub-pc-bin): the decoded payloads (flat
//! kernel + module area) must be byte-identical; the compressed bytes differ (another
//! LZMA encoder), and so do the fields that hold their size.

use imgconv_core::boot::grub_bios::core_image::{
    read_core_image, CoreContents, DECOMPRESSOR_COMPRESSED_SIZE, FIRST_BLOCKLIST, OBJ_TYPE_ELF,
    OBJ_TYPE_PREFIX, SECTOR,
};
use imgconv_core::boot::{build_core_image, GrubPlatformFiles, HOST_I386_PC_DIR};
use std::path::Path;
use std::process::Command;

fn host_files() -> GrubPlatformFiles {
    assert!(
        Path::new(HOST_I386_PC_DIR).join("kernel.img").exists(),
        "{HOST_I386_PC_DIR} is missing: install grub-pc-bin (scripts/setup)"
    );
    GrubPlatformFiles::host_i386_pc().unwrap()
}

fn grub_mkimage(prefix: &str, modules: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("core.img");
    let status = Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-d", HOST_I386_PC_DIR, "-p", prefix, "-o"])
        .arg(&out)
        .args(modules)
        .status()
        .expect("grub-mkimage (grub-pc-bin / grub-common) is needed: run scripts/setup");
    assert!(status.success(), "grub-mkimage failed");
    std::fs::read(out).unwrap()
}

fn elf_names(c: &CoreContents) -> Vec<String> {
    c.records
        .iter()
        .filter(|r| r.kind == OBJ_TYPE_ELF)
        .map(|r| r.module_name().expect("module record has a .modname"))
        .collect()
}

fn compare(prefix: &str, modules: &[&str]) -> (CoreContents, Vec<String>) {
    let files = host_files();
    let ours = build_core_image(&files, prefix, modules).unwrap();
    let theirs = grub_mkimage(prefix, modules);

    let a = read_core_image(&files, &ours.bytes).unwrap();
    let b = read_core_image(&files, &theirs).unwrap();
    assert_eq!(a.uncompressed_size, b.uncompressed_size);
    assert_eq!(a.total_module_size, b.total_module_size);
    assert_eq!(elf_names(&a), elf_names(&b), "module order");
    assert!(a.payload == b.payload, "decoded payloads differ");
    assert_eq!(ours.modules, elf_names(&b));
    assert_eq!(ours.uncompressed_size(), b.uncompressed_size);

    // Every ELF record is its .mod file verbatim, padded to 4 bytes with zeros.
    for r in a.records.iter().filter(|r| r.kind == OBJ_TYPE_ELF) {
        let name = r.module_name().unwrap();
        let file = files.get(&format!("{name}.mod")).unwrap();
        assert_eq!(&r.payload[..file.len()], file, "{name}");
        assert!(r.payload[file.len()..].iter().all(|&b| b == 0));
        assert_eq!(r.payload.len(), file.len().div_ceil(4) * 4);
    }
    let prefixes: Vec<String> = a
        .records
        .iter()
        .filter(|r| r.kind == OBJ_TYPE_PREFIX)
        .map(|r| r.text().unwrap())
        .collect();
    assert_eq!(prefixes, [prefix]);
    assert_eq!(
        a.records.last().unwrap().kind,
        OBJ_TYPE_PREFIX,
        "prefix last"
    );

    // The sectors around the payload: diskboot identical but for the blocklist length
    // (each counts its own compressed size); the decompressor identical but for the
    // compressed size field.
    let mut da = ours.bytes[..SECTOR].to_vec();
    let mut db = theirs[..SECTOR].to_vec();
    let len_at = FIRST_BLOCKLIST + 8;
    for (d, total) in [(&mut da, ours.bytes.len()), (&mut db, theirs.len())] {
        let len = u16::from_le_bytes([d[len_at], d[len_at + 1]]) as usize;
        assert_eq!(len, (total - SECTOR).div_ceil(SECTOR), "blocklist len");
        d[len_at..len_at + 2].fill(0);
    }
    assert_eq!(da, db, "diskboot sector");
    let dsize = files.get("lzma_decompress.img").unwrap().len();
    let mut xa = ours.bytes[SECTOR..SECTOR + dsize].to_vec();
    let mut xb = theirs[SECTOR..SECTOR + dsize].to_vec();
    let cs = DECOMPRESSOR_COMPRESSED_SIZE;
    assert_eq!(
        u32::from_le_bytes(xa[cs..cs + 4].try_into().unwrap()) as usize,
        ours.bytes.len() - SECTOR - dsize
    );
    xa[cs..cs + 4].fill(0);
    xb[cs..cs + 4].fill(0);
    assert_eq!(xa, xb, "decompressor");
    (a, elf_names(&b))
}

/// The reference: `grub-mkimage -O i386-pc -p '(,msdos1)/boot/grub' biosdisk
/// part_msdos ext2`.
#[test]
fn same_payload_as_grub_mkimage_for_biosdisk_part_msdos_ext2() {
    let (contents, names) = compare("(,msdos1)/boot/grub", &["biosdisk", "part_msdos", "ext2"]);
    assert_eq!(names, ["biosdisk", "part_msdos", "fshelp", "ext2"]);
    assert_eq!(contents.records.len(), 5);
}

/// A bigger set with modules that have several dependencies, to check the order
/// (resolve.c visits a module's deps in reverse line order) on real moddep.lst data.
#[test]
fn same_payload_as_grub_mkimage_for_a_larger_module_set() {
    let (_, names) = compare(
        "(,gpt2)/boot/grub",
        &[
            "biosdisk",
            "part_gpt",
            "ext2",
            "normal",
            "linux",
            "search",
            "configfile",
            "echo",
        ],
    );
    assert!(names.len() > 15, "{names:?}");
    let pos = |m: &str| names.iter().position(|n| n == m).unwrap();
    assert!(pos("fshelp") < pos("ext2"));
    assert!(pos("normal") < pos("linux"));
}

/// Our LZMA stream is about as small as grub-mkimage's (same sector count, give or take
/// one), so our core.img fits wherever theirs does.
#[test]
fn size_close_to_grub_mkimage() {
    let files = host_files();
    let mods = ["biosdisk", "part_msdos", "ext2"];
    let ours = build_core_image(&files, "(,msdos1)/boot/grub", &mods).unwrap();
    let theirs = grub_mkimage("(,msdos1)/boot/grub", &mods);
    let (a, b) = (ours.sectors(), theirs.len().div_ceil(SECTOR) as u64);
    assert!(
        a <= b + 1,
        "ours {} bytes, grub-mkimage {} bytes",
        ours.bytes.len(),
        theirs.len()
    );
}

/// Placing core.img elsewhere (a GPT BIOS boot partition) only moves the blocklist start.
#[test]
fn for_lba_sets_one_contiguous_run() {
    let files = host_files();
    let core = build_core_image(
        &files,
        "(,gpt1)/boot/grub",
        &["biosdisk", "part_gpt", "ext2"],
    )
    .unwrap();
    for lba in [1u64, 34, 2048] {
        let img = core.for_lba(lba).unwrap();
        assert_eq!(img.len() as u64, core.sectors() * SECTOR as u64);
        let bl = &img[FIRST_BLOCKLIST..SECTOR];
        assert_eq!(u64::from_le_bytes(bl[..8].try_into().unwrap()), lba + 1);
        assert_eq!(
            u16::from_le_bytes([bl[8], bl[9]]) as u64,
            core.sectors() - 1
        );
        assert_eq!(u16::from_le_bytes([bl[10], bl[11]]), 0x820);
        assert_eq!(
            &img[FIRST_BLOCKLIST - 12..FIRST_BLOCKLIST],
            &[0; 12],
            "terminator"
        );
        assert_eq!(&img[SECTOR..core.bytes.len()], &core.bytes[SECTOR..]);
    }
}

/// Broken or incomplete module directories give typed errors naming the problem.
#[test]
fn broken_module_directories_are_typed_errors() {
    use imgconv_core::boot::BootError;
    let good = host_files();
    let build = |files: &GrubPlatformFiles, mods: &[&str]| {
        build_core_image(files, "(,msdos1)/boot/grub", mods).unwrap_err()
    };
    let mods = ["biosdisk", "part_msdos", "ext2"];

    let mut f = good.clone();
    f.files.remove("fshelp.mod");
    match build(&f, &mods) {
        BootError::MissingModuleFile { module, .. } => assert_eq!(module, "fshelp"),
        e => panic!("{e}"),
    }
    assert!(matches!(
        build(&good, &["biosdisk", "no_such_fs"]),
        BootError::UnknownModule { .. }
    ));

    for cut in [0, 20, 52, 1000, good.get("kernel.img").unwrap().len() - 1] {
        let mut f = good.clone();
        f.files.get_mut("kernel.img").unwrap().truncate(cut);
        let e = build(&f, &mods);
        assert!(matches!(e, BootError::Kernel(_)), "cut {cut}: {e}");
    }
    let mut f = good.clone();
    f.files
        .insert("ext2.mod".into(), good.get("fshelp.mod").unwrap().to_vec());
    assert!(
        matches!(build(&f, &mods), BootError::BadModule { .. }),
        "ext2.mod that is fshelp"
    );
    let mut f = good.clone();
    f.files.insert("lzma_decompress.img".into(), vec![0; 0xE01]);
    assert!(matches!(
        build(&f, &mods),
        BootError::ImageFormat {
            file: "lzma_decompress.img",
            ..
        }
    ));
    let mut f = good.clone();
    f.files.get_mut("diskboot.img").unwrap().push(0);
    assert!(matches!(
        build(&f, &mods),
        BootError::ImageFormat {
            file: "diskboot.img",
            ..
        }
    ));
    let mut f = good.clone();
    f.files.remove("moddep.lst");
    assert!(matches!(
        build(&f, &mods),
        BootError::GrubFiles(imgconv_core::grub_files::GrubFilesError::MissingFile { .. })
    ));
    assert!(matches!(
        build_core_image(&good, "boot/grub\n", &mods),
        Err(BootError::BadPrefix { .. })
    ));
}

/// Too many modules for the space below 0x78000: refused with the limit in the message.
#[test]
fn oversized_core_is_refused() {
    use imgconv_core::boot::BootError;
    let files = host_files();
    let all: Vec<&str> = files.module_names().collect();
    match build_core_image(&files, "(,msdos1)/boot/grub", &all) {
        Err(e @ BootError::CoreTooBig { .. }) => assert!(e.to_string().contains("0x78000"), "{e}"),
        other => panic!("{:?}", other.map(|c| c.bytes.len())),
    }
}
