//! The first bytes of an ELF executable: enough to tell the guest's userland
//! architecture (System V gABI, "ELF Header": `e_ident` then `e_type`, `e_machine`).

use crate::bytes::{Fields, ParseError};

const STRUCTURE: &str = "ELF header";

/// Bytes needed: `e_ident` (16) + `e_type` (2) + `e_machine` (2).
pub const HEADER_LEN: usize = 20;

/// `e_machine` values we name.
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;

/// The userland architecture of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 32-bit x86 (`EM_386`, ELFCLASS32).
    I386,
    /// 64-bit x86 (`EM_X86_64`, ELFCLASS64).
    X86_64,
    /// Anything else: `e_machine` and the class (32 or 64 bits).
    Other { machine: u16, bits: u8 },
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Arch::I386 => f.write_str("i386"),
            Arch::X86_64 => f.write_str("x86_64"),
            Arch::Other { machine, bits } => write!(f, "e_machine {machine} ({bits}-bit)"),
        }
    }
}

/// Parse the identification and machine fields of an ELF header.
pub fn parse_arch(head: &[u8]) -> Result<Arch, ParseError> {
    let f = Fields::new(STRUCTURE, head);
    let magic: [u8; 4] = f.array("e_ident[EI_MAG]", 0)?;
    if magic != *b"\x7fELF" {
        return Err(f.invalid(
            "e_ident[EI_MAG]",
            u32::from_be_bytes(magic).into(),
            "not an ELF file",
        ));
    }
    let class = f.u8("e_ident[EI_CLASS]", 4)?;
    let bits = match class {
        1 => 32,
        2 => 64,
        c => {
            return Err(f.invalid(
                "e_ident[EI_CLASS]",
                c.into(),
                "neither ELFCLASS32 nor ELFCLASS64",
            ))
        }
    };
    let data = f.u8("e_ident[EI_DATA]", 5)?;
    let machine = match data {
        1 => f.u16("e_machine", 18)?,
        2 => u16::from_be_bytes(f.array("e_machine", 18)?),
        d => {
            return Err(f.invalid(
                "e_ident[EI_DATA]",
                d.into(),
                "neither little nor big endian",
            ))
        }
    };
    Ok(match (machine, bits) {
        (EM_386, 32) => Arch::I386,
        (EM_X86_64, 64) => Arch::X86_64,
        (machine, bits) => Arch::Other { machine, bits },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn tells_i386_from_x86_64() {
        assert_eq!(parse_arch(&header(1, 3)).unwrap(), Arch::I386);
        assert_eq!(parse_arch(&header(2, 62)).unwrap(), Arch::X86_64);
        assert_eq!(
            parse_arch(&header(2, 183)).unwrap(),
            Arch::Other {
                machine: 183,
                bits: 64
            }
        );
        assert!(parse_arch(b"#!/bin/sh\n").is_err());
        assert!(parse_arch(&header(2, 62)[..10]).is_err());
    }
}
