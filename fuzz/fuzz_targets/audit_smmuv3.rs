#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| handover_fuzz::audit_smmuv3(data));
