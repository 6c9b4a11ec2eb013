//! DARE envelope JSON: decoding never panics, what decodes re-encodes to
//! JSON that decodes to the same envelope, and opening it with a key it
//! is not for fails cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::envelope::Envelope;
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::udf::seed::KeyAlg;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::from_json(data) {
        let json = envelope.to_json();
        let again = Envelope::from_json(json.as_bytes()).expect("our JSON decodes");
        assert_eq!(again, envelope);
        let key = PrivateKey::from_okm(KeyAlg::X25519, &[1u8; 32]).expect("a key");
        let _ = envelope.open(Some(&key), Some(&key.public()));
    }
});
