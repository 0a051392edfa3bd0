//! ARM SMMUv3: layouts. Filled in by the SMMUv3 work (issue 4).
