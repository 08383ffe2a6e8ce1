//! Raw bytes as a legacy `"key": value` line (the first byte picks the topic kind), through the parser and the validator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    playpulse::ingest::fuzz::legacy(data);
});
