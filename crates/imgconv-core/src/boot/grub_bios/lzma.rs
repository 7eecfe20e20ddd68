//! Raw LZMA1 as GRUB's i386-pc decompressor reads it.
//!
//! `grub-mkimage` (util/mkimage.c `compress_kernel_lzma`) compresses the kernel and
//! module area with the LZMA SDK: lc=3, lp=0, pb=2, 64 KiB dictionary, no properties
//! header, no size field, no end marker. `lzma_decompress.img` (`lzma_decode.S` with
//! `FIXED_PROPS`) decodes exactly `uncompressed_size` bytes, so any conforming raw LZMA1
//! stream with those properties works, and a trailing end-of-payload marker is never read.
//!
//! xz2 0.1.7 exposes liblzma's `.lzma` ("LZMA_Alone") encoder but not its raw encoder. An
//! `.lzma` file is a 13-byte header (properties byte, dictionary size, uncompressed size)
//! followed by exactly such a raw stream, so we encode with it and drop the header;
//! decoding goes the other way, putting a header with the known size in front.

use super::super::BootError;
use std::io::{Cursor, Read, Write};
use xz2::stream::{LzmaOptions, Stream};

/// Literal context bits, literal position bits, position bits (`FIXED_LC/LP/PB`).
pub const LC: u32 = 3;
pub const LP: u32 = 0;
pub const PB: u32 = 2;
/// Dictionary size grub-mkimage uses.
pub const DICT_SIZE: u32 = 1 << 16;
/// Length of the `.lzma` header: properties (1), dictionary size (4), size (8).
const ALONE_HEADER: usize = 13;
/// The properties byte for lc/lp/pb: `(pb * 5 + lp) * 9 + lc`.
const PROPS: u8 = ((PB * 5 + LP) * 9 + LC) as u8;

fn lzma_err(why: impl std::fmt::Display) -> BootError {
    BootError::Compression {
        why: why.to_string(),
    }
}

/// Compress `data` to a raw LZMA1 stream (lc3 lp0 pb2, 64 KiB dictionary); the stream
/// ends with an end-of-payload marker, which GRUB's decoder never reaches.
pub fn compress(data: &[u8]) -> Result<Vec<u8>, BootError> {
    let mut opts = LzmaOptions::new_preset(9).map_err(lzma_err)?;
    opts.dict_size(DICT_SIZE)
        .literal_context_bits(LC)
        .literal_position_bits(LP)
        .position_bits(PB);
    let stream = Stream::new_lzma_encoder(&opts).map_err(lzma_err)?;
    let mut enc = xz2::write::XzEncoder::new_stream(Vec::with_capacity(data.len() / 2), stream);
    enc.write_all(data).map_err(lzma_err)?;
    let alone = enc.finish().map_err(lzma_err)?;
    // Check the header says what we asked for before dropping it.
    let header = alone
        .get(..ALONE_HEADER)
        .ok_or_else(|| lzma_err("liblzma produced no .lzma header"))?;
    if header[0] != PROPS || header[1..5] != DICT_SIZE.to_le_bytes() {
        return Err(lzma_err(format!(
            "liblzma wrote properties {:#04x} / dictionary {:?}, expected {PROPS:#04x} / {DICT_SIZE}",
            header[0],
            &header[1..5]
        )));
    }
    Ok(alone[ALONE_HEADER..].to_vec())
}

/// Decode a raw LZMA1 stream (lc3 lp0 pb2) to exactly `size` bytes, as GRUB's
/// decompressor does; `size` is checked against `cap` before anything is allocated.
/// Works for grub-mkimage's payloads (no end marker) and ours.
pub fn decompress(raw: &[u8], size: u64, cap: u64) -> Result<Vec<u8>, BootError> {
    if size > cap {
        return Err(lzma_err(format!(
            "uncompressed size {size} is more than the {cap} bytes allowed"
        )));
    }
    // A dictionary as large as the output makes every distance valid whatever the
    // encoder's dictionary was.
    let dict = size.clamp(4096, 1 << 30).next_power_of_two() as u32;
    let mut header = Vec::with_capacity(ALONE_HEADER);
    header.push(PROPS);
    header.extend_from_slice(&dict.to_le_bytes());
    // Size "unknown" (all ones): liblzma then decodes until the input or an end marker
    // runs out, and `take(size)` stops reading at exactly `size` bytes. (With the size
    // in the header, liblzma rejects a stream that carries an end marker after it.)
    header.extend_from_slice(&u64::MAX.to_le_bytes());
    let stream = Stream::new_lzma_decoder(u64::from(dict) + (64 << 20)).map_err(lzma_err)?;
    let input = Cursor::new(header).chain(raw);
    let mut dec = xz2::read::XzDecoder::new_stream(input, stream);
    let mut out = Vec::with_capacity(size as usize);
    (&mut dec)
        .take(size)
        .read_to_end(&mut out)
        .map_err(|e| lzma_err(format!("corrupt LZMA payload: {e}")))?;
    if out.len() as u64 != size {
        return Err(lzma_err(format!(
            "LZMA payload decodes to {} bytes, expected {size}",
            out.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut data = Vec::new();
        for i in 0..50_000u32 {
            data.extend_from_slice(&(i % 251).to_le_bytes());
            if i % 7 == 0 {
                data.extend_from_slice(b"GRUB module area ");
            }
        }
        let raw = compress(&data).unwrap();
        assert!(raw.len() < data.len() / 4, "{} bytes", raw.len());
        assert_eq!(decompress(&raw, data.len() as u64, 1 << 20).unwrap(), data);
        // Decoding fewer bytes than were encoded (the GRUB decoder stops by size).
        assert_eq!(decompress(&raw, 1000, 1 << 20).unwrap(), data[..1000]);
    }

    #[test]
    fn corrupt_or_short_payloads_are_errors() {
        let data = vec![7u8; 10_000];
        let raw = compress(&data).unwrap();
        assert!(decompress(&raw[..raw.len() / 2], 10_000_000, 1 << 30).is_err());
        assert!(decompress(&raw, 10_000, 100).is_err(), "cap is enforced");
        assert!(decompress(&[0xFF; 64], 1000, 1 << 20).is_err());
    }
}
