//! Format-2 catalog entries (`mesh_protocol::entry`): whatever a key of
//! the account signed, and whatever the unsigned header says, opening it
//! never panics, a head is returned only when the header says what the
//! signed head says, and folding what opens into a ledger never panics and
//! keeps its chain rules.
//!
//! The input is `header-metadata-JSON NUL payload`: the payload is signed
//! with a fixed key (the fuzzer cannot forge signatures, so it plays a
//! device of the account writing anything it likes) and folded twice, as
//! the same frame appended again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::account::Store;
use mesh_protocol::entry::{self, EntryError, Ledger};
use mesh_protocol::envelope::{ContentMeta, Envelope, SealOptions};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::udf::seed::KeyAlg;

fuzz_target!(|data: &[u8]| {
    let (meta, payload) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&[][..], data),
    };
    let meta: Option<ContentMeta> = serde_json::from_slice(meta).ok();
    let signer = PrivateKey::from_okm(KeyAlg::Ed25519, &[7u8; 32]).expect("a key");
    let options = SealOptions {
        recipients: &[],
        signer: Some(&signer),
        meta: meta.as_ref(),
        sequence_info: None,
    };
    let Ok(frame) = Envelope::seal(&mut rand_core::OsRng, payload, &options) else {
        return;
    };
    let signers = [signer.public()];
    let Ok(verified) = entry::open(&frame, "alice@example.com", Store::Application, None, &signers)
    else {
        return;
    };
    assert_eq!(verified.head.account, "alice@example.com");
    assert_eq!(verified.head.store, Store::Application);
    assert_eq!(meta.as_ref().and_then(|m| m.unique_id.as_deref()), Some(verified.head.unique_id.as_str()));
    let _ = verified.record::<serde_json::Value>();
    let mut ledger = Ledger::<()>::default();
    let first = ledger.fold(1, &verified, |_, _| Ok(()));
    assert_eq!(first.is_ok(), verified.head.previous.is_none());
    if first.is_ok() {
        // The same frame again never continues its own chain.
        assert_eq!(
            ledger.fold(2, &verified, |_, _| Ok(())),
            Err(EntryError::Replayed(verified.head.unique_id.clone()))
        );
    }
});
