//! SMMUv3 behind the common driver contract.

use super::{SmmuOutcome, SmmuReport, Smmuv3, SteProblem};
use crate::contract::{
    Attachment, CrashOutcome, CrashReport, DeviceId, DriverError, EntryRefusal, Found, IommuDriver, IommuKind,
    UnitRefusal,
};
use crate::{BootEnv, Platform};

const KIND: IommuKind = IommuKind::Smmuv3;

/// Masters are found by the bus probe after the boot ([`IommuDriver::device_found`]), so the boot's
/// report starts with none adopted, the L1 descriptors it refused, and only the stream table's bytes read.
impl From<SmmuReport> for CrashReport {
    fn from(r: SmmuReport) -> Self {
        CrashReport {
            kind: KIND,
            policy: r.policy,
            outcome: match r.outcome {
                SmmuOutcome::NotLive => CrashOutcome::NotLive,
                SmmuOutcome::Reset => CrashOutcome::Reset,
                SmmuOutcome::Adopted => CrashOutcome::Adopted,
                SmmuOutcome::FellBack(why) => CrashOutcome::FellBack(UnitRefusal::Smmuv3(why)),
            },
            adopted: alloc::vec::Vec::new(),
            refused: r.problems.into_iter().map(EntryRefusal::Smmuv3).collect(),
            frames_allocated: r.frames_allocated,
            bytes_read: r.bytes_mapped,
        }
    }
}

impl From<SteProblem> for EntryRefusal {
    fn from(p: SteProblem) -> Self {
        EntryRefusal::Smmuv3(p)
    }
}

impl IommuDriver for Smmuv3 {
    crate::contract::delegate_common!(Smmuv3);
    fn kind(&self) -> IommuKind {
        KIND
    }
    fn domain_tag(&self, d: crate::contract::DomainId) -> Option<u32> {
        Smmuv3::domain(self, d).map(|x| u32::from(x.asid))
    }
    /// `insert_master`: the level-2 table is mapped on first use and its L1 descriptor re-checked.
    fn device_found(&mut self, mut hw: &mut dyn Platform, env: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal> {
        match Smmuv3::insert_master(self, &mut hw, env, id.0)? {
            Some(super::MasterState::Adopted { .. }) => Ok(Found::Adopted),
            _ => Ok(Found::NotLive),
        }
    }
    fn attach(&mut self, mut hw: &mut dyn Platform, id: DeviceId, to: Attachment) -> Result<(), DriverError> {
        Ok(Smmuv3::attach(self, &mut hw, id.0, to)?)
    }
    fn contain(&mut self, mut hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError> {
        Ok(Smmuv3::contain(self, &mut hw, id.0)?)
    }
    fn account(&self, report: &mut CrashReport) {
        report.frames_allocated = self.frames_allocated;
        report.bytes_read = self.adopted_bytes + self.walked_bytes;
    }
}
