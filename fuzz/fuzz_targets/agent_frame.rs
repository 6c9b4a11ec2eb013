//! SSH agent frames, as meshd reads them: decoding never panics; sign
//! requests (of keys and of certificates) go through the
//! user-authentication parser and destination checks, add requests through the constraint checks, session-binds
//! through the binding rules.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::agent::ssh_agent::{self, Bindings, CertRequest, Decoded};
use ssh_agent_lib::proto::extension::RestrictDestination;
use ssh_agent_lib::proto::{KeyConstraint, PublicCredential, Request};

fuzz_target!(|data: &[u8]| {
    let mut bindings = Bindings::default();
    let mut constraints = Vec::new();
    // The input is a run of frames, as on the socket.
    let mut rest = data;
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = (u32::from_be_bytes(*len) as usize).min(ssh_agent::MAX_FRAME);
        let (body, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let request = match ssh_agent::decode(body) {
            Ok(Decoded::Request(request)) => request,
            Ok(Decoded::Cert(request)) => {
                // A certificate read here round-trips through its blob.
                match *request {
                    CertRequest::Add { cert, .. } => {
                        assert_eq!(ssh_agent::Cert::read(&cert.blob).as_ref(), Some(&*cert));
                        let _ = bindings.check_use(&constraints, b"", &cert.key, Some(&cert.blob));
                    }
                    CertRequest::Sign { cert, data, .. } => {
                        if let Some(read) = ssh_agent::Cert::read(&cert) {
                            let _ = bindings.check_use(&constraints, &data, &read.key, Some(&cert));
                        }
                    }
                    CertRequest::Remove { .. } => {}
                }
                continue;
            }
            _ => continue,
        };
        match *request {
            Request::SignRequest(sign) => {
                if let PublicCredential::Key(key) = &sign.credential {
                    let _ = bindings.check_use(&constraints, &sign.data, key, None);
                    let _ = bindings.permits(&constraints, None);
                }
            }
            Request::AddIdConstrained(add) => {
                for constraint in add.constraints {
                    if let KeyConstraint::Extension(ext) = constraint {
                        if let Ok(Some(r)) = ext.parse_key_constraint::<RestrictDestination>() {
                            if ssh_agent::valid(&r.constraints) {
                                constraints = r.constraints;
                            }
                        }
                    }
                }
            }
            Request::Extension(ext) => {
                let _ = bindings.bind(ext.details.as_ref(), 1_800_000_000);
            }
            _ => {}
        }
    }
});
