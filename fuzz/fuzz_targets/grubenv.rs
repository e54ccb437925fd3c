//! The GRUB environment block codec (`grubenv`): strict parse of any bytes, the boot decision over what parsed,
//! and parse → encode → parse gives the same variables whenever they fit a block again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_bootloader::grubenv;

fuzz_target!(|data: &[u8]| {
    // A block is exactly 1024 bytes: also try shorter inputs padded the way GRUB pads, so the fuzzer need not
    // find the length first.
    check(data);
    if data.len() < grubenv::BLOCK_SIZE {
        let mut block = grubenv::SIGNATURE.to_vec();
        block.extend_from_slice(data);
        block.resize(grubenv::BLOCK_SIZE, b'#');
        block.truncate(grubenv::BLOCK_SIZE);
        check(&block);
    }
});

fn check(block: &[u8]) {
    let Ok(vars) = grubenv::parse(block) else {
        return;
    };
    ota_fuzz::check_boot_contract(&vars);
    if let Ok(encoded) = grubenv::encode(&vars) {
        assert_eq!(encoded.len(), grubenv::BLOCK_SIZE);
        assert_eq!(
            grubenv::parse(&encoded).expect("an encoded block parses"),
            vars
        );
    }
}
