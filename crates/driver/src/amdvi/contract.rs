//! AMD-Vi behind the common driver contract.

use core::ops::Range;

use super::{AmdOutcome, AmdReport, Amdvi, Attachment, DeviceState, DomainId, DteProblem};
use crate::contract::{
    rid16, CrashOutcome, CrashReport, DeviceId, DomainHandle, DriverError, EntryRefusal, Found, IommuDriver, IommuKind,
    Perm, Target, UnitRefusal,
};
use crate::{BootEnv, Platform};

const KIND: IommuKind = IommuKind::Amdvi;

impl From<AmdReport> for CrashReport {
    fn from(r: AmdReport) -> Self {
        CrashReport {
            kind: KIND,
            policy: r.policy,
            outcome: match r.outcome {
                AmdOutcome::NotLive => CrashOutcome::NotLive,
                AmdOutcome::Reset => CrashOutcome::Reset,
                AmdOutcome::Adopted => CrashOutcome::Adopted,
                AmdOutcome::FellBack(why) => CrashOutcome::FellBack(UnitRefusal::Amdvi(why)),
            },
            adopted: r.adopted.into_iter().map(DeviceId::from).collect(),
            refused: r.problems.into_iter().map(EntryRefusal::Amdvi).collect(),
            frames_allocated: r.frames_allocated,
            bytes_read: r.bytes_read,
        }
    }
}

impl From<DteProblem> for EntryRefusal {
    fn from(p: DteProblem) -> Self {
        EntryRefusal::Amdvi(p)
    }
}

fn target(to: Target) -> Attachment {
    match to {
        Target::Domain(d) => Attachment::Domain(DomainId(d.0)),
        Target::Identity => Attachment::PassThrough,
    }
}

impl IommuDriver for Amdvi {
    fn kind(&self) -> IommuKind {
        KIND
    }
    fn translating(&self) -> bool {
        Amdvi::translating(self)
    }
    fn reserve_iova_holes(&mut self, holes: &[Range<u64>]) {
        Amdvi::reserve_iova_holes(self, holes)
    }
    /// The device table is adopted in place at boot: the probe only reports what the boot adopted.
    fn device_found(&mut self, _: &mut dyn Platform, _: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal> {
        let adopted = id.rid().and_then(|devid| self.device(devid));
        Ok(if matches!(adopted, Some(DeviceState::Adopted { .. })) { Found::Adopted } else { Found::NotLive })
    }
    fn create_domain(&mut self, mut hw: &mut dyn Platform) -> Result<DomainHandle, DriverError> {
        Ok(DomainHandle(Amdvi::create_domain(self, &mut hw)?.0))
    }
    fn attach(&mut self, mut hw: &mut dyn Platform, id: DeviceId, to: Target) -> Result<(), DriverError> {
        Ok(Amdvi::attach(self, &mut hw, rid16(KIND, id)?, target(to))?)
    }
    fn contain(&mut self, mut hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError> {
        Ok(Amdvi::contain(self, &mut hw, rid16(KIND, id)?)?)
    }
    fn map(
        &mut self,
        mut hw: &mut dyn Platform,
        d: DomainHandle,
        pa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<u64, DriverError> {
        Ok(Amdvi::map(self, &mut hw, DomainId(d.0), pa, size, perm.read, perm.write)?)
    }
    fn unmap(&mut self, mut hw: &mut dyn Platform, d: DomainHandle, iova: u64, size: u64) -> Result<(), DriverError> {
        Ok(Amdvi::unmap(self, &mut hw, DomainId(d.0), iova, size)?)
    }
    fn scratch_region(&self) -> Option<Range<u64>> {
        Amdvi::scratch_region(self)
    }
    fn scratch_frames(&self) -> u64 {
        Amdvi::scratch_frames(self)
    }
}
