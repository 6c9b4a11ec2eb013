//! DARE sequence frames: decoding (forwards and backwards) and verifying
//! never panic, and a decoded frame re-encodes to bytes that decode to
//! the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::sequence::{self, Sequence};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((frame, used))) = sequence::decode_frame(data, 0) {
        assert!(used <= data.len());
        let bytes = sequence::encode_frame(&frame);
        let (again, _) = sequence::decode_frame(&bytes, 0).expect("valid").expect("whole");
        assert_eq!(again, frame);
    }
    let _ = sequence::walk_backwards(data);
    if let Ok(unverified) = Sequence::decode(data) {
        if let Ok(verified) = unverified.verify() {
            let _ = verified.replay();
            assert_eq!(
                Sequence::decode(&verified.encode()).expect("decodes").verify().map(|s| s.len()).ok(),
                Some(verified.len())
            );
        }
    }
});
