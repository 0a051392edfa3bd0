//! The IO Remapping Table (Arm DEN0049, "IO Remapping Table Platform Design Document"), read as Linux's
//! `drivers/acpi/arm64/iort.c` reads it.
//!
//! After the header: the node count, the offset of the first node, a reserved word, then the nodes,
//! back to back. Each node starts with `Type`, `Length` (16 bits), `Revision`, `Identifier`, the number
//! of ID mappings and the offset of its ID mapping array (3.1.1). An ID mapping (3.4) sends input IDs
//! `input_base ..= input_base + id_count` (the table stores the count minus one) to `output_base` and on
//! in the node at `output_ref` (an offset from the table's start). A PCI root complex's mappings take a
//! requester ID to an SMMUv3's StreamID; [`Iort::stream_of`] follows that one hop, as
//! `iort_node_map_id` does for the common case. RMR nodes (3.1.1.7) list memory that devices keep
//! using, like VT-d's RMRRs.

use super::{AcpiError, Bytes, Problem, SdtHeader, Sig, Table};

/// Node types (DEN0049 table 3).
pub mod node {
    /// A group of GICv3 ITSs: where MSIs end up; walked past (header and mappings only).
    pub const ITS_GROUP: u8 = 0;
    /// A non-PCI device named by its ACPI path, decoded as [`super::NodeBody::NamedComponent`].
    pub const NAMED_COMPONENT: u8 = 1;
    /// A PCI root complex: its ID mappings take requester IDs to StreamIDs ([`super::RootComplex`]).
    pub const ROOT_COMPLEX: u8 = 2;
    /// An SMMUv1 or SMMUv2: walked past (header and mappings only).
    pub const SMMU_V1_V2: u8 = 3;
    /// An SMMUv3, decoded as [`super::Smmuv3`].
    pub const SMMU_V3: u8 = 4;
    /// A performance monitor counter group: walked past.
    pub const PMCG: u8 = 5;
    /// Reserved memory ranges that devices keep using, decoded as [`super::Rmr`].
    pub const RMR: u8 = 6;
}

/// ID mapping flag: every input ID maps to `output_base` (e.g. a device's MSIs).
pub const SINGLE_MAPPING: u32 = 1;
const NODE_HEADER: usize = 16;
const MAPPING: usize = 20;
const RMR_DESCRIPTOR: usize = 20;

/// A parsed IORT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iort {
    /// The table's common header.
    pub header: SdtHeader,
    /// The `Number of IORT Nodes` nodes, in table order from `Offset to Array of IORT Nodes`.
    pub nodes: Vec<IortNode>,
}

/// One IORT node: its common header (3.1.1), ID mappings and the body of the types decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IortNode {
    /// Offset from the table's start: what other nodes' `output_ref` name.
    pub offset: usize,
    /// Node `Type` (byte 0), one of [`node`]'s constants or an unknown value.
    pub kind: u8,
    /// Node `Revision` (byte 3): which layout of the node type's body.
    pub revision: u8,
    /// Node `Identifier` (bytes 4-7): unique among the table's nodes (reserved in early issues of DEN0049).
    pub identifier: u32,
    /// The node's ID mapping array, from `Reference to ID Array`; always inside the node.
    pub mappings: Vec<IdMapping>,
    /// What follows the header, for the types this parser decodes.
    pub body: NodeBody,
}

/// The type-specific part of an IORT node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeBody {
    /// [`node::ROOT_COMPLEX`].
    RootComplex(RootComplex),
    /// [`node::SMMU_V3`].
    Smmuv3(Smmuv3),
    /// [`node::RMR`].
    Rmr(Rmr),
    /// [`node::NAMED_COMPONENT`] (when the node is long enough to hold a name).
    NamedComponent {
        /// `Device object name` (from byte 29): the ACPI path, e.g. `\_SB.ETH0`, up to its NUL.
        name: String,
    },
    /// ITS groups, SMMUv1/v2, PMCGs and unknown types: only the header and mappings are decoded.
    Other,
}

/// One ID mapping (3.4): a range of input IDs (requester IDs, StreamIDs) to output IDs of another node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdMapping {
    /// `Input base`: the first input ID of the range.
    pub input_base: u32,
    /// The number of IDs in the range minus one, as stored.
    pub id_count: u32,
    /// `Output base`: the output ID of `input_base`.
    pub output_base: u32,
    /// Offset of the output node from the table's start.
    pub output_ref: u32,
    /// `Flags`: [`SINGLE_MAPPING`] in bit 0.
    pub flags: u32,
}

impl IdMapping {
    /// The output ID for `id`, if this mapping covers it.
    pub fn map(&self, id: u32) -> Option<u32> {
        if self.flags & SINGLE_MAPPING != 0 {
            return Some(self.output_base);
        }
        let delta = id.checked_sub(self.input_base)?;
        (delta <= self.id_count).then(|| self.output_base.wrapping_add(delta))
    }
}

/// A PCI root complex node (3.1.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RootComplex {
    /// `Memory access properties` (bytes 16-23): cache coherency, allocation hints and memory access
    /// flags of the root complex's DMA.
    pub memory_access: u64,
    /// `ATS Attribute` (bytes 24-27): ATS supported (bit 0), and in later revisions PRI and PASID support.
    pub ats: u32,
    /// `PCI Segment number` (bytes 28-31): the segment whose requester IDs the mappings take.
    pub segment: u32,
    /// Memory address size limit in bits (revision 1 and later), when the node is long enough.
    pub address_limit: Option<u8>,
}

/// An SMMUv3 node (3.1.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Smmuv3 {
    /// `Base Address` (bytes 16-23): the SMMU's register page 0, physical.
    pub base: u64,
    /// COHACC override (bit 0), HTTU override (bits 2:1), proximity domain valid (3), DeviceID
    /// mapping index valid (4).
    pub flags: u32,
    /// `Model` (bytes 40-43), for nodes long enough to hold it: 0 generic, or an implementation whose
    /// errata Linux works around (Cavium CN99xx, HiSilicon Hi161x).
    pub model: Option<u32>,
}

/// A reserved memory range node (3.1.1.7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rmr {
    /// RMR `Flags` (bytes 16-19): remapping permitted (bit 0), access privilege (bit 1), access
    /// attributes (bits 9:2).
    pub flags: u32,
    /// `(base, length)` of each memory range descriptor.
    pub ranges: Vec<(u64, u64)>,
}

/// Where a requester ID goes: the SMMUv3 and the StreamID it arrives with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOf {
    /// Table offset of the SMMUv3 node, as an `Output reference` names it.
    pub smmu_offset: usize,
    /// That SMMUv3's register base.
    pub smmu_base: u64,
    /// The StreamID the device's transactions carry into it.
    pub stream_id: u32,
}

impl Iort {
    /// Decodes a checked IORT: `Number of IORT Nodes` nodes from `Offset to Array of IORT Nodes`. A node
    /// shorter than its header or type's fixed part, past the table's end, or with an ID mapping or
    /// memory range array outside it, is refused; a hostile count stops at the table's end.
    pub fn parse(table: &Table) -> Result<Iort, AcpiError> {
        table.expect(Sig::IORT)?;
        let b = table.reader();
        let count = b.u32(36, "Number of IORT Nodes")?;
        let first = b.u32(40, "Offset to Array of IORT Nodes")?;
        let mut off = usize::try_from(first).unwrap_or(usize::MAX);
        if off < 48 || off > b.len() {
            let problem = Problem::OffsetOutside { value: first.into(), len: b.len() };
            return Err(b.err(40, "Offset to Array of IORT Nodes", problem));
        }
        let mut nodes = Vec::new();
        // Each node is at least 16 bytes and must fit the table, so a hostile count ends at its end.
        for _ in 0..count {
            let kind = b.u8(off, "node Type")?;
            let length = usize::from(b.u16(off + 1, "node Length")?);
            let end = b.entry_end(off, length, NODE_HEADER, b.len(), "node Length")?;
            let nb = Bytes::new(Sig::IORT, &table.bytes()[..end]);
            nodes.push(IortNode {
                offset: off,
                kind,
                revision: b.u8(off + 3, "node Revision")?,
                identifier: b.u32(off + 4, "node Identifier")?,
                mappings: mappings(nb, off)?,
                body: body(nb, off, kind, end)?,
            });
            off = end;
        }
        Ok(Iort { header: table.header.clone(), nodes })
    }

    /// The node at a table offset, as an `output_ref` names it.
    pub fn node_at(&self, offset: u32) -> Option<&IortNode> {
        self.nodes.iter().find(|n| n.offset as u64 == u64::from(offset))
    }

    /// The SMMUv3 nodes, with their offsets.
    pub fn smmuv3s(&self) -> impl Iterator<Item = (usize, &Smmuv3)> {
        self.nodes.iter().filter_map(|n| match &n.body {
            NodeBody::Smmuv3(s) => Some((n.offset, s)),
            _ => None,
        })
    }

    /// The SMMUv3 and StreamID for requester ID `rid` of PCI segment `segment`: the first mapping of
    /// that segment's root complex that covers `rid` and leads to an SMMUv3. `None` when the device is
    /// not behind an SMMUv3 (no mapping, or a mapping straight to an ITS group).
    pub fn stream_of(&self, segment: u32, rid: u32) -> Option<StreamOf> {
        let rc = self.nodes.iter().filter(|n| matches!(&n.body, NodeBody::RootComplex(r) if r.segment == segment));
        for n in rc {
            for m in n.mappings.iter().filter(|m| m.flags & SINGLE_MAPPING == 0) {
                let Some(stream_id) = m.map(rid) else { continue };
                if let Some(out) = self.node_at(m.output_ref) {
                    if let NodeBody::Smmuv3(s) = &out.body {
                        return Some(StreamOf { smmu_offset: out.offset, smmu_base: s.base, stream_id });
                    }
                }
            }
        }
        None
    }
}

impl Iort {
    /// The PCI segment and requester ID whose traffic reaches the SMMUv3 at `smmu_base` as `stream_id`:
    /// [`Iort::stream_of`] backwards, through the first root-complex mapping that covers it. `None` for a
    /// stream of a named component or one no root complex maps.
    pub fn requester_of(&self, smmu_base: u64, stream_id: u32) -> Option<(u32, u32)> {
        for n in &self.nodes {
            let NodeBody::RootComplex(rc) = &n.body else { continue };
            for m in n.mappings.iter().filter(|m| m.flags & SINGLE_MAPPING == 0) {
                let to_smmu = self
                    .node_at(m.output_ref)
                    .is_some_and(|o| matches!(&o.body, NodeBody::Smmuv3(s) if s.base == smmu_base));
                let Some(delta) = stream_id.checked_sub(m.output_base) else { continue };
                if to_smmu && delta <= m.id_count {
                    if let Some(rid) = m.input_base.checked_add(delta) {
                        return Some((rc.segment, rid));
                    }
                }
            }
        }
        None
    }
}

/// A node's ID mapping array, which must lie inside the node (`b` ends where the node ends).
fn mappings(b: Bytes<'_>, off: usize) -> Result<Vec<IdMapping>, AcpiError> {
    let count = b.u32(off + 8, "Number of ID mappings")?;
    let at = b.u32(off + 12, "Reference to ID Array")?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let start = off.checked_add(at as usize).filter(|_| at as usize >= NODE_HEADER);
    let size = (count as usize).checked_mul(MAPPING);
    let (Some(start), Some(size)) = (start, size) else {
        let problem = Problem::OffsetOutside { value: at.into(), len: b.len() - off };
        return Err(b.err(off + 12, "Reference to ID Array", problem));
    };
    let array = b.slice(start, size, "ID mapping array")?;
    let a = Bytes::new(Sig::IORT, array);
    let at = |i: usize, f| a.u32(i, f);
    (0..count as usize)
        .map(|i| {
            let o = i * MAPPING;
            Ok(IdMapping {
                input_base: at(o, "Input base")?,
                id_count: at(o + 4, "Number of IDs")?,
                output_base: at(o + 8, "Output base")?,
                output_ref: at(o + 12, "Output reference")?,
                flags: at(o + 16, "Flags")?,
            })
        })
        .collect()
}

fn body(b: Bytes<'_>, off: usize, kind: u8, end: usize) -> Result<NodeBody, AcpiError> {
    let len = end - off;
    Ok(match kind {
        node::ROOT_COMPLEX => {
            b.entry_end(off, len, 32, end, "root complex node Length")?;
            RootComplex {
                memory_access: b.u64(off + 16, "Memory access properties")?,
                ats: b.u32(off + 24, "ATS Attribute")?,
                segment: b.u32(off + 28, "PCI Segment number")?,
                address_limit: if len > 32 { Some(b.u8(off + 32, "Memory address size limit")?) } else { None },
            }
            .into()
        }
        node::SMMU_V3 => {
            b.entry_end(off, len, 28, end, "SMMUv3 node Length")?;
            NodeBody::Smmuv3(Smmuv3 {
                base: b.u64(off + 16, "SMMUv3 Base Address")?,
                flags: b.u32(off + 24, "SMMUv3 Flags")?,
                model: if len >= 44 { Some(b.u32(off + 40, "SMMUv3 Model")?) } else { None },
            })
        }
        node::RMR => {
            b.entry_end(off, len, 28, end, "RMR node Length")?;
            let count = b.u32(off + 20, "Number of Memory Range Descriptors")?;
            let at = b.u32(off + 24, "Reference to Memory Range Descriptors")?;
            let start = off.checked_add(at as usize).filter(|_| at as usize >= 28 || count == 0);
            let size = (count as usize).checked_mul(RMR_DESCRIPTOR);
            let (Some(start), Some(size)) = (start, size) else {
                let problem = Problem::OffsetOutside { value: at.into(), len };
                return Err(b.err(off + 24, "Reference to Memory Range Descriptors", problem));
            };
            let descs = b.slice(start, size, "Memory Range Descriptors")?;
            let d = Bytes::new(Sig::IORT, descs);
            let ranges = (0..count as usize)
                .map(|i| Ok((d.u64(i * RMR_DESCRIPTOR, "Base")?, d.u64(i * RMR_DESCRIPTOR + 8, "Length")?)))
                .collect::<Result<_, AcpiError>>()?;
            NodeBody::Rmr(Rmr { flags: b.u32(off + 16, "RMR Flags")?, ranges })
        }
        node::NAMED_COMPONENT if len > 29 => {
            let raw = b.slice(off + 29, len - 29, "Device object name")?;
            let name = raw.split(|&c| c == 0).next().unwrap_or_default();
            NodeBody::NamedComponent { name: String::from_utf8_lossy(name).into_owned() }
        }
        _ => NodeBody::Other,
    })
}

impl From<RootComplex> for NodeBody {
    fn from(r: RootComplex) -> Self {
        NodeBody::RootComplex(r)
    }
}
