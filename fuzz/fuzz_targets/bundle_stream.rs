//! The verifying stream reader over arbitrary bytes, as a robot reads a download: the carried trust chain walked
//! from the fixed test trust root, then the signatures and payloads; as given, then re-signed so mutated
//! manifests reach validation and payload streaming.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let trust = ota_fuzz::trust_root();
    // The input's length picks the pipelined or the plain reading path, so both see every kind of input.
    let threaded = data.len().is_multiple_of(2);
    ota_fuzz::read_bundle(data, &trust, threaded);
    if let Some(resigned) = ota_fuzz::resign(data) {
        ota_fuzz::read_bundle(&resigned, &trust, threaded);
    }
});
