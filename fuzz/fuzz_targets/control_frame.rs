//! Control-socket frames: decoding never panics, and whatever decodes
//! encodes back to the same message (requests, which may hold secrets and
//! so cannot be compared, to the same bytes once re-encoded).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_ipc::control::{self, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((request, used))) = control::decode::<Request>(data) {
        assert!(used <= data.len());
        let again = control::encode(&request).expect("a decoded request encodes");
        let (back, _) = control::decode::<Request>(&again).expect("valid").expect("whole");
        assert_eq!(control::encode(&back).expect("encodes"), again);
    }
    if let Ok(Some((response, _))) = control::decode::<Response>(data) {
        let again = control::encode(&response).expect("a decoded response encodes");
        let (back, _) = control::decode::<Response>(&again).expect("valid").expect("whole");
        assert_eq!(back, response);
    }
    let _ = control::read_frame::<Request>(&mut &data[..]);
});
