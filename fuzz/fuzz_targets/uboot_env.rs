//! The U-Boot environment codec: one copy decoded as single and as redundant (with the CRC as stored, and
//! recomputed so the fuzzer gets past it), the active-copy rule, the text format of `fw_setenv -f`, and
//! decode → encode → decode gives the same variables and flag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bootloader::uboot::{self, active_copy, decode_copy, encode_copy, CopyState, CRC_LEN};

fuzz_target!(|data: &[u8]| {
    for redundant in [false, true] {
        let as_stored = decode_copy(data, redundant);
        check(data, redundant, &as_stored);
        let header = uboot::data_offset(redundant);
        if data.len() > header {
            let mut fixed = data.to_vec();
            let crc = ota_fuzz::crc32(&fixed[header..]);
            fixed[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
            let state = decode_copy(&fixed, redundant);
            check(&fixed, redundant, &state);
            // Two copies: the input and its fixed-up twin, in both orders.
            let pair = [as_stored.clone(), state];
            if let Some(i) = active_copy(&pair) {
                assert!(matches!(pair[i], CopyState::Valid { .. }));
            }
            let swapped = [pair[1].clone(), pair[0].clone()];
            if let Some(i) = active_copy(&swapped) {
                assert!(matches!(swapped[i], CopyState::Valid { .. }));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let vars = uboot::parse_env_text(text);
        assert!(vars.values().all(|v| !v.is_empty()));
    }
});

fn check(bytes: &[u8], redundant: bool, state: &CopyState) {
    let CopyState::Valid { flag, vars } = state else {
        return;
    };
    ota_fuzz::check_boot_contract(vars);
    let flag_in = redundant.then_some(*flag);
    if let Ok(encoded) = encode_copy(vars, bytes.len(), flag_in) {
        assert_eq!(encoded.len(), bytes.len());
        assert_eq!(
            decode_copy(&encoded, redundant),
            CopyState::Valid {
                flag: *flag,
                vars: vars.clone()
            }
        );
    }
}
