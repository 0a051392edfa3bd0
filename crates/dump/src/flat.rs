//! makedumpfile's flattened format (`makedumpfile -F`, and what QEMU's `dump-guest-memory -z/-l/-s`
//! writes): a dump meant to travel through a pipe, so written as a stream of records, each "put these
//! bytes at this offset of the real file". `makedumpfile -R` rearranges it into the real file; this
//! module reads it in place instead.
//!
//! Layout (makedumpfile.h, `struct makedumpfile_header` and `struct makedumpfile_data_header`; written by
//! `write_start_flat_header` and `write_buffer`, read back by `rearrange_dumpdata` in makedumpfile.c):
//! a 4096-byte header holding the signature "makedumpfile" (16 bytes, NUL-padded) and two big-endian
//! 64-bit numbers, type (1) and version; then records, each a big-endian (offset, size) pair and `size`
//! bytes of data; then an end marker whose offset and size are both -1. A record with a negative offset
//! or a size below 1 that is not the end marker is malformed (`rearrange_dumpdata` stops on it and then
//! fails). A later record overwrites what an earlier one wrote, as it would on disk, and bytes no
//! record wrote, below the end of the furthest record, read as zeros, as they do in the sparse file
//! `makedumpfile -R` writes (makedumpfile writes only the `max_mapnr / 8` bytes of each bitmap, not
//! the block-rounded rest). What those bytes mean is the kdump reader's to check.
//!
//! [`FlatFile::new`] reads each record's 16-byte header once (never its data) and keeps an index of
//! extents, logical range → file offset, in which later records already cut earlier ones; reads then
//! binary-search it. The index holds at most two extents per record and records are capped at
//! [`MAX_FLAT_RECORDS`].

use std::io;

use crate::source::ReadAt;

/// "makedumpfile", the first 12 bytes of a flattened file (`MAKEDUMPFILE_SIGNATURE`).
pub const FLAT_SIGNATURE: &[u8; 12] = b"makedumpfile";
/// The header's size: records start here (`MAX_SIZE_MDF_HEADER`).
pub const FLAT_HEADER_SIZE: u64 = 4096;
/// `TYPE_FLAT_HEADER`.
pub const TYPE_FLAT_HEADER: i64 = 1;
/// The most records indexed. makedumpfile and QEMU write page data through caches of several pages,
/// so even a terabyte dump has far fewer records; a file with more is refused rather than indexed.
pub const MAX_FLAT_RECORDS: u64 = 1 << 24;
const RECORD_HEADER: u64 = 16;

/// Why a flattened file was refused. Record numbers count from 0; `at` is the record header's file offset.
#[derive(Debug, thiserror::Error)]
pub enum FlatError {
    /// Reading the header or a record header from the underlying file failed.
    #[error("reading the flattened file at offset {at:#x}: {source}")]
    Read {
        /// File offset of the read, bytes.
        at: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is shorter than the 4096-byte `makedumpfile_header` block.
    #[error("file is {len} bytes, shorter than the {FLAT_HEADER_SIZE}-byte flattened-format header")]
    Truncated {
        /// File length, bytes.
        len: u64,
    },
    /// `makedumpfile_header.signature` is not [`FLAT_SIGNATURE`] followed by a NUL.
    #[error("not a flattened dump (no \"makedumpfile\" signature)")]
    NotFlat,
    /// `makedumpfile_header.type` is not [`TYPE_FLAT_HEADER`].
    #[error("flattened-format header type {found}, not {TYPE_FLAT_HEADER}")]
    BadType {
        /// The big-endian `type` read.
        found: i64,
    },
    /// A `makedumpfile_data_header` with a negative offset or a size below 1 that is not the
    /// end marker.
    #[error("record {index} at {at:#x}: offset {offset} size {size} is neither data nor the end marker (-1, -1)")]
    BadRecord {
        /// Record number, from 0.
        index: u64,
        /// File offset of the record header.
        at: u64,
        /// `offset` of the record: where its data goes in the rearranged file.
        offset: i64,
        /// `buf_size` of the record: its data bytes.
        size: i64,
    },
    /// A record's data runs past the end of the flattened file (a file cut short).
    #[error("record {index} at {at:#x}: {size} data bytes run past the end of the {file_len}-byte file")]
    RecordOutsideFile {
        /// Record number, from 0.
        index: u64,
        /// File offset of the record header.
        at: u64,
        /// The record's data bytes.
        size: u64,
        /// Flattened file length, bytes.
        file_len: u64,
    },
    /// A record's `offset` + size is past 2^63 - 1, the largest `off_t` of the rearranged file.
    #[error("record {index} at {at:#x}: offset {offset:#x} + size {size:#x} is past the largest file offset")]
    Overflow {
        /// Record number, from 0.
        index: u64,
        /// File offset of the record header.
        at: u64,
        /// The record's offset in the rearranged file.
        offset: u64,
        /// The record's data bytes.
        size: u64,
    },
    /// The file ends (or has no room for another 16-byte record header) before the (-1, -1) end marker.
    #[error("no end marker: the file ends at {at:#x} after {index} records (a transfer cut short?)")]
    NoEndMarker {
        /// Data records read before the end.
        index: u64,
        /// File offset where the next record header would start.
        at: u64,
    },
    /// The file holds more than [`MAX_FLAT_RECORDS`] data records.
    #[error("more than {max} records")]
    TooManyRecords {
        /// [`MAX_FLAT_RECORDS`].
        max: u64,
    },
}

/// One piece of the rearranged file: logical `[start, end)` lives at file offset `src`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Extent {
    start: u64,
    end: u64,
    src: u64,
}

/// A flattened file read as the file `makedumpfile -R` would rearrange it into.
pub struct FlatFile<S> {
    inner: S,
    /// Sorted by `start`, disjoint.
    extents: Vec<Extent>,
    len: u64,
    records: u64,
}

impl<S: ReadAt> FlatFile<S> {
    /// Reads the header and every record header, and builds the index. Costs one 16-byte read per
    /// record; no record data is read.
    pub fn new(inner: S) -> Result<Self, FlatError> {
        let file_len = inner.len();
        if file_len < FLAT_HEADER_SIZE {
            return Err(FlatError::Truncated { len: file_len });
        }
        let mut head = [0u8; 32];
        inner.read_exact_at(0, &mut head).map_err(|source| FlatError::Read { at: 0, source })?;
        // A big-endian 64-bit field of a fixed-size record (callers pass 8-byte slices).
        let be = |b: &[u8]| {
            let mut q = [0u8; 8];
            if let Some(f) = b.get(..8) {
                q.copy_from_slice(f);
            }
            i64::from_be_bytes(q)
        };
        // The signature field is 16 bytes; makedumpfile compares it as a C string, the 12 letters and the
        // NUL after them (`strncmp` over `sizeof(MAKEDUMPFILE_SIGNATURE)`), and ignores the rest.
        if &head[..12] != FLAT_SIGNATURE || head[12] != 0 {
            return Err(FlatError::NotFlat);
        }
        let found = be(&head[16..24]);
        if found != TYPE_FLAT_HEADER {
            return Err(FlatError::BadType { found });
        }

        let mut map = std::collections::BTreeMap::<u64, (u64, u64)>::new(); // start -> (end, src)
        let mut at = FLAT_HEADER_SIZE;
        let mut index = 0u64;
        loop {
            let mut rec = [0u8; RECORD_HEADER as usize];
            if at.checked_add(RECORD_HEADER).is_none_or(|end| end > file_len) {
                return Err(FlatError::NoEndMarker { index, at });
            }
            inner.read_exact_at(at, &mut rec).map_err(|source| FlatError::Read { at, source })?;
            let (offset, size) = (be(&rec[..8]), be(&rec[8..]));
            if offset == -1 && size == -1 {
                break;
            }
            if offset < 0 || size < 1 {
                return Err(FlatError::BadRecord { index, at, offset, size });
            }
            if index >= MAX_FLAT_RECORDS {
                return Err(FlatError::TooManyRecords { max: MAX_FLAT_RECORDS });
            }
            let (offset, size) = (offset as u64, size as u64);
            let data = at + RECORD_HEADER;
            let data_end = data.checked_add(size).filter(|&e| e <= file_len);
            let Some(data_end) = data_end else {
                return Err(FlatError::RecordOutsideFile { index, at, size, file_len });
            };
            // Offsets are off_t: the rearranged file ends below 2^63.
            let end = offset.checked_add(size).filter(|&e| e <= i64::MAX as u64).ok_or(FlatError::Overflow {
                index,
                at,
                offset,
                size,
            })?;
            overwrite(&mut map, offset, end, data);
            at = data_end;
            index += 1;
        }
        let extents: Vec<Extent> = map.into_iter().map(|(start, (end, src))| Extent { start, end, src }).collect();
        let len = extents.last().map_or(0, |e| e.end);
        Ok(FlatFile { inner, extents, len, records: index })
    }

    /// Data records in the file (not counting the end marker).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Pieces of the rearranged file the index holds: at most twice the records.
    pub fn extents(&self) -> usize {
        self.extents.len()
    }
}

/// Writes `[start, end)` → `src` over whatever the map held there: extents it covers go, extents it
/// cuts keep their outer parts.
fn overwrite(map: &mut std::collections::BTreeMap<u64, (u64, u64)>, start: u64, end: u64, src: u64) {
    // The one extent that may start before `start` and reach into it.
    if let Some((&s, &(e, q))) = map.range(..start).next_back() {
        if e > start {
            map.insert(s, (start, q));
            if e > end {
                map.insert(end, (e, q + (end - s)));
            }
        }
    }
    // Extents starting inside [start, end).
    let inside: Vec<u64> = map.range(start..end).map(|(&s, _)| s).collect();
    for s in inside {
        if let Some((e, q)) = map.remove(&s) {
            if e > end {
                map.insert(end, (e, q + (end - s)));
            }
        }
    }
    map.insert(start, (end, src));
}

impl<S: ReadAt> ReadAt for FlatFile<S> {
    /// The rearranged file's length: the end of the furthest record.
    fn len(&self) -> u64 {
        self.len
    }

    /// Bytes no record wrote read as zeros (a hole in the rearranged file); reading past its end fails.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.len) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "past the end of the rearranged file"));
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let i = self.extents.partition_point(|e| e.start <= pos);
            let left = (buf.len() - done) as u64;
            let n = match i.checked_sub(1).map(|i| self.extents[i]).filter(|e| pos < e.end) {
                Some(ext) => {
                    let n = (ext.end - pos).min(left) as usize;
                    self.inner.read_exact_at(ext.src + (pos - ext.start), &mut buf[done..done + n])?;
                    n
                }
                None => {
                    // A hole up to the next extent (there is one: pos is below the end of the last).
                    let next = self.extents.get(i).map_or(self.len, |e| e.start);
                    let n = (next - pos).min(left) as usize;
                    buf[done..done + n].fill(0);
                    n
                }
            };
            done += n;
        }
        Ok(())
    }
}

impl<S> std::fmt::Debug for FlatFile<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatFile").field("records", &self.records).field("len", &self.len).finish_non_exhaustive()
    }
}
