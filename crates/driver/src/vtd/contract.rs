//! VT-d behind the common driver contract.

use core::ops::Range;

use super::{Attachment, DeviceState, DomainId, EntryProblem, HandoverOutcome, HandoverReport, Vtd};
use crate::contract::{
    rid16, CrashOutcome, CrashReport, DeviceId, DomainHandle, DriverError, EntryRefusal, Found, IommuDriver, IommuKind,
    Perm, Target, UnitRefusal,
};
use crate::{BootEnv, Platform};

const KIND: IommuKind = IommuKind::Vtd;

impl From<HandoverReport> for CrashReport {
    fn from(r: HandoverReport) -> Self {
        CrashReport {
            kind: KIND,
            policy: r.policy,
            outcome: match r.outcome {
                HandoverOutcome::NotLive => CrashOutcome::NotLive,
                HandoverOutcome::Reset => CrashOutcome::Reset,
                HandoverOutcome::Adopted => CrashOutcome::Adopted,
                HandoverOutcome::FellBack(why) => CrashOutcome::FellBack(UnitRefusal::Vtd(why)),
            },
            adopted: r.adopted.into_iter().map(DeviceId::from).collect(),
            refused: r.problems.into_iter().map(EntryRefusal::Vtd).collect(),
            frames_allocated: r.frames_allocated,
            bytes_read: r.bytes_read,
        }
    }
}

impl From<EntryProblem> for EntryRefusal {
    fn from(p: EntryProblem) -> Self {
        EntryRefusal::Vtd(p)
    }
}

fn target(to: Target) -> Attachment {
    match to {
        Target::Domain(d) => Attachment::Domain(DomainId(d.0)),
        Target::Identity => Attachment::PassThrough,
    }
}

impl IommuDriver for Vtd {
    fn kind(&self) -> IommuKind {
        KIND
    }
    fn translating(&self) -> bool {
        Vtd::translating(self)
    }
    fn reserve_iova_holes(&mut self, holes: &[Range<u64>]) {
        Vtd::reserve_iova_holes(self, holes)
    }
    /// Context entries are copied at boot: the probe only reports what the boot adopted.
    fn device_found(&mut self, _: &mut dyn Platform, _: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal> {
        let adopted = id.rid().and_then(|sid| self.device(sid));
        Ok(if matches!(adopted, Some(DeviceState::Adopted { .. })) { Found::Adopted } else { Found::NotLive })
    }
    fn create_domain(&mut self, mut hw: &mut dyn Platform) -> Result<DomainHandle, DriverError> {
        Ok(DomainHandle(Vtd::create_domain(self, &mut hw)?.0))
    }
    fn attach(&mut self, mut hw: &mut dyn Platform, id: DeviceId, to: Target) -> Result<(), DriverError> {
        Ok(Vtd::attach(self, &mut hw, rid16(KIND, id)?, target(to))?)
    }
    fn contain(&mut self, mut hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError> {
        Ok(Vtd::contain(self, &mut hw, rid16(KIND, id)?)?)
    }
    fn map(
        &mut self,
        mut hw: &mut dyn Platform,
        d: DomainHandle,
        pa: u64,
        size: u64,
        perm: Perm,
    ) -> Result<u64, DriverError> {
        Ok(Vtd::map(self, &mut hw, DomainId(d.0), pa, size, perm.read, perm.write)?)
    }
    fn unmap(&mut self, mut hw: &mut dyn Platform, d: DomainHandle, iova: u64, size: u64) -> Result<(), DriverError> {
        Ok(Vtd::unmap(self, &mut hw, DomainId(d.0), iova, size)?)
    }
    fn scratch_region(&self) -> Option<Range<u64>> {
        Vtd::scratch_region(self)
    }
    fn scratch_frames(&self) -> u64 {
        Vtd::scratch_frames(self)
    }
}
