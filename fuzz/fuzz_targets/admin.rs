//! Raw bytes as one admin protocol request line, through its parser.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    playpulse::admin::fuzz::request(data);
});
