//! The bytes of a dump file, read at offsets.
//!
//! Every dump reader here reads its file with positioned reads (`pread`): headers once when it is opened,
//! page data when a page is asked for. That is what keeps opening a 4 GiB dump as cheap as reading its
//! headers, and it lets one reader sit on another: the kdump reader reads the flattened format through
//! [`crate::flat::FlatFile`], which is itself a [`ReadAt`] over the file.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A byte source read at offsets, of a fixed length.
pub trait ReadAt {
    /// The source's length in bytes.
    fn len(&self) -> u64;
    /// Whether the source holds no bytes.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from `offset`; fails (`UnexpectedEof`) rather than return fewer bytes.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

/// An open file, its length taken when it was opened.
#[derive(Debug)]
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    /// Takes the file's length from its metadata now; a file that grows later is read only up to it.
    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        Ok(FileSource { file, len })
    }
}

impl ReadAt for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}

impl ReadAt for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl<S: ReadAt + ?Sized> ReadAt for Box<S> {
    fn len(&self) -> u64 {
        (**self).len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }
}

/// How many reads a [`Counting`] source served, and how many bytes they asked for.
#[derive(Debug, Default)]
pub struct ReadStats {
    reads: AtomicU64,
    bytes: AtomicU64,
}

impl ReadStats {
    /// `read_exact_at` calls served so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
    /// Bytes those calls asked for, in all.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A source that counts what is read from it, so a test can say what opening a dump cost without timing it.
pub struct Counting<S> {
    inner: S,
    stats: Arc<ReadStats>,
}

impl<S: ReadAt> Counting<S> {
    /// The source and a handle on its counters that stays with the caller.
    pub fn new(inner: S) -> (Self, Arc<ReadStats>) {
        let stats = Arc::new(ReadStats::default());
        (Counting { inner, stats: stats.clone() }, stats)
    }
}

impl<S: ReadAt> ReadAt for Counting<S> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.stats.reads.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.read_exact_at(offset, buf)
    }
}

impl<S> fmt::Debug for Counting<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counting").field("stats", &self.stats).finish_non_exhaustive()
    }
}

/// `std::io::Read + Seek` over a [`ReadAt`], for readers (`object`'s `ReadCache`) that want a stream.
pub(crate) struct Cursor<'a> {
    pub src: &'a dyn ReadAt,
    pub pos: u64,
}

impl io::Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.src.len().saturating_sub(self.pos);
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        self.src.read_exact_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Cursor<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let invalid = || io::Error::from(io::ErrorKind::InvalidInput);
        self.pos = match to {
            io::SeekFrom::Start(p) => p,
            io::SeekFrom::End(d) => self.src.len().checked_add_signed(d).ok_or_else(invalid)?,
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(invalid)?,
        };
        Ok(self.pos)
    }
}
