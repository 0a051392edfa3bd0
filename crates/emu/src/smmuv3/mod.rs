//! ARM SMMUv3 model (issue 4).
