//! Compressed images (`.img.gz`, `.xz`, `.zst`, and a compressed XVA): gzip (RFC 1952),
//! xz (the `.xz` file format, magic `FD 37 7A 58 5A 00`) and zstd (RFC 8878, magic
//! `28 B5 2F FD`).
//!
//! These streams offer no random access, so the image is decompressed once into a
//! scratch file: sparse (64 KiB blocks of zeros are left as holes, so it takes the space
//! of the data, not of the disk), in the directory the caller names (beside the output),
//! and unlinked the moment it is created, so it disappears on every exit path, a crash
//! included. What was decompressed is then recognised again (an XVA, a qcow2, a raw disk).

use super::{FormatError, Kind, MemberDisk, OpenOptions, Opened};
use crate::blockio::{BlockSource, Region, SourceFormat};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// The unit of hole detection in the scratch copy.
const BLOCK: usize = 64 << 10;

/// A decompressed image: the scratch copy's source, labelled with the compression.
#[derive(Debug)]
pub struct Decompressed {
    inner: Region,
    compression: &'static str,
    bytes: u64,
    data: u64,
}

/// Decompress `file` (of kind `kind`) into a scratch file and open what it holds.
pub fn open(
    file: File,
    path: &Path,
    kind: Kind,
    opts: &OpenOptions,
    depth: usize,
) -> Result<Opened, FormatError> {
    let (name, mut reader): (&'static str, Box<dyn Read>) = match kind {
        Kind::Gzip => ("gzip", Box::new(flate2::read::MultiGzDecoder::new(file))),
        Kind::Xz => (
            "xz",
            Box::new(xz2::read::XzDecoder::new_multi_decoder(file)),
        ),
        Kind::Zstd => (
            "zstd",
            Box::new(
                zstd::stream::read::Decoder::new(file)
                    .map_err(|e| FormatError::io("cannot read", path, e))?,
            ),
        ),
        _ => {
            return Err(FormatError::corrupt(
                path,
                "compressed",
                "not a compressed stream",
            ));
        }
    };
    let dir = opts.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = tempfile::tempfile_in(&dir)
        .map_err(|e| FormatError::io("cannot create a scratch file in", &dir, e))?;
    let mut buf = vec![0u8; BLOCK];
    let mut at = 0u64;
    let mut data = 0u64;
    loop {
        let n = fill(&mut reader, &mut buf).map_err(|e| {
            FormatError::corrupt(
                path,
                name,
                format!("the {name} stream does not decompress at byte {at} of its output: {e}"),
            )
        })?;
        if n == 0 {
            break;
        }
        if !crate::bytes::is_zero(&buf[..n]) {
            scratch
                .write_all_at(&buf[..n], at)
                .map_err(|e| FormatError::io("cannot write the scratch copy in", &dir, e))?;
            data += n as u64;
        }
        at += n as u64;
    }
    scratch
        .set_len(at)
        .map_err(|e| FormatError::io("cannot write the scratch copy in", &dir, e))?;
    let inner = super::open_file(scratch, path, opts, depth + 1)?;
    let wrap = |region: Region| {
        Region::whole(
            Arc::new(Decompressed {
                inner: region,
                compression: name,
                bytes: at,
                data,
            }),
            path,
        )
    };
    Ok(Opened {
        region: wrap(inner.region),
        id: inner.id,
        vm: inner.vm,
        others: inner
            .others
            .into_iter()
            .map(|m| MemberDisk {
                region: wrap(m.region),
                ..m
            })
            .collect(),
    })
}

/// Read until `buf` is full or the stream ends; the count read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl BlockSource for Decompressed {
    fn size(&self) -> u64 {
        self.inner.len()
    }

    fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact_at(pos, buf)
    }

    fn format(&self) -> SourceFormat {
        let inner = self.inner.format();
        SourceFormat {
            kind: self.compression,
            details: format!(
                "{} decompressed into an unlinked sparse scratch file ({} bytes, {} of them data); holds {}{}",
                self.compression,
                self.bytes,
                self.data,
                inner.kind,
                if inner.details.is_empty() {
                    String::new()
                } else {
                    format!(": {}", inner.details)
                }
            ),
        }
    }

    fn data_ranges(&self, pos: u64, len: u64) -> Option<Vec<(u64, u64)>> {
        self.inner.data_ranges(pos, len)
    }

    fn plain_file(&self) -> Option<&File> {
        // Offsets only match when the scratch copy is the disk itself (raw inside).
        if self.inner.offset() == 0 {
            self.inner.plain_file()
        } else {
            None
        }
    }
}
