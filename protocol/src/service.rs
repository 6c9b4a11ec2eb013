//! The messages of the Mesh service protocol (mesh-protocol-09 §5,
//! research digest §5).
//!
//! Binding (ours, where the draft leaves a choice): every request is an
//! HTTP POST to [`SERVICE_PATH`] whose body is one JSON object with a single
//! member named after the transaction, as the reference code dispatches it
//! (`{"Hello":{}}`); every response is one JSON object with a single member
//! named after the response class (`{"MeshHelloResponse":{...}}`), and
//! carries `Status` and `StatusDescription`. Field names are the
//! specification's, in PascalCase. Bodies are at most [`MAX_MESSAGE`] bytes.

use serde::{Deserialize, Serialize};

/// The fixed request path of the Mesh service.
pub const SERVICE_PATH: &str = "/.well-known/mmm/";

/// The largest request or response body, in bytes. The specification
/// keeps messages small so that a sync is fast.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The protocol version the service implements (`Version` in Hello).
pub const PROTOCOL_MAJOR: u32 = 3;
/// The minor protocol version.
pub const PROTOCOL_MINOR: u32 = 0;

/// `Status` of a transaction that succeeded, as in the specification's
/// examples.
pub const STATUS_SUCCESS: u16 = 201;

/// A request to the service: one member named after the transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceRequest {
    /// Hello: public; asks what the service is and what it supports.
    Hello(HelloRequest),
}

/// A response from the service: one member named after its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceResponse {
    /// The answer to Hello.
    MeshHelloResponse(HelloResponse),
    /// A refusal of any request: only the status fields.
    MeshResponse(StatusOnly),
}

/// The Hello request. Its optional `CallsignBinding` is not used yet;
/// unknown fields are ignored so that other clients can say Hello.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRequest {}

/// The Hello response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HelloResponse {
    /// [`STATUS_SUCCESS`].
    pub status: u16,
    /// A few words on the status.
    pub status_description: String,
    /// The protocol version and the encodings the service accepts.
    pub version: Version,
}

/// A protocol version (`Version` of mesh-protocol-09).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    /// [`PROTOCOL_MAJOR`].
    pub major: u32,
    /// [`PROTOCOL_MINOR`].
    pub minor: u32,
    /// The message encodings accepted: `JSON` here.
    pub encodings: Vec<String>,
}

/// The status fields that every response carries, alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatusOnly {
    /// An HTTP-like status code: 400 malformed, 404 unknown transaction,
    /// 413 too large.
    pub status: u16,
    /// One line, for a person, that never echoes the request.
    pub status_description: String,
}

impl HelloResponse {
    /// The Hello answer of this implementation.
    pub fn current() -> HelloResponse {
        HelloResponse {
            status: STATUS_SUCCESS,
            status_description: "Operation completed successfully".into(),
            version: Version {
                major: PROTOCOL_MAJOR,
                minor: PROTOCOL_MINOR,
                encodings: vec!["JSON".into()],
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_has_the_reference_shape() {
        let request: ServiceRequest = serde_json::from_str(r#"{"Hello":{}}"#).expect("parses");
        assert_eq!(request, ServiceRequest::Hello(HelloRequest {}));
        let json =
            serde_json::to_value(ServiceResponse::MeshHelloResponse(HelloResponse::current()))
                .expect("serializes");
        assert_eq!(json["MeshHelloResponse"]["Status"], 201);
        assert_eq!(json["MeshHelloResponse"]["Version"]["Major"], 3);
        assert_eq!(json["MeshHelloResponse"]["Version"]["Encodings"][0], "JSON");
    }

    #[test]
    fn unknown_transactions_do_not_parse() {
        for body in [
            r#"{"Steal":{}}"#,
            r#"{}"#,
            r#"{"Hello":{},"Status":{}}"#,
            "[]",
        ] {
            assert!(
                serde_json::from_str::<ServiceRequest>(body).is_err(),
                "{body}"
            );
        }
    }
}
