//! What a (hostile) service answers, as meshd parses it: never a panic;
//! a parsed answer serializes to JSON that parses to the same answer; the
//! records inside (profiles, frames) are parsed and checked without panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::account::{self, ProfileUser};
use mesh_protocol::service::{Auth, ServiceResponse};

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = serde_json::from_slice::<ServiceResponse>(data) {
        let json = serde_json::to_vec(&response).expect("serializes");
        let back: ServiceResponse = serde_json::from_slice(&json).expect("parses");
        assert_eq!(back, response);
        if let ServiceResponse::StatusResponse(status) = &response {
            let _ = account::verify_profile::<ProfileUser>(&status.enveloped_profile_user);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Auth::parse(text);
    }
});
