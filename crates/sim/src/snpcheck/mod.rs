//! The SNP panic-path checker (`handover snp-check`): the orderings argued about in seed 001, as data,
//! explored over every interleaving against the SNP firmware model.

mod explore;
mod protocol;

pub use explore::{explore, Exploration, Step, Tally};
pub use protocol::{protocols, Action, Protocol};
