//! Bounds-checked little-endian field readers for on-disk structures.
//!
//! Every structure parsed from an untrusted image reads its fields through these helpers,
//! so a truncated or lying structure becomes a [`ParseError`] naming the structure and the
//! field, never a panic or an out-of-bounds slice.

/// True when `b` is all zeros. Each 256-byte stretch is or-ed 16 bytes at a time, which
/// the compiler vectorises, and the scan stops at the first stretch that is not zero (data
/// blocks end it at once). A byte-wise scan that stops at the first non-zero byte is not
/// vectorised, and took a quarter of the time of an 8 GiB image's decompression.
pub fn is_zero(b: &[u8]) -> bool {
    fn or_words(b: &[u8]) -> u128 {
        let mut words = b.chunks_exact(16);
        let acc = words.by_ref().fold(0u128, |a, w| {
            a | u128::from_ne_bytes(w.try_into().unwrap_or([0; 16]))
        });
        words
            .remainder()
            .iter()
            .fold(acc, |a, &x| a | u128::from(x))
    }
    let mut stretches = b.chunks_exact(256);
    stretches.by_ref().all(|s| or_words(s) == 0) && or_words(stretches.remainder()) == 0
}

/// A field could not be read, or held a value outside what the format allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The structure is shorter than the field's position requires.
    #[error("{structure}: truncated: field `{field}` at byte {offset} needs {len} bytes, only {available} present")]
    Truncated {
        structure: &'static str,
        field: &'static str,
        offset: usize,
        len: usize,
        available: usize,
    },
    /// The field was read but its value is impossible or unsupported.
    #[error("{structure}: field `{field}` has invalid value {value}: {why}")]
    Invalid {
        structure: &'static str,
        field: &'static str,
        value: u64,
        why: &'static str,
    },
}

/// A view of one on-disk structure, with the structure's name for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    structure: &'static str,
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    /// Wrap `data`, naming it `structure` (e.g. "ext4 superblock") in errors.
    pub fn new(structure: &'static str, data: &'a [u8]) -> Self {
        Self { structure, data }
    }

    /// The structure's name.
    pub fn structure(&self) -> &'static str {
        self.structure
    }

    /// The underlying bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// `len` bytes at `offset`.
    pub fn bytes(
        &self,
        field: &'static str,
        offset: usize,
        len: usize,
    ) -> Result<&'a [u8], ParseError> {
        offset
            .checked_add(len)
            .and_then(|end| self.data.get(offset..end))
            .ok_or(ParseError::Truncated {
                structure: self.structure,
                field,
                offset,
                len,
                available: self.data.len(),
            })
    }

    /// The bytes from `offset` to the end of the structure (empty at its end).
    pub fn rest(&self, field: &'static str, offset: usize) -> Result<&'a [u8], ParseError> {
        self.bytes(field, offset, self.data.len().saturating_sub(offset))
    }

    /// A fixed-size array at `offset`.
    pub fn array<const N: usize>(
        &self,
        field: &'static str,
        offset: usize,
    ) -> Result<[u8; N], ParseError> {
        let b = self.bytes(field, offset, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    /// A byte at `offset`.
    pub fn u8(&self, field: &'static str, offset: usize) -> Result<u8, ParseError> {
        Ok(self.array::<1>(field, offset)?[0])
    }

    /// A little-endian u16 at `offset`.
    pub fn u16(&self, field: &'static str, offset: usize) -> Result<u16, ParseError> {
        Ok(u16::from_le_bytes(self.array(field, offset)?))
    }

    /// A little-endian u32 at `offset`.
    pub fn u32(&self, field: &'static str, offset: usize) -> Result<u32, ParseError> {
        Ok(u32::from_le_bytes(self.array(field, offset)?))
    }

    /// A little-endian u64 at `offset`.
    pub fn u64(&self, field: &'static str, offset: usize) -> Result<u64, ParseError> {
        Ok(u64::from_le_bytes(self.array(field, offset)?))
    }

    /// A big-endian u16 at `offset` (VHD, qcow2).
    pub fn u16_be(&self, field: &'static str, offset: usize) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.array(field, offset)?))
    }

    /// A big-endian u32 at `offset` (VHD, qcow2).
    pub fn u32_be(&self, field: &'static str, offset: usize) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.array(field, offset)?))
    }

    /// A big-endian u64 at `offset` (VHD, qcow2).
    pub fn u64_be(&self, field: &'static str, offset: usize) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.array(field, offset)?))
    }

    /// An error for `field` holding `value`, which the format does not allow.
    pub fn invalid(&self, field: &'static str, value: u64, why: &'static str) -> ParseError {
        ParseError::Invalid {
            structure: self.structure,
            field,
            value,
            why,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[0] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 7]));
        assert!(is_zero(&[]));
        assert!(!is_zero(&[0, 0, 0, 0, 0, 0, 3]));
        // A non-zero byte in the tail past the last whole 16-byte word.
        let mut odd = vec![0u8; 35];
        odd[34] = 9;
        assert!(!is_zero(&odd));
    }

    #[test]
    fn reads_little_endian_fields() {
        let data = [0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 1, 2, 3, 4, 5, 6, 7, 8];
        let f = Fields::new("test", &data);
        assert_eq!(f.u16("a", 0).unwrap(), 0x1234);
        assert_eq!(f.u32("b", 2).unwrap(), 0x1234_5678);
        assert_eq!(f.u64("c", 6).unwrap(), 0x0807_0605_0403_0201);
        assert_eq!(f.u16_be("d", 0).unwrap(), 0x3412);
        assert_eq!(f.u32_be("e", 6).unwrap(), 0x0102_0304);
        assert_eq!(f.u64_be("f", 6).unwrap(), 0x0102_0304_0506_0708);
    }

    #[test]
    fn truncated_field_is_an_error_naming_the_field() {
        let data = [0u8; 3];
        let f = Fields::new("tiny", &data);
        let err = f.u32("s_magic", 2).unwrap_err();
        assert!(err.to_string().contains("s_magic"), "{err}");
        assert!(f.bytes("huge", usize::MAX, 2).is_err());
    }

    #[test]
    fn rest_runs_to_the_end_and_not_past_it() {
        let data = [1u8, 2, 3];
        let f = Fields::new("tiny", &data);
        assert_eq!(f.rest("tail", 1).unwrap(), &[2, 3]);
        assert_eq!(f.rest("tail", 3).unwrap(), &[] as &[u8]);
        let err = f.rest("tail", 4).unwrap_err();
        assert!(err.to_string().contains("tail"), "{err}");
    }
}
