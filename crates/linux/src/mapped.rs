//! A register block mapped from `/dev/mem` with `mmap`: every access is one volatile load or store of the
//! register's width, which is what an IOMMU's MMIO expects (Linux `readl`/`readq`/`writel`/`writeq`).
//!
//! This module's whole job is the `unsafe` that takes: the mapping, the volatile accesses and the unmap.
//! The file is opened with `O_SYNC`, which makes Linux map non-RAM uncached (`phys_mem_access_prot`).

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;

use crate::{RegisterIo, Width, PAGE};

/// `len` bytes of physical address space at `base`, mapped shared, read-write.
#[derive(Debug)]
pub struct MappedRegs {
    ptr: NonNull<u8>,
    len: u64,
    base: u64,
    // Kept open for the life of the mapping (not required by mmap, but it names what is mapped).
    _file: File,
}

impl MappedRegs {
    /// Map `[base, base+len)` of `path` (normally `/dev/mem`). `base` and `len` must be page multiples.
    pub fn open(path: &Path, base: u64, len: u64) -> io::Result<Self> {
        if !base.is_multiple_of(PAGE) || len == 0 || !len.is_multiple_of(PAGE) || base.checked_add(len).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "register block not page aligned"));
        }
        let offset = libc::off_t::try_from(base)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "register base beyond off_t"))?;
        let size = usize::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block too large"))?;
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_SYNC).open(path)?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed address), so it aliases no Rust
        // object; the result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(MappedRegs { ptr, len, base, _file: file })
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    /// The address of an in-bounds, naturally aligned access, or an error.
    fn at(&self, off: u64, w: Width) -> io::Result<*mut u8> {
        let fits = off.checked_add(w.bytes()).is_some_and(|e| e <= self.len);
        if !fits || !off.is_multiple_of(w.bytes()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "register access outside the mapping or unaligned",
            ));
        }
        // In bounds: off < len, and len fit in usize when the mapping was made.
        Ok(self.ptr.as_ptr().wrapping_add(off as usize))
    }
}

impl RegisterIo for MappedRegs {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&mut self, off: u64, w: Width) -> io::Result<u64> {
        let p = self.at(off, w)?;
        Ok(match w {
            // SAFETY: `at` checked the access lies inside the live mapping and is aligned to its width.
            Width::W32 => u64::from(unsafe { p.cast::<u32>().read_volatile() }),
            // SAFETY: as above.
            Width::W64 => unsafe { p.cast::<u64>().read_volatile() },
        })
    }

    fn write(&mut self, off: u64, w: Width, val: u64) -> io::Result<()> {
        let p = self.at(off, w)?;
        match w {
            // SAFETY: `at` checked the access lies inside the live mapping and is aligned to its width.
            Width::W32 => unsafe { p.cast::<u32>().write_volatile(val as u32) },
            // SAFETY: as above.
            Width::W64 => unsafe { p.cast::<u64>().write_volatile(val) },
        }
        Ok(())
    }
}

impl Drop for MappedRegs {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `open`; no reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len as usize);
        }
    }
}
