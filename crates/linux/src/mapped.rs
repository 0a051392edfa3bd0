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

    /// Physical address of the block's first register (the `base` it was opened with).
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

/// Physical memory reached by `mmap` of `/dev/mem`, for where `read()`/`write()` cannot reach it: arm64's
/// `/dev/mem` `read()` serves only the kernel's own mapped RAM (`valid_phys_addr_range`:
/// `memblock_is_map_memory`), so a kdump kernel reaches the crashed kernel's RAM and a `no-map` frame window
/// only through a mapping (`mmap_mem`, allowed for what is not its RAM: `devmem_is_allowed`).
///
/// Memory is mapped in aligned chunks on first use and kept in a cache of at most [`MappedPhys::SLOTS`]
/// mappings (the oldest is unmapped first), so address space does not grow with how many places hostile
/// tables point at. A chunk that cannot be mapped whole (part of it is the kdump kernel's own RAM, which
/// `/dev/mem` refuses) is retried as the single page accessed. Every copy uses naturally aligned volatile
/// loads and stores of the widest width that fits: Linux maps such memory as Device memory
/// (`phys_mem_access_prot`), where an unaligned access faults.
#[derive(Debug)]
pub struct MappedPhys {
    file: File,
    chunk: u64,
    maps: std::cell::RefCell<MapCache>,
}

#[derive(Debug, Default)]
struct MapCache {
    /// (physical base, length, address) of each live mapping.
    slots: Vec<(u64, u64, NonNull<u8>)>,
    /// The slot the next new mapping replaces once all are in use.
    next: usize,
    /// Mappings made in all (for the report and tests).
    made: u64,
}

impl MappedPhys {
    /// Live mappings kept at most.
    pub const SLOTS: usize = 16;
    /// The default chunk: 2 MiB.
    pub const CHUNK: u64 = 2 << 20;

    /// `path` (normally `/dev/mem`) opened read-write with `O_SYNC`, mapped in [`Self::CHUNK`] chunks.
    pub fn open(path: &Path) -> io::Result<Self> {
        Self::with_chunk(path, Self::CHUNK)
    }

    /// As [`Self::open`] with another chunk size (a power of two, at least a page).
    pub fn with_chunk(path: &Path, chunk: u64) -> io::Result<Self> {
        if !chunk.is_power_of_two() || chunk < PAGE || usize::try_from(chunk).is_err() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "chunk not a power of two of at least a page"));
        }
        let file = OpenOptions::new().read(true).write(true).custom_flags(libc::O_SYNC).open(path)?;
        Ok(MappedPhys { file, chunk, maps: Default::default() })
    }

    /// Mappings made so far (each a `mmap` call).
    pub fn mappings_made(&self) -> u64 {
        self.maps.borrow().made
    }

    /// Live mappings now (never more than [`Self::SLOTS`]).
    pub fn mappings_live(&self) -> usize {
        self.maps.borrow().slots.len()
    }

    fn map(&self, base: u64, len: u64) -> io::Result<NonNull<u8>> {
        let offset = libc::off_t::try_from(base)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "physical address beyond off_t"))?;
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed address), aliasing no Rust object;
        // `len` fits usize (checked in `with_chunk`, and a page otherwise); MAP_FAILED is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.file.as_raw_fd(),
                offset,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
    }

    /// The address of physical `pa`, mapped, and how many bytes from it stay inside that mapping.
    fn at(&self, pa: u64) -> io::Result<(*mut u8, u64)> {
        let mut m = self.maps.borrow_mut();
        if let Some(&(b, l, p)) = m.slots.iter().find(|(b, l, _)| *b <= pa && pa - *b < *l) {
            return Ok((p.as_ptr().wrapping_add((pa - b) as usize), l - (pa - b)));
        }
        let chunk_base = pa & !(self.chunk - 1);
        let page_base = pa & !(PAGE - 1);
        let (base, len, p) = match self.map(chunk_base, self.chunk) {
            Ok(p) => (chunk_base, self.chunk, p),
            Err(_) if self.chunk > PAGE => (page_base, PAGE, self.map(page_base, PAGE)?),
            Err(e) => return Err(e),
        };
        m.made += 1;
        if m.slots.len() < Self::SLOTS {
            m.slots.push((base, len, p));
        } else {
            let i = m.next;
            let (_, old_len, old) = std::mem::replace(&mut m.slots[i], (base, len, p));
            // SAFETY: `old` is a mapping this cache made and no longer lists; no pointer into it outlives
            // the copy that obtained it (copies hold no borrow across calls to `at`).
            unsafe {
                libc::munmap(old.as_ptr().cast(), old_len as usize);
            }
            m.next = (i + 1) % Self::SLOTS;
        }
        Ok((p.as_ptr().wrapping_add((pa - base) as usize), len - (pa - base)))
    }

    /// The widest naturally aligned access at `pa` that fits in `left` bytes.
    fn width(pa: u64, left: u64) -> u64 {
        [8u64, 4, 2, 1].into_iter().find(|&w| pa.is_multiple_of(w) && w <= left).unwrap_or(1)
    }
}

impl crate::PhysFile for MappedPhys {
    fn read_at(&self, buf: &mut [u8], pa: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = pa.checked_add(done as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            let (p, room) = self.at(at)?;
            let n = room.min((buf.len() - done) as u64);
            let mut off = 0u64;
            while off < n {
                let w = Self::width(at + off, n - off);
                let src = p.wrapping_add(off as usize);
                let dst = &mut buf[done + off as usize..done + (off + w) as usize];
                // SAFETY: `src` lies `off + w <= room` bytes into a live mapping returned by `at` and is
                // aligned to `w` (`width` checked the physical address, and mappings are page aligned).
                unsafe {
                    match w {
                        8 => dst.copy_from_slice(&src.cast::<u64>().read_volatile().to_ne_bytes()),
                        4 => dst.copy_from_slice(&src.cast::<u32>().read_volatile().to_ne_bytes()),
                        2 => dst.copy_from_slice(&src.cast::<u16>().read_volatile().to_ne_bytes()),
                        _ => dst[0] = src.read_volatile(),
                    }
                }
                off += w;
            }
            done += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, data: &[u8], pa: u64) -> io::Result<()> {
        let mut done = 0usize;
        while done < data.len() {
            let at = pa.checked_add(done as u64).ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
            let (p, room) = self.at(at)?;
            let n = room.min((data.len() - done) as u64);
            let mut off = 0u64;
            while off < n {
                let w = Self::width(at + off, n - off);
                let dst = p.wrapping_add(off as usize);
                let src = &data[done + off as usize..done + (off + w) as usize];
                // SAFETY: as in `read_at`: inside a live mapping, aligned to the access width.
                unsafe {
                    match w {
                        8 => dst.cast::<u64>().write_volatile(u64::from_ne_bytes(src.try_into().unwrap_or_default())),
                        4 => dst.cast::<u32>().write_volatile(u32::from_ne_bytes(src.try_into().unwrap_or_default())),
                        2 => dst.cast::<u16>().write_volatile(u16::from_ne_bytes(src.try_into().unwrap_or_default())),
                        _ => dst.write_volatile(src[0]),
                    }
                }
                off += w;
            }
            done += n as usize;
        }
        Ok(())
    }
}

impl Drop for MappedPhys {
    fn drop(&mut self) {
        for &(_, len, p) in &self.maps.get_mut().slots {
            // SAFETY: each listed mapping was made by this cache and is unmapped once, here.
            unsafe {
                libc::munmap(p.as_ptr().cast(), len as usize);
            }
        }
    }
}
