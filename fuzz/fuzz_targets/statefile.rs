//! The state file codec (`statefile`, the boot state of robots without a bootloader env): parse with the CRC as
//! stored and with a correct CRC line appended, the boot decision over what parsed, and parse → encode → parse
//! gives the same variables.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bootloader::statefile;

fuzz_target!(|data: &[u8]| {
    check(data);
    // The input as the file's body: header, the bytes, and the CRC line over them.
    let mut file = statefile::HEADER.as_bytes().to_vec();
    file.extend_from_slice(data);
    let crc = ota_fuzz::crc32(&file);
    file.extend_from_slice(format!("# crc32 {crc:08x}\n").as_bytes());
    check(&file);
});

fn check(bytes: &[u8]) {
    let Ok(vars) = statefile::parse(bytes) else {
        return;
    };
    ota_fuzz::check_boot_contract(&vars);
    let encoded = statefile::encode(&vars).expect("parsed variables encode");
    assert_eq!(
        statefile::parse(&encoded).expect("an encoded file parses"),
        vars
    );
}
