//! Files above 4 GiB: 64-bit sizes (i_size_high), triple-indirect block maps on ext3 and
//! extents on ext4, written from a stream with fixed buffers (the zero middle becomes a
//! hole, so the test image stays small). Checked with e2fsck, debugfs stat and debugfs
//! bmap plus the raw bytes at the mapped blocks.

use crate::support::ext_fixture as ext_engine_util;

use ext_engine_util::*;
use imgconv_core::ext::write::ExtFs;
use imgconv_core::guestfs::{GuestFs, NodeAttrs, TreeRead};
use std::io::{Read, Seek, SeekFrom};

const HEAD: usize = 1 << 20;
const TAIL: usize = (1 << 20) + 123;
const SIZE: u64 = (9 << 29) + 123; // 4.5 GiB + 123 bytes

#[test]
fn a_file_over_4_gib_on_ext3_and_ext4() {
    for kind in [Kind::Ext3, Kind::Ext4] {
        let fx = fixture_full(kind, "512M", 0, &["-b", "4096"], 10);
        let head = pattern(1, HEAD);
        let tail = pattern(2, TAIL);
        let middle = SIZE - (HEAD + TAIL) as u64;
        let mut content = (&head[..])
            .chain(std::io::repeat(0).take(middle))
            .chain(&tail[..]);
        let mut fs = ExtFs::open(&fx.img, 0).unwrap();
        let attrs = NodeAttrs::root(0o644, 1_700_000_000);
        fs.create_file("/big", &mut content, SIZE, attrs).unwrap();
        assert_eq!(fs.stat("/big").unwrap().unwrap().len, SIZE);
        fs.close().unwrap();

        fx.assert_fsck_clean();
        let st = fx.stat("/big");
        assert_eq!(st.size, SIZE, "{kind:?}");
        // 2 MiB of data plus at most a few dozen mapping blocks.
        let data_sectors = ((HEAD + TAIL) as u64).div_ceil(4096) * 8;
        assert!(
            st.blockcount >= data_sectors && st.blockcount < data_sectors + 64 * 8,
            "{kind:?}: {} sectors",
            st.blockcount
        );

        // Find the first and the last logical block with debugfs and read them raw.
        let last = (SIZE - 1) / 4096;
        let out = fx.debugfs(&["bmap /big 0".into(), format!("bmap /big {last}")]);
        let phys: Vec<u64> = out.iter().map(|o| o.trim().parse().unwrap()).collect();
        let mut img = std::fs::File::open(&fx.img).unwrap();
        let mut block = vec![0u8; 4096];
        img.seek(SeekFrom::Start(phys[0] * 4096)).unwrap();
        img.read_exact(&mut block).unwrap();
        assert_eq!(block, head[..4096], "{kind:?}: first block");
        img.seek(SeekFrom::Start(phys[1] * 4096)).unwrap();
        img.read_exact(&mut block).unwrap();
        let in_last = ((SIZE - 1) % 4096 + 1) as usize;
        assert_eq!(
            block[..in_last],
            tail[TAIL - in_last..],
            "{kind:?}: last block"
        );
        assert!(
            block[in_last..].iter().all(|&b| b == 0),
            "{kind:?}: past EOF"
        );
        // A block in the middle is a hole.
        let out = fx.debugfs(&[format!("bmap /big {}", last / 2)]);
        assert_eq!(out[0].trim(), "0", "{kind:?}: the zero middle is a hole");
    }
}
