//! Raw bytes as a CSV row under a column header (first byte: kind; first line: header), through the parser and the validator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    playpulse::ingest::fuzz::csv(data);
});
