//! Which faults a run injects: a small copyable set over the catalogue of `iommu_emu::inject`.
//!
//! State faults (a table in the crash region, a torn entry, seeded bit flips…) are applied to the crashed
//! machine's memory and unit at the panic, before "memory at the crash instant" is taken: the crashed kernel
//! left them there. Configuration faults are applied where they live: `no-iasup` when the unit is built,
//! `snp-kernel-without-mem-encrypt` to the crash kernel's boot environment, `attach-before-reset` to the
//! order of the crash kernel's disk probe.

use std::fmt;

pub use iommu_emu::inject::{Injected, UnknownFault, NAMES};

/// A set of faults from [`NAMES`]; `bitflips` carries its count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Faults {
    mask: u32,
    bitflips: u32,
}

// One bit of `mask` per name: the catalogue must fit.
const _: () = assert!(NAMES.len() <= u32::BITS as usize, "Faults::mask has one bit per fault name");

fn index(name: &str) -> Option<usize> {
    NAMES.iter().position(|&n| n == name)
}

impl Faults {
    /// No fault: the crashed kernel left its state as it was.
    pub const NONE: Faults = Faults { mask: 0, bitflips: 0 };

    /// Parse names as the command line gives them: `NAME`, `bitflips:N`, comma lists, `all` (every fault,
    /// `bitflips:8` for the seeded one).
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Faults, UnknownFault> {
        let mut f = Faults::NONE;
        for name in names.into_iter().flat_map(|s| s.split(',')).map(str::trim).filter(|s| !s.is_empty()) {
            if name == "all" {
                for n in NAMES {
                    f = f.with(if *n == "bitflips" { "bitflips:8" } else { n })?;
                }
            } else {
                f = f.with(name)?;
            }
        }
        Ok(f)
    }

    /// This set with `name` added.
    pub fn with(mut self, name: &str) -> Result<Faults, UnknownFault> {
        if let Some(n) = name.strip_prefix("bitflips:") {
            let n = n.parse::<u32>().ok().filter(|&n| (1..=4096).contains(&n));
            let n = n.ok_or_else(|| UnknownFault(format!("{name} (bitflips takes a count 1..=4096)")))?;
            self.bitflips = n;
            self.mask |= 1 << index("bitflips").unwrap_or(0);
            return Ok(self);
        }
        match index(name) {
            Some(i) if name != "bitflips" => {
                self.mask |= 1 << i;
                Ok(self)
            }
            _ => Err(UnknownFault(name.to_string())),
        }
    }

    /// No fault is injected.
    pub fn is_empty(&self) -> bool {
        self.mask == 0
    }

    /// `name` (without a `bitflips` count) is in the set.
    pub fn contains(&self, name: &str) -> bool {
        index(name).is_some_and(|i| self.mask & (1 << i) != 0)
    }

    /// The names, as `apply` takes them (`bitflips:N`).
    pub fn names(&self) -> Vec<String> {
        NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.mask & (1 << i) != 0)
            .map(|(_, &n)| if n == "bitflips" { format!("bitflips:{}", self.bitflips) } else { n.to_string() })
            .collect()
    }

    /// The faults one at a time, each as a set.
    pub fn each(&self) -> impl Iterator<Item = Faults> + '_ {
        self.names().into_iter().filter_map(|n| Faults::NONE.with(&n).ok())
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_round_trip_and_unknown_names_are_refused() {
        let f = Faults::parse(["torn-entry,wide-iova", "bitflips:3"]).unwrap();
        assert_eq!(f.names(), ["torn-entry", "wide-iova", "bitflips:3"]);
        assert!(f.contains("torn-entry") && !f.contains("no-iasup"));
        assert_eq!(Faults::parse(f.names().iter().map(String::as_str)).unwrap(), f);
        assert!(Faults::parse(["torn"]).is_err());
        assert!(Faults::parse(["bitflips"]).is_err(), "bitflips needs a count");
        assert!(Faults::parse(["bitflips:0"]).is_err());
        assert_eq!(Faults::parse(["all"]).unwrap().names().len(), NAMES.len());
        assert_eq!(Faults::parse(["all"]).unwrap().each().count(), NAMES.len());
    }
}
