//! AMD-Vi behind the common driver contract.

use super::{AmdOutcome, AmdReport, Amdvi, DeviceState, DteProblem};
use crate::contract::{
    rid16, Attachment, CrashOutcome, CrashReport, DeviceId, DriverError, EntryRefusal, Found, IommuDriver, IommuKind,
    UnitRefusal,
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

impl IommuDriver for Amdvi {
    crate::contract::delegate_common!(Amdvi);
    fn alloc_irq(
        &mut self,
        mut hw: &mut dyn Platform,
        id: DeviceId,
        target: crate::irq::IrqTarget,
    ) -> Result<Option<crate::irq::MsiMessage>, DriverError> {
        Ok(Amdvi::alloc_irq(self, &mut hw, rid16(KIND, id)?, target)?)
    }
    fn irq_handover(&self) -> (crate::irq::IrqHandover, u64) {
        (Amdvi::irq_handover(self).clone(), self.irq_frames())
    }
    fn kind(&self) -> IommuKind {
        KIND
    }
    fn domain_tag(&self, d: crate::contract::DomainId) -> Option<u32> {
        Amdvi::domain(self, d).map(|x| u32::from(x.id))
    }
    /// The device table is adopted in place at boot: the probe only reports what the boot adopted.
    fn device_found(&mut self, _: &mut dyn Platform, _: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal> {
        let adopted = id.rid().and_then(|devid| self.device(devid));
        Ok(if matches!(adopted, Some(DeviceState::Adopted { .. })) { Found::Adopted } else { Found::NotLive })
    }
    fn attach(&mut self, mut hw: &mut dyn Platform, id: DeviceId, to: Attachment) -> Result<(), DriverError> {
        Ok(Amdvi::attach(self, &mut hw, rid16(KIND, id)?, to)?)
    }
    fn contain(&mut self, mut hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError> {
        Ok(Amdvi::contain(self, &mut hw, rid16(KIND, id)?)?)
    }
}
