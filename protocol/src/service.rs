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

use crate::account::Store;
use crate::udf::Udf;

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
    /// Create an account on the service (authenticated by the binding
    /// device, whose capability the request carries).
    BindAccount(BindRequest),
    /// Delete an account (an administrator).
    UnbindAccount(AccountRequest),
    /// Public: a device asks to join an account.
    Connect(ConnectRequest),
    /// The joining device asks for its answer (authenticated by its
    /// profile key).
    Complete(CompleteRequest),
    /// Where each store stands.
    Status(StatusRequest),
    /// Frames of a store after a given index.
    Download(DownloadRequest),
    /// Append frames to stores, all or none, and post connection answers.
    Transact(TransactRequest),
}

/// A response from the service: one member named after its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceResponse {
    /// The answer to Hello.
    MeshHelloResponse(HelloResponse),
    /// A refusal of any request, or a plain success: only the status.
    MeshResponse(StatusOnly),
    /// The answer to Connect.
    ConnectResponse(ConnectResponse),
    /// The answer to Complete.
    CompleteResponse(CompleteResponse),
    /// The answer to Status and to Transact.
    StatusResponse(StatusResponse),
    /// The answer to Download.
    DownloadResponse(DownloadResponse),
}

/// BindAccount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct BindRequest {
    /// The account's address.
    pub account_address: String,
    /// Its self-signed profile.
    pub enveloped_profile_user: String,
    /// The binding device's Access catalog entry (signed by the profile's
    /// administrator key): the first frame of MMM_Access.
    pub access_frame: String,
    /// The binding device's Device catalog entry: the first frame of MMM_Device.
    pub device_frame: String,
}

/// A request that names only the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AccountRequest {
    /// The account's address.
    pub account_address: String,
}

/// Connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectRequest {
    /// The account to join.
    pub account_address: String,
    /// The signed `RequestConnection`.
    pub enveloped_request_connection: String,
}

/// The answer to Connect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ConnectResponse {
    /// [`STATUS_SUCCESS`].
    pub status: u16,
    /// The service's nonce (base64url), an input of the witness.
    pub server_nonce: String,
    /// The witness code both devices show.
    pub witness: String,
    /// Where the answer will be.
    pub response_id: String,
    /// The account's profile, so the device can check what it joins.
    pub enveloped_profile_user: String,
}

/// Complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CompleteRequest {
    /// The account.
    pub account_address: String,
    /// From [`ConnectResponse::response_id`].
    pub response_id: String,
}

/// The answer to Complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CompleteResponse {
    /// [`STATUS_SUCCESS`], or 202 while no administrator has answered.
    pub status: u16,
    /// The administrator's signed `RespondConnection`, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enveloped_respond_connection: Option<String>,
}

/// Status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StatusRequest {
    /// The account.
    pub account_address: String,
}

/// Where one store stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StoreStatus {
    /// The store.
    pub store: Store,
    /// Its last frame's index.
    pub index: u64,
    /// Its Merkle apex (base64url).
    pub apex: String,
}

/// The answer to Status and Transact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StatusResponse {
    /// [`STATUS_SUCCESS`].
    pub status: u16,
    /// The account's profile.
    pub enveloped_profile_user: String,
    /// Each store the device may read.
    pub stores: Vec<StoreStatus>,
}

/// Download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DownloadRequest {
    /// The account.
    pub account_address: String,
    /// The store.
    pub store: Store,
    /// Frames after this index.
    pub after: u64,
}

/// The answer to Download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct DownloadResponse {
    /// [`STATUS_SUCCESS`].
    pub status: u16,
    /// Frames `after + 1 ..`, each the base64url of its bytes; at most
    /// [`MAX_DOWNLOAD`] bytes of them: ask again for the rest.
    pub frames: Vec<String>,
    /// Whether more frames follow.
    pub more: bool,
}

/// Frames to append to one store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StoreUpdate {
    /// The store.
    pub store: Store,
    /// The index the client believes is the store's last.
    pub index: u64,
    /// The apex the client believes the store has (base64url).
    pub apex: String,
    /// The new frames (base64url of each frame's bytes).
    pub frames: Vec<String>,
}

/// An administrator's answer to a connection request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct PostedResponse {
    /// The request's [`ConnectResponse::response_id`].
    pub response_id: String,
    /// The signed `RespondConnection`.
    pub envelope: String,
}

/// Transact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TransactRequest {
    /// The account.
    pub account_address: String,
    /// The frames to append, store by store.
    pub updates: Vec<StoreUpdate>,
    /// Answers to connection requests.
    #[serde(default)]
    pub responses: Vec<PostedResponse>,
}

/// The Inbound spool entry the service writes for a connection request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InboundConnection {
    /// The device's signed request.
    pub enveloped_request_connection: String,
    /// The service's nonce (base64url).
    pub server_nonce: String,
    /// The witness code.
    pub witness: String,
    /// Where the answer goes.
    pub response_id: String,
}

/// The most frame bytes one Download answer carries.
pub const MAX_DOWNLOAD: usize = 4 * 1024 * 1024;

/// The header that authenticates a request.
pub const AUTH_HEADER: &str = "mesh-auth";

/// The header that introduces a device the Access catalog does not know
/// yet: the base64url of an Access entry (its JSON envelope) signed by the
/// account's administrator key. Used by a device that rebuilt the account
/// from escrow, until its own Access entry is written.
pub const CAPABILITY_HEADER: &str = "mesh-capability";

/// How a device proves a request is its own (our binding; the drafts
/// leave it open). Every request but Hello and Connect carries the
/// header `mesh-auth: device=<UDF>; time=<ms>; sig=<base64url>`, where
/// `sig` is the device's Ed25519 signature over [`auth_message`]: a
/// label, the account, the device, the time and SHA-512 of the body. The
/// key is the one the account's Access catalog names for the device (for
/// Complete, the joining device's profile key). The service keeps each
/// device's last time and refuses one that is not later, so a request
/// cannot be replayed, even across a restart of the service; a time more
/// than [`MAX_TIME_AHEAD_MS`] ahead of the service's clock is refused too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The device's profile fingerprint.
    pub device: String,
    /// Milliseconds since the epoch, strictly increasing per device.
    pub time: u64,
    /// The signature.
    pub signature: Vec<u8>,
}

impl Auth {
    /// The header's value.
    pub fn to_header(&self) -> String {
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.signature);
        format!("device={}; time={}; sig={sig}", self.device, self.time)
    }

    /// Read a header's value.
    pub fn parse(value: &str) -> Option<Auth> {
        use base64::Engine as _;
        let mut device = None;
        let mut time = None;
        let mut signature = None;
        for part in value.split(';') {
            let (key, val) = part.trim().split_once('=')?;
            match key {
                "device" => device = Some(val.to_owned()),
                "time" => time = val.parse().ok(),
                "sig" => {
                    signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(val)
                        .ok();
                }
                _ => return None,
            }
        }
        Some(Auth {
            device: device?,
            time: time?,
            signature: signature?,
        })
    }
}

/// How far ahead of the service's clock a request's time may be, in
/// milliseconds: five minutes. A later time is refused with
/// [`Reason::TimeAhead`] and not recorded.
pub const MAX_TIME_AHEAD_MS: u64 = 5 * 60 * 1000;

/// What an [`Auth`] signature covers.
pub fn auth_message(account: &str, device: &str, time: u64, body: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut message = b"mesh-request\0".to_vec();
    message.extend_from_slice(account.as_bytes());
    message.push(0);
    message.extend_from_slice(device.as_bytes());
    message.push(0);
    message.extend_from_slice(&time.to_be_bytes());
    message.extend_from_slice(&sha2::Sha512::digest(body));
    message
}

/// The witness code of a connection (research digest §1.7):
/// `SHA-512(SHA-512(account fingerprint || server nonce) ||
/// SHA-512(device fingerprint || client nonce))`, shown as Base32 at 100
/// bits with no type byte. Both devices compute it and the person checks
/// they match.
pub fn witness(
    account_udf: &Udf,
    server_nonce: &[u8],
    device_udf: &Udf,
    client_nonce: &[u8],
) -> String {
    use sha2::Digest as _;
    let a = sha2::Sha512::new()
        .chain_update(account_udf.as_bytes())
        .chain_update(server_nonce)
        .finalize();
    let d = sha2::Sha512::new()
        .chain_update(device_udf.as_bytes())
        .chain_update(client_nonce)
        .finalize();
    let w = sha2::Sha512::new()
        .chain_update(a)
        .chain_update(d)
        .finalize();
    crate::udf::present_raw(w.get(..13).unwrap_or_default())
        .chars()
        .filter(|c| *c != '-')
        .take(20)
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
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
    /// An HTTP-like status code: 400 malformed, 401 not authenticated,
    /// 403 refused, 404 unknown, 409 conflict, 410 device revoked, 413
    /// too large.
    pub status: u16,
    /// One line, for a person, that never echoes the request.
    pub status_description: String,
    /// For programs: why, as one of a closed set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// With [`Reason::Replayed`] and [`Reason::TimeAhead`]: the last
    /// request time the service holds for the device, so that the device
    /// can continue after it. Sent only once the request's signature has
    /// verified: it tells the device nothing it did not sign itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<u64>,
}

/// Why the service refused a request. The set is closed: a client that
/// meets another reason treats the answer as malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Reason {
    /// The address is bound to an account already.
    AccountRegistered,
    /// The client's view of a store is stale: sync and try again.
    Conflict,
    /// The device was revoked from the account.
    DeviceRevoked,
    /// The service failed inside.
    Internal,
    /// The request does not parse.
    Malformed,
    /// Only an administrator may do this.
    NotAdministrator,
    /// The request is not authenticated.
    NotAuthorized,
    /// No such account, store or request.
    NotFound,
    /// The caller may not do this.
    Refused,
    /// The request's time is not after the device's last one.
    Replayed,
    /// The request's time is too far ahead of the service's clock
    /// ([`MAX_TIME_AHEAD_MS`]): it is not recorded, so a device whose
    /// clock ran ahead is not locked out until that time.
    TimeAhead,
    /// The service's storage failed.
    Storage,
    /// The request or the account is over a limit.
    TooLarge,
}

impl Reason {
    /// The reason's wire name.
    pub fn name(self) -> &'static str {
        match self {
            Reason::AccountRegistered => "AccountRegistered",
            Reason::Conflict => "Conflict",
            Reason::DeviceRevoked => "DeviceRevoked",
            Reason::Internal => "Internal",
            Reason::Malformed => "Malformed",
            Reason::NotAdministrator => "NotAdministrator",
            Reason::NotAuthorized => "NotAuthorized",
            Reason::NotFound => "NotFound",
            Reason::Refused => "Refused",
            Reason::Replayed => "Replayed",
            Reason::TimeAhead => "TimeAhead",
            Reason::Storage => "Storage",
            Reason::TooLarge => "TooLarge",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
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
    fn refusals_carry_the_last_time_only_when_given() {
        let refusal = ServiceResponse::MeshResponse(StatusOnly {
            status: 401,
            status_description: "replayed".into(),
            reason: Some(Reason::Replayed),
            last_time: Some(1_700_000_000_123),
        });
        let json = serde_json::to_value(&refusal).expect("serializes");
        assert_eq!(json["MeshResponse"]["LastTime"], 1_700_000_000_123_u64);
        assert_eq!(json["MeshResponse"]["Reason"], "Replayed");
        let back: ServiceResponse = serde_json::from_value(json).expect("parses");
        assert_eq!(back, refusal);
        // A refusal from a service that does not send one still parses.
        let old = r#"{"MeshResponse":{"Status":401,"StatusDescription":"x","Reason":"TimeAhead"}}"#;
        let ServiceResponse::MeshResponse(parsed) =
            serde_json::from_str::<ServiceResponse>(old).expect("parses")
        else {
            panic!("not a MeshResponse");
        };
        assert_eq!(parsed.reason, Some(Reason::TimeAhead));
        assert_eq!(parsed.last_time, None);
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
