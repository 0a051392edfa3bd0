//! The kernels' device drivers: what Linux's e1000e, nvme and a copy-engine driver do with their
//! devices through the DMA API, on top of `iommu-driver`. The primary kernel runs all three; after the
//! panic nobody services them; the crash kernel resets the disk and writes the dump through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use iommu_driver::{Attachment, DeviceId, DomainId, Perm, PhysMem};
use iommu_emu::devices::nic::{RxDesc, RX_DESC_SIZE};
use iommu_emu::devices::nvme::{CqEntry, SqEntry, CQE_SIZE, SQE_SIZE};
use iommu_emu::devices::{BulkDesc, DmaDevice, Msi};
use iommu_emu::mem::Page;

use crate::machine::{Kernel, Machine, BULK_RID, DISK_RID, NIC_RID};
use crate::unit::Driver;

/// Why a kernel's device driver could not do its job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KernelError {
    /// The IOMMU driver refused a domain, attach, map, unmap or interrupt entry.
    #[error("IOMMU: {0}")]
    Iommu(#[from] iommu_driver::DriverError),
    /// The kernel's buffer pool (or the crash region) has no free page left.
    #[error("out of pages for device buffers")]
    NoPages,
    /// No device at this requester ID on the machine.
    #[error("device {0:#06x} missing")]
    NoDevice(u16),
    /// A CPU access to a ring, descriptor or buffer page failed.
    #[error("memory: {0}")]
    Mem(#[from] iommu_driver::MemError),
    /// Commands in flight and no completion interrupt for this long (Linux's nvme_timeout, "I/O timeout").
    #[error("I/O timeout: {inflight} commands in flight and no completion interrupt for {ticks} ticks")]
    IrqTimeout {
        /// Commands submitted and not completed.
        inflight: usize,
        /// Ticks waited with no completion interrupt.
        ticks: u64,
    },
}

/// A DMA-mapped page: where the CPU sees it and where the device does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// Physical address of the 4 KiB page, where the CPU writes descriptors and data.
    pub pa: u64,
    /// The address the device was given: the IOVA the IOMMU driver mapped, or `pa` in pass-through.
    pub iova: u64,
}

/// One kernel's view: the machine, its IOMMU driver, whose pages it allocates, and the set of pages it
/// has handed to devices (their writes there are expected).
pub struct Os<'a> {
    /// The machine the kernel runs on.
    pub m: &'a mut Machine,
    /// This kernel's IOMMU driver, after its normal or crash boot.
    pub drv: &'a mut Driver,
    /// Which kernel this is: where its pages come from, which CPUs its interrupts target.
    pub k: Kernel,
    /// Every page either kernel gave a device as a ring or buffer: changes there after the panic count as
    /// [`ChangedPages::buffers`](crate::outcome::ChangedPages::buffers), not corruption. (The crash kernel's
    /// dump buffers are left out: they lie in its own region, which is never old memory.)
    pub device_pages: &'a mut BTreeSet<u64>,
    /// The crash kernel's own pages handed to devices: DMA there is asked for, not a hit.
    pub crash_own: &'a mut crate::ledger::PageRanges,
    /// Where each device's interrupts should arrive, and which did.
    pub irq: &'a mut IrqWiring,
}

/// The interrupts the kernels asked for: per device, the CPU and vector its MSI should reach (set when a driver
/// programs it), and how many reached it since its driver last looked.
#[derive(Clone, Debug, Default)]
pub struct IrqWiring {
    /// Requester ID → (APIC ID, vector) the last kernel to program that source asked for.
    pub expect: BTreeMap<u32, (u32, u8)>,
    /// Requester ID → interrupts that reached their expected target since the driver last looked.
    pub arrived: BTreeMap<u32, u64>,
}

/// The NIC's MSI vector (Linux hands out vectors from 0x31 up; the values only need to differ).
pub const NIC_VECTOR: u8 = 0x41;
/// The disk's MSI vector, whose arrival lets [`DiskDriver::reap`] consume completions.
pub const DISK_VECTOR: u8 = 0x42;
/// The timer's vector (Linux `ISA_IRQ_VECTOR(0)`), the same in both kernels.
pub const TIMER_VECTOR: u8 = 0x30;
/// A completion wait longer than this many ticks is an I/O timeout.
pub const IRQ_TIMEOUT_TICKS: u64 = 32;

impl Os<'_> {
    fn map_new_page(&mut self, dom: DomainId) -> Result<Mapped, KernelError> {
        let pa = self.m.buffer_page(self.k).ok_or(KernelError::NoPages)?;
        self.device_pages.insert(pa);
        if self.k == Kernel::Crash {
            self.crash_own.insert(pa, pa + 4096);
        }
        let iova = self.drv.map(&mut self.m.platform(self.k), dom, pa, 4096, Perm::RW)?;
        Ok(Mapped { pa, iova })
    }

    fn unmap(&mut self, dom: DomainId, m: Mapped) -> Result<(), KernelError> {
        Ok(self.drv.unmap(&mut self.m.platform(self.k), dom, m.iova, 4096)?)
    }

    /// Program `rid`'s MSI to reach `apic_id` on `vector`: through an interrupt-remapping entry where the IOMMU
    /// driver remaps interrupts, else in compatibility format (Linux `msi_domain_activate` → `irq_msi_compose_msg`).
    ///
    /// On an Arm machine (SMMUv3, no remapping table) the message is a write to the ITS doorbell through the
    /// device's own translation: the doorbell page is mapped write-only into `dom` (Linux `iommu_dma_prepare_msi`
    /// → `iommu_dma_get_msi_page`) and the data is the EventID, here the vector.
    fn program_msi(&mut self, rid: u16, dom: DomainId, apic_id: u32, vector: u8) -> Result<(), KernelError> {
        let target = iommu_driver::irq::IrqTarget { apic_id, vector };
        let msg = match self.drv.alloc_irq(&mut self.m.platform(self.k), DeviceId::from(rid), target)? {
            Some(m) => Msi { addr: m.addr, data: m.data },
            None if self.m.cfg.iommu == crate::unit::IommuKind::Smmuv3 => {
                let page = crate::machine::ITS_DOORBELL & !0xfff;
                let iova = self.drv.map(&mut self.m.platform(self.k), dom, page, 4096, Perm::WO)?;
                Msi { addr: iova + (crate::machine::ITS_DOORBELL & 0xfff), data: vector as u32 }
            }
            None => {
                let (addr, data) = iommu_emu::irq::compat_message(apic_id, vector);
                Msi { addr, data }
            }
        };
        let dev = self.m.device(rid).ok_or(KernelError::NoDevice(rid))?;
        DmaDevice::set_msi(dev, Some(msg));
        self.irq.expect.insert(rid as u32, (apic_id, vector));
        self.irq.arrived.remove(&(rid as u32));
        Ok(())
    }

    /// The IO-APIC's timer pin routed to `apic_id` (Linux `setup_IO_APIC` → `mp_irqdomain_activate`): through an
    /// interrupt-remapping entry where the IOMMU driver remaps, else in compatibility form. Returns the message
    /// the IO-APIC now sends for the timer.
    pub fn route_timer(&mut self, apic_id: u32) -> Result<Msi, KernelError> {
        let target = iommu_driver::irq::IrqTarget { apic_id, vector: TIMER_VECTOR };
        let rid = crate::machine::IOAPIC_RID;
        let msg = match self.drv.alloc_irq(&mut self.m.platform(self.k), DeviceId::from(rid), target)? {
            Some(m) => Msi { addr: m.addr, data: m.data },
            None => {
                let (addr, data) = iommu_emu::irq::compat_message(apic_id, TIMER_VECTOR);
                Msi { addr, data }
            }
        };
        self.irq.expect.insert(rid as u32, (apic_id, TIMER_VECTOR));
        Ok(msg)
    }

    /// The local APIC this kernel's interrupts go to: the primary kernel spreads them (`cpu` + 1), the crash
    /// kernel has one CPU.
    fn cpu(&self, spread: u32) -> u32 {
        match self.k {
            Kernel::Primary => 1 + spread,
            Kernel::Crash => self.m.crash_cpu(),
        }
    }

    fn domain_for(&mut self, rid: u16) -> Result<DomainId, KernelError> {
        let dom = self.drv.create_domain(&mut self.m.platform(self.k))?;
        self.drv.attach(&mut self.m.platform(self.k), DeviceId::from(rid), Attachment::Domain(dom))?;
        Ok(dom)
    }
}

/// Descriptors in the NIC's receive ring.
pub const NIC_RING: u32 = 64;

/// Descriptors in the receive ring of the NIC port whose link is down.
pub const IDLE_NIC_RING: u32 = 8;
/// The idle NIC port's MSI vector.
pub const IDLE_NIC_VECTOR: u8 = 0x43;

/// The e1000e-like receive path: a ring of descriptors, each posting one mapped buffer.
pub struct NicDriver {
    rid: u16,
    dom: DomainId,
    ring: Mapped,
    bufs: Vec<Option<Mapped>>,
    next_clean: u32,
    tail: u32,
}

impl NicDriver {
    /// Bring the NIC up in a fresh DMA domain: map its ring and post a buffer in every slot but one, point
    /// the device at the ring, and program its MSI.
    pub fn probe(os: &mut Os) -> Result<Self, KernelError> {
        Self::probe_port(os, NIC_RID, NIC_RING, NIC_VECTOR)
    }

    /// [`Self::probe`] for the port at `rid`, with a ring of `ring_len` descriptors.
    pub fn probe_port(os: &mut Os, rid: u16, ring_len: u32, vector: u8) -> Result<Self, KernelError> {
        let dom = os.domain_for(rid)?;
        let ring = os.map_new_page(dom)?;
        let mut d = NicDriver { rid, dom, ring, bufs: vec![None; ring_len as usize], next_clean: 0, tail: 0 };
        for _ in 0..ring_len - 1 {
            d.post(os)?;
        }
        let nic = os.m.device(rid).and_then(|x| x.as_nic_mut()).ok_or(KernelError::NoDevice(rid))?;
        nic.set_rx_ring(ring.iova, ring_len);
        nic.set_rx_tail(d.tail);
        let cpu = os.cpu(0);
        os.program_msi(rid, dom, cpu, vector)?;
        Ok(d)
    }

    /// The buffer the NIC will fill last of those posted, and how many packets must arrive before it is:
    /// (IOVA, packets). `None` when no buffer is posted.
    pub fn last_posted(&self, m: &mut Machine) -> Option<(u64, u32)> {
        let len = self.bufs.len() as u32;
        let head = m.device(self.rid).and_then(|x| x.as_nic_mut())?.rx_head();
        let posted = (self.tail + len - head % len) % len;
        let last = (self.tail + len - 1) % len;
        (posted > 0).then(|| self.bufs[last as usize].map(|b| (b.iova, posted))).flatten()
    }

    /// Post a fresh buffer at the tail slot.
    fn post(&mut self, os: &mut Os) -> Result<(), KernelError> {
        let buf = os.map_new_page(self.dom)?;
        os.m.mem.write(self.ring.pa + self.tail as u64 * RX_DESC_SIZE, &RxDesc::posted(buf.iova).to_bytes())?;
        self.bufs[self.tail as usize] = Some(buf);
        self.tail = (self.tail + 1) % self.bufs.len() as u32;
        Ok(())
    }

    /// The interrupt handler's work: take every completed packet, unmap its buffer (strict invalidation),
    /// and post a new one in its place.
    pub fn service(&mut self, os: &mut Os) -> Result<u32, KernelError> {
        let mut n = 0;
        for _ in 0..self.bufs.len() {
            let at = self.ring.pa + self.next_clean as u64 * RX_DESC_SIZE;
            let mut b = [0u8; 16];
            os.m.mem.read(at, &mut b)?;
            if !RxDesc::from_bytes(b).dd() {
                break;
            }
            if let Some(buf) = self.bufs[self.next_clean as usize].take() {
                os.unmap(self.dom, buf)?;
            }
            self.next_clean = (self.next_clean + 1) % self.bufs.len() as u32;
            self.post(os)?;
            n += 1;
        }
        if n > 0 {
            let tail = self.tail;
            if let Some(nic) = os.m.device(self.rid).and_then(|x| x.as_nic_mut()) {
                nic.set_rx_tail(tail);
            }
        }
        Ok(n)
    }
}

/// Entries in the disk's queue pair.
pub const DISK_QUEUE: u32 = 64;

/// The nvme-like driver: one queue pair; a write carries up to the disk's MDTS of contiguous pages in one mapped
/// buffer (one IOVA range, as `dma_map_sg` through an IOMMU gives), a read one 4 KiB block.
pub struct DiskDriver {
    dom: DomainId,
    sq: Mapped,
    cq: Mapped,
    sq_tail: u32,
    cq_head: u32,
    phase: bool,
    /// Command ID → its buffer and length in pages.
    inflight: BTreeMap<u16, (Mapped, u64)>,
    next_cid: u16,
    /// Completions with an error status.
    pub errors: u64,
    /// Ticks waited with commands in flight and no completion interrupt.
    waited: u64,
}

/// A block command.
#[derive(Clone, Copy, Debug)]
pub enum Io<'a> {
    /// Read block `lba` into a fresh buffer (the device writes memory).
    Read {
        /// Block number, in 4 KiB blocks.
        lba: u64,
    },
    /// Write `pages` to the blocks from `lba` on (the device reads memory), in one command: at most the
    /// disk's MDTS ([`crate::machine::DISK_MDTS_BLOCKS`]).
    Write {
        /// First block number, in 4 KiB blocks (the dump uses the page frame number).
        lba: u64,
        /// Each block's contents (`None`: zeros), placed in one freshly mapped contiguous buffer before
        /// submission, as the copy out of `/proc/vmcore` does: by sharing the page, not copying it.
        pages: &'a [Option<Arc<Page>>],
    },
}

impl DiskDriver {
    /// Bring the disk up: [`DiskDriver::map_queues`] then [`DiskDriver::start`], the order Linux's probe
    /// follows after the device reset.
    pub fn probe(os: &mut Os) -> Result<Self, KernelError> {
        let mapped = Self::map_queues(os)?;
        Self::start(os, mapped)
    }

    /// The probe's first half: a domain for the disk and its queue pages mapped (the DMA API calls a driver
    /// makes before it programs the device).
    pub fn map_queues(os: &mut Os) -> Result<(DomainId, Mapped, Mapped), KernelError> {
        let dom = os.domain_for(DISK_RID)?;
        let sq = os.map_new_page(dom)?;
        let cq = os.map_new_page(dom)?;
        Ok((dom, sq, cq))
    }

    /// The probe's second half: program the device's queues.
    pub fn start(os: &mut Os, (dom, sq, cq): (DomainId, Mapped, Mapped)) -> Result<Self, KernelError> {
        let blk = os.m.device(DISK_RID).and_then(|x| x.as_blk_mut()).ok_or(KernelError::NoDevice(DISK_RID))?;
        blk.set_queues(sq.iova, cq.iova, DISK_QUEUE);
        let cpu = os.cpu(1);
        os.program_msi(DISK_RID, dom, cpu, DISK_VECTOR)?;
        Ok(DiskDriver {
            dom,
            sq,
            cq,
            sq_tail: 0,
            cq_head: 0,
            phase: true,
            inflight: BTreeMap::new(),
            next_cid: 0,
            errors: 0,
            waited: 0,
        })
    }

    /// Commands submitted and not yet completed.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Queue one command; `false` when the queue is full.
    pub fn submit(&mut self, os: &mut Os, io: Io) -> Result<bool, KernelError> {
        if self.inflight.len() as u32 >= DISK_QUEUE - 1 {
            return Ok(false);
        }
        // A write's buffer holds its pages from the start (the copy into it is not what is simulated).
        let (blocks, data) = match io {
            Io::Read { .. } => (1, &[][..]),
            Io::Write { pages, .. } => (pages.len().max(1), pages),
        };
        let pa = os.m.buffer_pages_holding(os.k, blocks, data).ok_or(KernelError::NoPages)?;
        match os.k {
            Kernel::Crash => os.crash_own.insert(pa, pa + blocks as u64 * 4096),
            Kernel::Primary => os.device_pages.extend((0..blocks as u64).map(|i| pa + i * 4096)),
        }
        let iova = os.drv.map(&mut os.m.platform(os.k), self.dom, pa, blocks as u64 * 4096, Perm::RW)?;
        let buf = Mapped { pa, iova };
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let sqe = match io {
            Io::Read { lba } => SqEntry::read(cid, buf.iova, lba, 1),
            Io::Write { lba, .. } => SqEntry::write(cid, buf.iova, lba, blocks as u32),
        };
        os.m.mem.write(self.sq.pa + self.sq_tail as u64 * SQE_SIZE, &sqe.to_bytes())?;
        self.inflight.insert(cid, (buf, blocks as u64));
        self.sq_tail = (self.sq_tail + 1) % DISK_QUEUE;
        let tail = self.sq_tail;
        if let Some(blk) = os.m.device(DISK_RID).and_then(|x| x.as_blk_mut()) {
            blk.ring_sq_tail(tail);
        }
        Ok(true)
    }

    /// The interrupt handler: once the disk's completion interrupt has arrived, consume completions (phase tag),
    /// unmap and free their buffers, ring the CQ head doorbell. Without one the completions wait, and commands in
    /// flight with no interrupt for [`IRQ_TIMEOUT_TICKS`] calls are an I/O timeout.
    pub fn reap(&mut self, os: &mut Os) -> Result<u32, KernelError> {
        if os.irq.arrived.remove(&(DISK_RID as u32)).is_none() {
            if self.inflight.is_empty() {
                self.waited = 0;
                return Ok(0);
            }
            self.waited += 1;
            if self.waited > IRQ_TIMEOUT_TICKS {
                return Err(KernelError::IrqTimeout { inflight: self.inflight.len(), ticks: self.waited - 1 });
            }
            return Ok(0);
        }
        self.waited = 0;
        let mut n = 0;
        for _ in 0..DISK_QUEUE {
            let mut b = [0u8; 16];
            os.m.mem.read(self.cq.pa + self.cq_head as u64 * CQE_SIZE, &mut b)?;
            let cqe = CqEntry::from_bytes(&b);
            if cqe.phase != self.phase {
                break;
            }
            if !cqe.is_success() {
                self.errors += 1;
            }
            if let Some((buf, pages)) = self.inflight.remove(&cqe.cid) {
                os.drv.unmap(&mut os.m.platform(os.k), self.dom, buf.iova, pages * 4096)?;
            }
            self.cq_head = (self.cq_head + 1) % DISK_QUEUE;
            if self.cq_head == 0 {
                self.phase = !self.phase;
            }
            n += 1;
        }
        if n > 0 {
            let head = self.cq_head;
            if let Some(blk) = os.m.device(DISK_RID).and_then(|x| x.as_blk_mut()) {
                blk.ring_cq_head(head);
            }
        }
        Ok(n)
    }
}

/// The copy engine: left in pass-through (identity) by the primary kernel where the platform allows it,
/// else (SEV-SNP hosts) in a DMA domain. It loops over a list of copies until reset.
pub fn start_bulk(os: &mut Os, copies: usize, passthrough: bool) -> Result<(), KernelError> {
    let dom = if passthrough {
        os.drv.attach(&mut os.m.platform(os.k), DeviceId::from(BULK_RID), Attachment::Identity)?;
        None
    } else {
        Some(os.domain_for(BULK_RID)?)
    };
    let page = |os: &mut Os| -> Result<Mapped, KernelError> {
        match dom {
            Some(d) => os.map_new_page(d),
            None => {
                let pa = os.m.buffer_page(os.k).ok_or(KernelError::NoPages)?;
                os.device_pages.insert(pa);
                Ok(Mapped { pa, iova: pa })
            }
        }
    };
    let list = page(os)?;
    for i in 0..copies {
        let src = page(os)?;
        let dst = page(os)?;
        os.m.mem.write(src.pa, &[0x5a; 64])?;
        let d = BulkDesc { src: src.iova, dst: dst.iova, len: 4096 };
        os.m.mem.write(list.pa + i as u64 * 24, &d.to_bytes())?;
    }
    let bulk = os.m.device(BULK_RID).and_then(|x| x.as_bulk_mut()).ok_or(KernelError::NoDevice(BULK_RID))?;
    bulk.start(list.iova, copies as u32);
    Ok(())
}
