//! ELF notes of a crashed kernel (the `PT_NOTE` of an ELF core or `/proc/vmcore`, the notes block of a
//! kdump-compressed file): per-CPU `NT_PRSTATUS` and `VMCOREINFO`, the text the crashed kernel wrote about
//! itself (Linux `kernel/vmcore_info.c`, `append_elf_note`).
//!
//! The bytes are hostile: every size is checked against what is left, and the walk ends after at most
//! `len / 12` notes.

use thiserror::Error;

/// One note: `n_type`, its name (without the NUL) and its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// The owner's name, `n_namesz` bytes less a trailing NUL (`CORE`, `VMCOREINFO`, ...).
    pub name: &'a [u8],
    /// `n_type`: what the descriptor holds, within the owner's namespace (`NT_PRSTATUS` = 1 for `CORE`).
    pub ty: u32,
    /// The descriptor, `n_descsz` bytes (padding not included).
    pub desc: &'a [u8],
}

/// The notes in `bytes`, in order; a note whose sizes run past the end ends the walk (the notes before it
/// are still returned: a kernel reserves the note buffer whole, and its tail may be zeros).
pub fn notes(bytes: &[u8]) -> impl Iterator<Item = Note<'_>> {
    let mut at = 0usize;
    core::iter::from_fn(move || {
        let h = bytes.get(at..at.checked_add(12)?)?;
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as usize;
        let (namesz, descsz, ty) = (word(0), word(4), word(8) as u32);
        let name_at = at + 12;
        let desc_at = name_at.checked_add(namesz.checked_next_multiple_of(4)?)?;
        let end = desc_at.checked_add(descsz.checked_next_multiple_of(4)?)?;
        let name = bytes.get(name_at..name_at + namesz)?;
        let desc = bytes.get(desc_at..desc_at + descsz)?;
        if namesz == 0 && descsz == 0 && ty == 0 {
            return None; // the zeroed tail of the buffer
        }
        at = end;
        let name = name.strip_suffix(&[0]).unwrap_or(name);
        Some(Note { name, ty, desc })
    })
}

/// One note encoded as [`notes`] reads it (Linux `append_elf_note`): `n_namesz` (the name and its NUL),
/// `n_descsz`, `n_type`, the name, the descriptor, each padded to 4 bytes. For writing cores and tests.
pub fn note(name: &[u8], ty: u32, desc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + name.len() + desc.len() + 8);
    for w in [name.len() as u32 + 1, desc.len() as u32, ty] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    v.extend_from_slice(name);
    v.push(0);
    v.resize(v.len().next_multiple_of(4), 0);
    v.extend_from_slice(desc);
    v.resize(v.len().next_multiple_of(4), 0);
    v
}

/// The crashed kernel's `VMCOREINFO` note: `KEY=VALUE` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VmcoreInfo {
    text: String,
}

/// Why a `VMCOREINFO` value could not be used.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum VmcoreInfoError {
    /// A `NUMBER(...)` line whose value does not parse as a signed decimal 64-bit number.
    #[error("VMCOREINFO {key}={value:?} is not a decimal number (Linux VMCOREINFO_NUMBER prints %ld)")]
    NotANumber {
        /// The key, `NUMBER(name)`.
        key: String,
        /// The text after `=`.
        value: String,
    },
}

impl VmcoreInfo {
    /// The `VMCOREINFO` note among `notes` (the first), if there is one. Its text is read lossily: a
    /// damaged byte spoils only its own line.
    pub fn from_notes(bytes: &[u8]) -> Option<VmcoreInfo> {
        let n = notes(bytes).find(|n| n.name == b"VMCOREINFO")?;
        let text = String::from_utf8_lossy(n.desc);
        Some(VmcoreInfo { text: text.trim_end_matches('\0').to_string() })
    }

    /// The value of the first line `KEY=...`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }

    /// `NUMBER(name)`, as Linux `VMCOREINFO_NUMBER` writes it (`%ld`).
    pub fn number(&self, name: &str) -> Option<Result<i64, VmcoreInfoError>> {
        let key = format!("NUMBER({name})");
        let value = self.get(&key)?;
        Some(value.parse::<i64>().map_err(|_| VmcoreInfoError::NotANumber { key, value: value.to_string() }))
    }

    /// The crashed kernel's SME encryption mask (x86 `arch_crash_save_vmcoreinfo`: `NUMBER(sme_mask)`): the
    /// bit its IOMMU addresses carry. `None` when the note does not say (another architecture, or a kernel
    /// older than 4.19).
    pub fn sme_mask(&self) -> Option<Result<u64, VmcoreInfoError>> {
        Some(self.number("sme_mask")?.map(|v| v as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_walked_in_order_and_a_zero_tail_ends_them() {
        let mut b = note(b"CORE", 1, &[7; 336]);
        b.extend(note(b"VMCOREINFO", 0, b"OSRELEASE=6.12\nNUMBER(sme_mask)=2251799813685248\n"));
        b.extend([0u8; 64]);
        let n: Vec<_> = notes(&b).collect();
        assert_eq!(n.len(), 2);
        assert_eq!((n[0].name, n[0].ty, n[0].desc.len()), (&b"CORE"[..], 1, 336));
        let info = VmcoreInfo::from_notes(&b).unwrap();
        assert_eq!(info.get("OSRELEASE"), Some("6.12"));
        assert_eq!(info.sme_mask(), Some(Ok(1 << 51)));
    }

    #[test]
    fn a_note_running_past_the_end_stops_the_walk_without_panicking() {
        let mut b = note(b"CORE", 1, &[1; 16]);
        let mut bad = note(b"VMCOREINFO", 0, b"NUMBER(sme_mask)=0\n");
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        b.extend(bad);
        assert_eq!(notes(&b).count(), 1);
        assert_eq!(VmcoreInfo::from_notes(&b), None);
        for cut in 0..b.len() {
            let _ = notes(&b[..cut]).count();
        }
    }

    #[test]
    fn a_mask_that_is_not_a_number_is_an_error_naming_it() {
        let b = note(b"VMCOREINFO", 0, b"NUMBER(sme_mask)=0x8000\n");
        let info = VmcoreInfo::from_notes(&b).unwrap();
        assert_eq!(
            info.sme_mask(),
            Some(Err(VmcoreInfoError::NotANumber { key: "NUMBER(sme_mask)".into(), value: "0x8000".into() }))
        );
        assert_eq!(VmcoreInfo::from_notes(&note(b"VMCOREINFO", 0, b"OSRELEASE=1\n")).unwrap().sme_mask(), None);
    }
}
