//! Raw bytes as a JSON record (the first byte picks the topic kind), through the parser and the validator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    playpulse::ingest::fuzz::json(data);
});
