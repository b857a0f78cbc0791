//! `inspect::inspect` on any bytes (PEM, DER, KEYGEN/ATTESTTOKEN text, requests files), then
//! `render_text` and the JSON form. Property: never panics; always returns a report.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nrfca::inspect::{self, InspectOptions};

fuzz_target!(|data: &[u8]| {
    let r = inspect::inspect(data, &InspectOptions::default());
    let _ = inspect::render_text(&r);
    serde_json::to_string(&r).expect("report serialises");
    let _ = nrfca::internal::util::pem_blocks(&String::from_utf8_lossy(data));
});
