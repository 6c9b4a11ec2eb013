//! Mesh service request bodies, as the service parses them: never a panic,
//! and a parsed request serializes to JSON that parses to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::service::ServiceRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<ServiceRequest>(data) {
        let json = serde_json::to_vec(&request).expect("serializes");
        let back: ServiceRequest = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, request);
    }
});
