//! The crash kernel's choice of what to do with an IOMMU it finds live.

use core::fmt;
use core::str::FromStr;

/// What the crash kernel does with a unit that the crashed kernel left translating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Policy {
    /// Fresh empty tables with translation on: every old DMA faults (or aborts).
    ResetAbort,
    /// Translation off: old DMA lands on physical addresses equal to its IOVAs (VT-d before Linux 4.2).
    ResetBypass,
    /// Keep translating with the crashed kernel's tables until each device's new driver attaches.
    Adopt,
    /// Adopt, then point every old IOVA of devices the crash kernel does not need at one scratch page.
    AdoptScratch,
    /// The crash kernel's IOMMU driver is disabled (`intel_iommu=off intremap=off`, `amd_iommu=off`): it turns
    /// the unit's translation off, as Linux's `intel_iommu_init` does for a kexec'd kernel under
    /// `intel_iommu=off` ("Make sure the IOMMUs are switched off"), and remaps no interrupts. Not in
    /// [`Policy::ALL`]: it is the configuration the SNP kdump reports warn about, not a hand-over.
    Off,
}

impl Policy {
    /// The four hand-over policies, every one but [`Policy::Off`]: what is run to compare them all.
    pub const ALL: [Policy; 4] = [Policy::ResetAbort, Policy::ResetBypass, Policy::Adopt, Policy::AdoptScratch];

    /// The policy's name on the command line (`--policy`) and in reports; [`FromStr`] parses it back.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::ResetAbort => "reset-abort",
            Policy::ResetBypass => "reset-bypass",
            Policy::Adopt => "adopt",
            Policy::AdoptScratch => "adopt-scratch",
            Policy::Off => "off",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPolicy;

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown policy (expected reset-abort, reset-bypass, adopt, adopt-scratch or off)")
    }
}

impl core::error::Error for UnknownPolicy {}

impl FromStr for Policy {
    type Err = UnknownPolicy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL.into_iter().chain([Policy::Off]).find(|p| p.name() == s).ok_or(UnknownPolicy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.name().parse::<Policy>(), Ok(p));
        }
        assert_eq!("adopt ".parse::<Policy>(), Err(UnknownPolicy));
        assert_eq!("off".parse::<Policy>(), Ok(Policy::Off));
        assert!(!Policy::ALL.contains(&Policy::Off), "off is asked for, never run by default");
    }
}
