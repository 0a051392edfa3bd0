//! VT-d behind the common driver contract.

use super::{DeviceState, EntryProblem, HandoverOutcome, HandoverReport, Vtd};
use crate::contract::{
    rid16, Attachment, CrashOutcome, CrashReport, DeviceId, DriverError, EntryRefusal, Found, IommuDriver, IommuKind,
    UnitRefusal,
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

impl IommuDriver for Vtd {
    crate::contract::delegate_common!(Vtd);
    fn kind(&self) -> IommuKind {
        KIND
    }
    fn domain_tag(&self, d: crate::contract::DomainId) -> Option<u32> {
        Vtd::domain(self, d).map(|x| u32::from(x.did))
    }
    /// Context entries are copied at boot: the probe only reports what the boot adopted.
    fn device_found(&mut self, _: &mut dyn Platform, _: &BootEnv, id: DeviceId) -> Result<Found, EntryRefusal> {
        let adopted = id.rid().and_then(|sid| self.device(sid));
        Ok(if matches!(adopted, Some(DeviceState::Adopted { .. })) { Found::Adopted } else { Found::NotLive })
    }
    fn attach(&mut self, mut hw: &mut dyn Platform, id: DeviceId, to: Attachment) -> Result<(), DriverError> {
        Ok(Vtd::attach(self, &mut hw, rid16(KIND, id)?, to)?)
    }
    fn contain(&mut self, mut hw: &mut dyn Platform, id: DeviceId) -> Result<(), DriverError> {
        Ok(Vtd::contain(self, &mut hw, rid16(KIND, id)?)?)
    }
    fn alloc_irq(
        &mut self,
        mut hw: &mut dyn Platform,
        id: DeviceId,
        target: crate::irq::IrqTarget,
    ) -> Result<Option<crate::irq::MsiMessage>, DriverError> {
        Ok(Vtd::alloc_irq(self, &mut hw, rid16(KIND, id)?, target)?)
    }
    fn irq_handover(&self) -> (crate::irq::IrqHandover, u64) {
        (Vtd::irq_handover(self).clone(), self.ir_frames())
    }
}
