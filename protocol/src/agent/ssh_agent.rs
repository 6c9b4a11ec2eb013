//! The SSH agent protocol's untrusted input, as pure code: decoding a
//! frame's body, and destination constraints (`ssh-add -h`) enforced as
//! OpenSSH's agent enforces them (PROTOCOL.agent,
//! "restrict-destination-v00@openssh.com").
//!
//! `ssh` binds each agent connection to the SSH sessions it passes through
//! (`session-bind@openssh.com`: host key, session id, the host's signature
//! of the id, and whether the connection is being forwarded). A key with
//! constraints may be listed and used only along a path of hops its
//! constraints allow, and signs only a user-authentication request for the
//! session bound last, which must be one being authenticated: never for a
//! session the connection is only forwarded through (the host at the far
//! end of a forwarding may use the key to go further, not to log in to
//! itself).

use ssh_agent_lib::proto::extension::{DestinationConstraint, HostTuple, SessionBind};
use ssh_agent_lib::proto::{AddIdentityConstrained, Request};
use ssh_agent_lib::ssh_encoding::Decode as _;
use ssh_key::public::KeyData;

use super::known_hosts::glob;

/// The largest frame body, as OpenSSH's agent (`AGENT_MAX_LEN`).
pub const MAX_FRAME: usize = 256 * 1024;

/// What a frame's body turned out to be.
#[derive(Debug)]
pub enum Decoded {
    /// A request we understand.
    Request(Box<Request>),
    /// A request naming an OpenSSH certificate, read here (see [`Cert`]).
    Cert(Box<CertRequest>),
    /// A message type we do not know: answer FAILURE, keep the connection.
    Unknown(u8),
}

/// A request that names an OpenSSH certificate (PROTOCOL.agent; the
/// private form of a certified key is OpenSSH's `sshkey_private_serialize`
/// of it: the certificate, then the key's private fields).
#[derive(Debug)]
pub enum CertRequest {
    /// SSH_AGENTC_ADD_IDENTITY or SSH_AGENTC_ADD_ID_CONSTRAINED of a
    /// certificate and its private key: the certificate (its authority's
    /// signature checked), and the request as it would add the plain key,
    /// its public fields taken from the certificate, the rest as sent.
    /// Whether the private key is the certificate's key is the caller's
    /// to check (the private half may carry a public key of its own).
    Add {
        /// The certificate.
        cert: Box<Cert>,
        /// The key, comment and constraints (none for ADD_IDENTITY).
        add: Box<AddIdentityConstrained>,
    },
    /// SSH_AGENTC_SIGN_REQUEST naming a certificate blob.
    Sign {
        /// The certificate blob as sent.
        cert: Vec<u8>,
        /// What to sign.
        data: Vec<u8>,
        /// The sign-request flags.
        flags: u32,
    },
    /// SSH_AGENTC_REMOVE_IDENTITY naming a certificate blob.
    Remove {
        /// The certificate blob as sent.
        cert: Vec<u8>,
    },
}

/// Decode one frame's body (without its length prefix). An error means
/// the message is malformed: the agent answers FAILURE.
///
/// An ECDSA private scalar that is shorter than its field (about one
/// P-521 key in four that ssh-keygen makes, one in 256 for P-256 and
/// P-384) is a minimal mpint, which OpenSSH reads and ssh-key does not:
/// it is widened to the field's length first ([`widen_ecdsa_scalar`]).
///
/// A request naming a certificate is read here, not by ssh-agent-lib
/// ([`CertRequest`]).
pub fn decode(body: &[u8]) -> Result<Decoded, ssh_agent_lib::proto::Error> {
    if let Some(request) = cert_request(body) {
        return request
            .map(|request| Decoded::Cert(Box::new(request)))
            .ok_or(ssh_agent_lib::proto::Error::SshKey(
                ssh_key::Error::FormatEncoding,
            ));
    }
    let widened = widen_ecdsa_scalar(body);
    let body = widened.as_deref().map_or(body, |w| w.as_slice());
    match Request::decode(&mut &body[..]) {
        Ok(request) => Ok(Decoded::Request(Box::new(request))),
        Err(ssh_agent_lib::proto::Error::UnsupportedCommand { command }) => {
            Ok(Decoded::Unknown(command))
        }
        Err(err) => Err(err),
    }
}

/// SSH2_AGENT_IDENTITIES_ANSWER.
const IDENTITIES_ANSWER: u8 = 12;

/// Encode SSH2_AGENT_IDENTITIES_ANSWER (draft-miller-ssh-agent,
/// "Requesting a list of keys"): each identity's blob, a key's or a
/// certificate's as it was added, and its comment. Here rather than by
/// ssh-agent-lib, whose answer cannot carry every certificate (see
/// [`Cert`]); byte for byte what it writes for keys.
pub fn encode_identities<B: AsRef<[u8]>, S: AsRef<str>>(
    identities: impl ExactSizeIterator<Item = (B, S)>,
    out: &mut Vec<u8>,
) -> Result<(), ssh_agent_lib::ssh_encoding::Error> {
    use ssh_agent_lib::ssh_encoding::Encode as _;
    IDENTITIES_ANSWER.encode(out)?;
    u32::try_from(identities.len())
        .map_err(|_| ssh_agent_lib::ssh_encoding::Error::Overflow)?
        .encode(out)?;
    for (blob, comment) in identities {
        blob.as_ref().encode(out)?;
        comment.as_ref().encode(out)?;
    }
    Ok(())
}

/// SSH_AGENTC_ADD_IDENTITY and SSH_AGENTC_ADD_ID_CONSTRAINED.
const ADD_IDENTITY: [u8; 2] = [17, 25];
/// SSH_AGENTC_SIGN_REQUEST.
const SIGN_REQUEST: u8 = 13;
/// SSH_AGENTC_REMOVE_IDENTITY.
const REMOVE_IDENTITY: u8 = 18;

/// The request a body names a certificate in: `None` if it names none
/// (not an add, sign or remove, or one of a plain key: ssh-agent-lib
/// reads it), `Some(None)` if it does and is malformed.
fn cert_request(body: &[u8]) -> Option<Option<CertRequest>> {
    let is_cert = |name: &[u8]| name.ends_with(CERT_SUFFIX.as_bytes());
    let (&kind, rest) = body.split_first()?;
    if kind == SIGN_REQUEST || kind == REMOVE_IDENTITY {
        let (blob, rest) = string(rest)?;
        let (name, _) = string(blob)?;
        if !is_cert(name) {
            return None;
        }
        let cert = blob.to_vec();
        if kind == REMOVE_IDENTITY {
            return Some(rest.is_empty().then_some(CertRequest::Remove { cert }));
        }
        let sign = || {
            let (data, rest) = string(rest)?;
            let flags = u32::from_be_bytes(rest.try_into().ok()?);
            Some(CertRequest::Sign {
                cert,
                data: data.to_vec(),
                flags,
            })
        };
        return Some(sign());
    }
    if !ADD_IDENTITY.contains(&kind) {
        return None;
    }
    let (name, rest) = string(rest)?;
    if !is_cert(name) {
        return None;
    }
    Some(add_cert(kind, name, rest))
}

/// An add of a certificate (`name` is the algorithm the message names,
/// `rest` what follows it), as [`CertRequest::Add`].
fn add_cert(kind: u8, name: &[u8], rest: &[u8]) -> Option<CertRequest> {
    use ssh_agent_lib::ssh_encoding::Encode as _;
    let (blob, rest) = string(rest)?;
    let cert = Cert::read(blob)?;
    // The message names the certificate's type (OpenSSH:
    // SSH_ERR_KEY_CERT_MISMATCH otherwise, the curve included).
    let plain = std::str::from_utf8(name).ok()?.strip_suffix(CERT_SUFFIX)?;
    if !same_family(plain, &cert.key) {
        return None;
    }
    // The plain key's add: its name and the public fields its private
    // form carries (Ed25519: none, its private half has its own; ECDSA:
    // curve and point; RSA: n and e), then the private fields as sent.
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(rest.len() + blob.len() + 1));
    body.push(kind);
    match &cert.key {
        KeyData::Ed25519(_) => cert.key.algorithm().as_str().encode(&mut *body).ok()?,
        KeyData::Ecdsa(_) => cert.key.encode(&mut *body).ok()?,
        KeyData::Rsa(rsa) => {
            cert.key.algorithm().as_str().encode(&mut *body).ok()?;
            rsa.n.encode(&mut *body).ok()?;
            rsa.e.encode(&mut *body).ok()?;
        }
        _ => return None,
    }
    body.extend_from_slice(rest);
    let Ok(Decoded::Request(request)) = decode(&body) else {
        return None;
    };
    let add = match *request {
        Request::AddIdentity(identity) => AddIdentityConstrained {
            identity,
            constraints: Vec::new(),
        },
        Request::AddIdConstrained(add) => add,
        _ => return None,
    };
    Some(CertRequest::Add {
        cert: Box::new(cert),
        add: Box::new(add),
    })
}

/// An add-identity message whose ECDSA scalar is shorter than its curve's
/// field, with the scalar left-padded with zeros to the field's length;
/// `None` for any other message (left as it is).
pub fn widen_ecdsa_scalar(body: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    let (kind, rest) = body.split_first()?;
    if !ADD_IDENTITY.contains(kind) {
        return None;
    }
    let (key_type, rest) = string(rest)?;
    let (curve, rest) = string(rest)?;
    let field = match (key_type, curve) {
        (b"ecdsa-sha2-nistp256", b"nistp256") => 32,
        (b"ecdsa-sha2-nistp384", b"nistp384") => 48,
        (b"ecdsa-sha2-nistp521", b"nistp521") => 66,
        _ => return None,
    };
    let (point, rest) = string(rest)?;
    let (scalar, rest) = string(rest)?;
    if scalar.len() >= field {
        return None;
    }
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(bytes);
    };
    let mut out = zeroize::Zeroizing::new(Vec::with_capacity(body.len() + field));
    out.push(*kind);
    put(&mut out, key_type);
    put(&mut out, curve);
    put(&mut out, point);
    let field_len = u32::try_from(field).unwrap_or(u32::MAX);
    out.extend_from_slice(&field_len.to_be_bytes());
    let padded = out.len() + field - scalar.len();
    out.resize(padded, 0);
    out.extend_from_slice(scalar);
    out.extend_from_slice(rest);
    Some(out)
}

/// Why a `session-bind@openssh.com` was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The message did not parse.
    #[error("malformed session-bind")]
    Malformed,
    /// The host key's signature of the session id does not verify.
    #[error("the host key's signature does not verify")]
    Signature,
    /// The connection was bound for authentication already.
    #[error("session-bind after a session bound for authentication")]
    AfterAuthentication,
    /// The session id is bound to another host key.
    #[error("session id bound to another host key")]
    OtherKey,
    /// More than [`MAX_BINDINGS`] sessions.
    #[error("too many sessions on one connection")]
    TooMany,
}

/// Why a sign request for a destination-constrained key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UseError {
    /// The connection is not bound to any session.
    #[error("a destination-constrained key on an unbound connection")]
    Unbound,
    /// A session-bind on this connection failed, and none succeeded: it
    /// is not local use, and where it goes is unknown.
    #[error("a destination-constrained key after a failed session-bind")]
    BindFailed,
    /// The last session bound is a forwarding: the host it was forwarded
    /// to is asking the key to log in to that host itself, or elsewhere
    /// without a bind (OpenSSH: "tried to sign on forwarding hop").
    #[error("a sign request on a forwarding hop")]
    ForwardingHop,
    /// A hop before the last is a session bound for authentication
    /// (OpenSSH: "tried to forward though signing bind").
    #[error("a hop through a session bound for authentication")]
    ThroughSigningBind,
    /// The data is not a user-authentication request with this key.
    #[error("a destination-constrained key for an unidentified signature")]
    NotUserAuth,
    /// The request is for a session other than the one bound last.
    #[error("a sign request for a session other than the one bound last")]
    OtherSession,
    /// The request names another host key than the bound session's.
    #[error("a sign request naming another host key than the bound session's")]
    OtherHost,
    /// No host key in the request, on a forwarded connection.
    #[error("a sign request without a host key on a forwarded connection")]
    NoHostKey,
    /// No constraint allows this hop, or this user.
    #[error("the key's destination constraints refuse this use")]
    Refused,
}

/// OpenSSH's limit on the sessions recorded for one connection.
pub const MAX_BINDINGS: usize = 16;

/// A bound session's host key: a plain key, or a host certificate (its
/// key signs the session; the constraints' certificate authorities
/// vouch for it).
#[derive(Debug, Clone)]
struct HostKey {
    /// As the session-bind carried it (requests name it the same way).
    blob: Vec<u8>,
    /// The key that signed the session.
    key: KeyData,
    /// The certificate, checked at bind: a host certificate, signed by its
    /// signature key, valid then.
    cert: Option<HostCert>,
}

/// What the agent keeps of an OpenSSH host certificate (PROTOCOL.certkeys).
#[derive(Debug, Clone)]
struct HostCert {
    /// The authority that signed it.
    ca: KeyData,
    /// The host names it is for (none: any).
    principals: Vec<String>,
}

impl HostCert {
    /// Read a certificate blob: `Some((its key, the certificate))` for a
    /// host certificate its authority signed, valid at `now`.
    fn read(blob: &[u8], now: u64) -> Option<(KeyData, HostCert)> {
        let cert = Cert::read(blob)?;
        if cert.kind != Cert::HOST || now < cert.valid_after || now >= cert.valid_before {
            return None;
        }
        Some((
            cert.key,
            HostCert {
                ca: cert.ca,
                principals: cert.principals,
            },
        ))
    }
}

/// The suffix of a certificate's algorithm name (PROTOCOL.certkeys).
const CERT_SUFFIX: &str = "-cert-v01@openssh.com";

/// An OpenSSH certificate (PROTOCOL.certkeys), as the agent reads it:
/// the blob whole (the agent lists a certified identity by it and finds
/// it by it, byte for byte, as OpenSSH's `sshkey_equal` compares
/// certificates) and the fields the agent uses. Read here rather than by
/// ssh-key, which cannot represent a certificate valid forever (`valid
/// before` 2^64-1, what ssh-keygen writes without `-V`) and refuses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cert {
    /// The certificate as it came.
    pub blob: Vec<u8>,
    /// The certified key.
    pub key: KeyData,
    /// [`Cert::USER`] or [`Cert::HOST`].
    pub kind: u32,
    /// The names it is for (none: any).
    pub principals: Vec<String>,
    /// Valid from then (seconds since the epoch)...
    pub valid_after: u64,
    /// ... until just before then; `u64::MAX` is forever.
    pub valid_before: u64,
    /// The authority that signed it.
    pub ca: KeyData,
}

impl Cert {
    /// SSH2_CERT_TYPE_USER.
    pub const USER: u32 = 1;
    /// SSH2_CERT_TYPE_HOST.
    pub const HOST: u32 = 2;
    /// OpenSSH's limit on principals (`SSHKEY_CERT_MAX_PRINCIPALS`).
    pub const MAX_PRINCIPALS: usize = 256;

    /// Read a certificate blob, as OpenSSH's `cert_parse` does: a user or
    /// host certificate of an Ed25519, ECDSA or RSA key, with well-formed
    /// options and extensions, signed by its authority, nothing after it.
    /// Validity is not checked here (OpenSSH checks it where a
    /// certificate is relied on, not where one is read).
    pub fn read(blob: &[u8]) -> Option<Cert> {
        use signature::Verifier as _;
        use ssh_agent_lib::ssh_encoding::Encode as _;
        let mut r = blob;
        let algorithm = String::decode(&mut r).ok()?;
        let plain = algorithm.strip_suffix(CERT_SUFFIX)?;
        let (_nonce, rest) = string(r)?;
        r = rest;
        // The key's own fields, as its plain blob has them after the name.
        let fields = match plain {
            "ssh-ed25519" => 1,
            "ssh-rsa" => 2,
            p if p.starts_with("ecdsa-sha2-") => 2,
            _ => return None,
        };
        let mut key_blob = Vec::new();
        plain.encode(&mut key_blob).ok()?;
        for _ in 0..fields {
            let (field, rest) = string(r)?;
            r = rest;
            field.encode(&mut key_blob).ok()?;
        }
        let key = KeyData::decode(&mut key_blob.as_slice()).ok()?;
        let _serial = u64::decode(&mut r).ok()?;
        let kind = u32::decode(&mut r).ok()?;
        let (_key_id, rest) = string(r)?;
        let (principals_blob, rest) = string(rest)?;
        r = rest;
        let valid_after = u64::decode(&mut r).ok()?;
        let valid_before = u64::decode(&mut r).ok()?;
        let (critical, rest) = string(r)?;
        let (extensions, rest) = string(rest)?;
        let (_reserved, rest) = string(rest)?;
        let (ca_blob, rest) = string(rest)?;
        let signed = blob.get(..blob.len() - rest.len())?;
        let (signature, rest) = string(rest)?;
        if !rest.is_empty() || (kind != Cert::USER && kind != Cert::HOST) {
            return None;
        }
        // Options and extensions are pairs of strings.
        for mut list in [critical, extensions] {
            while !list.is_empty() {
                let (_name, rest) = string(list)?;
                let (_data, rest) = string(rest)?;
                list = rest;
            }
        }
        let mut principals = Vec::new();
        let mut list = principals_blob;
        while !list.is_empty() {
            if principals.len() >= Cert::MAX_PRINCIPALS {
                return None;
            }
            let (principal, rest) = string(list)?;
            principals.push(String::from_utf8(principal.to_vec()).ok()?);
            list = rest;
        }
        let ca = KeyData::decode(&mut &ca_blob[..]).ok()?;
        let signature = ssh_key::Signature::decode(&mut &signature[..]).ok()?;
        ca.verify(signed, &signature).ok()?;
        Some(Cert {
            blob: blob.to_vec(),
            key,
            kind,
            principals,
            valid_after,
            valid_before,
            ca,
        })
    }
}

/// One SSH string: its bytes, and what follows; `None` if cut short.
/// (A slice of the input: nothing is allocated for a length read from
/// the wire.)
fn string(at: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = at.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

impl HostKey {
    /// A host key blob, plain or a host certificate valid at `now`
    /// (seconds since the epoch).
    fn decode(blob: Vec<u8>, now: u64) -> Option<HostKey> {
        let mut r = blob.as_slice();
        let algorithm = String::decode(&mut r).ok()?;
        // (ssh-key would read a certificate as a key of an unknown kind.)
        if algorithm.ends_with("-cert-v01@openssh.com") {
            let (key, cert) = HostCert::read(&blob, now)?;
            return Some(HostKey {
                blob,
                key,
                cert: Some(cert),
            });
        }
        let key = KeyData::decode(&mut blob.as_slice()).ok()?;
        Some(HostKey {
            blob,
            key,
            cert: None,
        })
    }
}

/// The key a session-bind's host key blob names, at `now` (seconds since
/// the epoch): a plain key, or the key of a host certificate its authority
/// signed that is valid then; `None` for anything else. (What
/// [`Bindings::bind`] reads first, public for the fuzzer.)
pub fn read_host_key(blob: &[u8], now: u64) -> Option<KeyData> {
    HostKey::decode(blob.to_vec(), now).map(|host| host.key)
}

/// One session an agent connection has been bound to.
#[derive(Debug, Clone)]
pub struct Binding {
    host_key: HostKey,
    session_id: Vec<u8>,
    forwarded: bool,
}

/// What a connection knows of the sessions it passes through.
#[derive(Debug, Default)]
pub struct Bindings {
    hops: Vec<Binding>,
    /// A bind was tried, whether or not it succeeded: after a failed one,
    /// constrained keys are refused rather than treated as local use.
    attempted: bool,
}

impl Bindings {
    /// Record a `session-bind@openssh.com` (its extension details) at
    /// `now` (seconds since the epoch: a host certificate must be valid
    /// then). The host key may be a host certificate (`@cert-authority`
    /// in known_hosts), as OpenSSH's agent takes it.
    pub fn bind(&mut self, details: &[u8], now: u64) -> Result<(), BindError> {
        use ssh_agent_lib::ssh_encoding::Reader as _;
        self.attempted = true;
        let malformed = |_| BindError::Malformed;
        let mut reader = details;
        let blob = Vec::<u8>::decode(&mut reader).map_err(malformed)?;
        let session_id = Vec::<u8>::decode(&mut reader).map_err(malformed)?;
        let signature = reader
            .read_prefixed(ssh_key::Signature::decode)
            .map_err(|_| BindError::Malformed)?;
        let forwarding = u8::decode(&mut reader).map_err(malformed)? != 0;
        if !reader.is_empty() {
            return Err(BindError::Malformed);
        }
        let host = HostKey::decode(blob, now).ok_or(BindError::Malformed)?;
        let bind = SessionBind {
            host_key: host.key.clone(),
            session_id,
            signature,
            is_forwarding: forwarding,
        };
        bind.verify_signature().map_err(|_| BindError::Signature)?;
        for hop in &self.hops {
            if !hop.forwarded {
                return Err(BindError::AfterAuthentication);
            }
            if hop.session_id == bind.session_id {
                return if hop.host_key.blob == host.blob {
                    Ok(())
                } else {
                    Err(BindError::OtherKey)
                };
            }
        }
        if self.hops.len() >= MAX_BINDINGS {
            return Err(BindError::TooMany);
        }
        self.hops.push(Binding {
            host_key: host,
            session_id: bind.session_id,
            forwarded: bind.is_forwarding,
        });
        Ok(())
    }

    /// The host key of the session bound last: the host `ssh` is
    /// authenticating to on this connection, when it said.
    pub fn destination(&self) -> Option<&KeyData> {
        self.hops.last().map(|hop| &hop.host_key.key)
    }

    /// Whether a key with these constraints may be listed on this
    /// connection (`user` is `None`) or used to log in as `user`.
    pub fn permits(&self, constraints: &[DestinationConstraint], user: Option<&str>) -> bool {
        self.allows(constraints, user).is_ok()
    }

    /// OpenSSH's `identity_permitted`: walk the hops bound on this
    /// connection, from this machine outwards, and find a constraint that
    /// allows each. `user` is given for a sign request (and checked at
    /// the last hop only), `None` for listing, removing or updating.
    fn allows(
        &self,
        constraints: &[DestinationConstraint],
        user: Option<&str>,
    ) -> Result<(), UseError> {
        if constraints.is_empty() {
            return Ok(());
        }
        if self.attempted && self.hops.is_empty() {
            return Err(UseError::BindFailed);
        }
        let Some(last) = self.hops.last() else {
            return Ok(()); // local use: ssh-add -l, ssh-keygen -Y sign
        };
        let mut from: Option<&HostKey> = None;
        for (i, hop) in self.hops.iter().enumerate() {
            let is_last = i + 1 == self.hops.len();
            if is_last && hop.forwarded && user.is_some() {
                // A signature is for the session bound last, which must be
                // one being authenticated, not one forwarded through.
                return Err(UseError::ForwardingHop);
            }
            if !is_last && !hop.forwarded {
                // `bind` refuses any bind after one for authentication, so
                // this cannot happen; checked all the same, as OpenSSH does.
                return Err(UseError::ThroughSigningBind);
            }
            let test_user = if is_last { user } else { None };
            if !permitted(constraints, from, Some(&hop.host_key), test_user) {
                return Err(UseError::Refused);
            }
            from = Some(&hop.host_key);
        }
        // Past a forwarding hop, list only keys that may go further.
        if last.forwarded
            && user.is_none()
            && !permitted(constraints, Some(&last.host_key), None, None)
        {
            return Err(UseError::Refused);
        }
        Ok(())
    }

    /// The host key of the server a sign request shows took `key`: a
    /// `publickey-hostbound-v00@openssh.com` user authentication for the
    /// session bound last on this connection, naming that session's host
    /// key (ssh asks for the signature only after the server said it
    /// would take the key). `None` for anything else.
    /// `cert` is the certificate blob when the identity is a certified
    /// one (the request then offers the certificate).
    pub fn accepted_by(&self, data: &[u8], key: &KeyData, cert: Option<&[u8]>) -> Option<KeyData> {
        let last = self.hops.last()?;
        let request = UserAuth::parse(data, key, cert)?;
        (request.session_id == last.session_id
            && request.host_key.as_deref() == Some(last.host_key.blob.as_slice()))
        .then(|| last.host_key.key.clone())
    }

    /// Check a sign request for a key with these constraints: it must be
    /// a user-authentication request for the session bound last, to the
    /// host of that session, as a user the constraints allow. Returns the
    /// user it logs in as. `cert` is the certificate blob when the
    /// identity is a certified one (the request then offers the
    /// certificate).
    pub fn check_use(
        &self,
        constraints: &[DestinationConstraint],
        data: &[u8],
        key: &KeyData,
        cert: Option<&[u8]>,
    ) -> Result<String, UseError> {
        let last = self.hops.last().ok_or(UseError::Unbound)?;
        let request = UserAuth::parse(data, key, cert).ok_or(UseError::NotUserAuth)?;
        self.allows(constraints, Some(&request.user))?;
        if request.session_id != last.session_id {
            return Err(UseError::OtherSession);
        }
        match &request.host_key {
            Some(host) if *host != last.host_key.blob => return Err(UseError::OtherHost),
            None if self.hops.len() > 1 => return Err(UseError::NoHostKey),
            _ => {}
        }
        Ok(request.user)
    }
}

/// The user a sign request for `key` (or its certificate `cert`) logs in
/// as, when it is an SSH user-authentication request.
pub fn login_user(data: &[u8], key: &KeyData, cert: Option<&[u8]>) -> Option<String> {
    UserAuth::parse(data, key, cert).map(|request| request.user)
}

/// Whether some constraint allows the hop `from` -> `to` (as `user`).
fn permitted(
    constraints: &[DestinationConstraint],
    from: Option<&HostKey>,
    to: Option<&HostKey>,
    user: Option<&str>,
) -> bool {
    constraints.iter().any(|c| {
        let from_ok = match from {
            None => c.from.hostname.is_empty() && c.from.keys.is_empty(),
            Some(key) => hop_has_key(&c.from, key),
        };
        let to_ok = to.is_none_or(|key| hop_has_key(&c.to, key));
        let user_ok = match (c.to.username.as_str(), user) {
            ("", _) | (_, None) => true,
            (pattern, Some(user)) => glob(pattern, user),
        };
        from_ok && to_ok && user_ok
    })
}

/// Whether a hop lists this host key: a plain key listed as itself, or a
/// host certificate signed by an authority the hop lists, for the hop's
/// host name (its principals match the name, or it has none), as
/// OpenSSH's agent matches them (`match_key_hop`).
fn hop_has_key(hop: &HostTuple, host: &HostKey) -> bool {
    hop.keys.iter().any(|spec| match &host.cert {
        None => !spec.is_ca && spec.keyblob == host.key,
        Some(cert) => {
            spec.is_ca
                && spec.keyblob == cert.ca
                && (cert.principals.is_empty()
                    || cert
                        .principals
                        .iter()
                        .any(|principal| glob(principal, &hop.hostname)))
        }
    })
}

/// Whether constraints are well formed, as OpenSSH requires: a `from` hop
/// has a host name exactly when it has keys and never a user; a `to` hop
/// has both a host name and keys.
pub fn valid(constraints: &[DestinationConstraint]) -> bool {
    constraints.iter().all(|c| {
        c.from.hostname.is_empty() == c.from.keys.is_empty()
            && c.from.username.is_empty()
            && !c.to.hostname.is_empty()
            && !c.to.keys.is_empty()
    })
}

/// The parts of an SSH user-authentication request (RFC 4252 §7, with
/// OpenSSH's `publickey-hostbound-v00@openssh.com`) the agent checks.
struct UserAuth {
    session_id: Vec<u8>,
    user: String,
    /// The server's host key as the request names it (plain or a
    /// certificate).
    host_key: Option<Vec<u8>>,
}

impl UserAuth {
    /// Parse the data of a sign request; `None` unless it is exactly a
    /// public-key authentication request with a signature, for the
    /// "ssh-connection" service, with this key (with this certificate of
    /// it, for a certified identity: the same blob, an algorithm of its
    /// type, as OpenSSH's `sshkey_equal` and `sshkey_type_from_name`).
    fn parse(data: &[u8], key: &KeyData, cert: Option<&[u8]>) -> Option<UserAuth> {
        /// SSH_MSG_USERAUTH_REQUEST.
        const USERAUTH_REQUEST: u8 = 50;
        let mut reader = data;
        let session_id = Vec::<u8>::decode(&mut reader).ok()?;
        let kind = u8::decode(&mut reader).ok()?;
        let user = String::decode(&mut reader).ok()?;
        let service = String::decode(&mut reader).ok()?;
        let method = String::decode(&mut reader).ok()?;
        let has_signature = u8::decode(&mut reader).ok()?;
        let algorithm = String::decode(&mut reader).ok()?;
        let blob = Vec::<u8>::decode(&mut reader).ok()?;
        let offered = match cert {
            Some(cert) => {
                blob == cert
                    && algorithm
                        .strip_suffix(CERT_SUFFIX)
                        .is_some_and(|plain| same_family(plain, key))
            }
            None => {
                KeyData::decode(&mut blob.as_slice()).ok().as_ref() == Some(key)
                    && same_family(&algorithm, key)
            }
        };
        if session_id.is_empty()
            || kind != USERAUTH_REQUEST
            || has_signature != 1
            || service != "ssh-connection"
            || !offered
        {
            return None;
        }
        let host_key = match method.as_str() {
            "publickey-hostbound-v00@openssh.com" => Some(Vec::<u8>::decode(&mut reader).ok()?),
            "publickey" => None,
            _ => return None,
        };
        reader.is_empty().then_some(UserAuth {
            session_id,
            user,
            host_key,
        })
    }
}

/// Whether a signature algorithm name belongs to the key's type
/// (`rsa-sha2-512` to an RSA key, and so on).
fn same_family(algorithm: &str, key: &KeyData) -> bool {
    match ssh_key::Algorithm::new(algorithm) {
        Ok(ssh_key::Algorithm::Rsa { .. }) => {
            matches!(key.algorithm(), ssh_key::Algorithm::Rsa { .. })
        }
        Ok(alg) => alg == key.algorithm(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time for session binds.
    const NOW: u64 = 1_800_000_000;

    /// A key line's blob.
    fn blob(line: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(line.split_whitespace().nth(1).expect("base64"))
            .expect("a blob")
    }

    #[test]
    fn host_certificates_are_read_as_openssh_writes_them() {
        // ssh-keygen -s host-ca -h -n 127.0.0.1: valid forever, which
        // ssh-key cannot read.
        let forever = blob(include_str!("testdata/host-cert-forever.pub"));
        assert!(ssh_key::Certificate::from_bytes(&forever).is_err());
        let host = HostKey::decode(forever.clone(), NOW).expect("read");
        let key = ssh_key::PublicKey::from_openssh(include_str!("testdata/host-key.pub"))
            .expect("the host key");
        assert_eq!(&host.key, key.key_data());
        let cert = host.cert.expect("a certificate");
        let ca =
            ssh_key::PublicKey::from_openssh(include_str!("testdata/host-ca.pub")).expect("the CA");
        assert_eq!(&cert.ca, ca.key_data());
        assert_eq!(cert.principals, ["127.0.0.1"]);
        // Valid only in January 2020: refused now.
        let expired = blob(include_str!("testdata/host-cert-expired.pub"));
        assert!(HostKey::decode(expired, NOW).is_none());
        // A byte changed in what the CA signed: refused.
        let mut forged = forever;
        let at = forged.len() / 2;
        forged[at] ^= 1;
        assert!(HostKey::decode(forged, NOW).is_none());
        // A plain key is itself.
        let plain = blob(include_str!("testdata/host-key.pub"));
        assert!(HostKey::decode(plain, NOW).is_some_and(|h| h.cert.is_none()));
    }
    #[test]
    fn certificates_are_read_whatever_their_validity() {
        let forever = blob(include_str!("testdata/host-cert-forever.pub"));
        let cert = Cert::read(&forever).expect("read");
        assert_eq!(cert.kind, Cert::HOST);
        assert_eq!(cert.valid_before, u64::MAX);
        assert_eq!(cert.blob, forever);
        // Expired, it is still a certificate (validity is for its user).
        let expired = blob(include_str!("testdata/host-cert-expired.pub"));
        assert!(Cert::read(&expired).is_some());
        // Nothing may follow it.
        let mut longer = forever.clone();
        longer.push(0);
        assert!(Cert::read(&longer).is_none());
        // A plain key is no certificate.
        assert!(Cert::read(&blob(include_str!("testdata/host-key.pub"))).is_none());
    }

    /// A message: its type, then SSH strings.
    fn message(kind: u8, strings: &[&[u8]]) -> Vec<u8> {
        let mut out = vec![kind];
        for s in strings {
            s.encode(&mut out).expect("encode");
        }
        out
    }

    #[test]
    fn requests_naming_a_certificate_are_read_here() {
        let cert = blob(include_str!("testdata/host-cert-forever.pub"));
        let mut sign = message(13, &[&cert, b"data"]);
        sign.extend_from_slice(&4u32.to_be_bytes());
        match decode(&sign) {
            Ok(Decoded::Cert(request)) => match *request {
                CertRequest::Sign {
                    cert: named,
                    data,
                    flags,
                } => assert_eq!((named, data, flags), (cert.clone(), b"data".to_vec(), 4)),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        let remove = message(18, &[&cert]);
        assert!(matches!(
            decode(&remove),
            Ok(Decoded::Cert(request)) if matches!(*request, CertRequest::Remove { .. })
        ));
        // Cut short, or with bytes after: malformed.
        for bad in [&sign[..sign.len() - 1], &[sign.as_slice(), &[0]].concat()] {
            assert!(decode(bad).is_err());
        }
        assert!(decode(&[remove.as_slice(), &[0]].concat()).is_err());
        // An add naming another type than the certificate's (an Ed25519
        // certificate), or with no key after it.
        // (A key of its own: which key the certificate is for is the
        // agent's to check.)
        let ssh_key::private::KeypairData::Ed25519(pair) = host().key_data().clone() else {
            unreachable!()
        };
        let pk = pair.public.0;
        let sk = [pair.private.to_bytes(), pk].concat();
        let add = |name: &[u8]| message(17, &[name, &cert, &pk, &sk, b"comment"]);
        assert!(matches!(
            decode(&add(b"ssh-ed25519-cert-v01@openssh.com")),
            Ok(Decoded::Cert(request)) if matches!(*request, CertRequest::Add { .. })
        ));
        assert!(decode(&add(b"ecdsa-sha2-nistp256-cert-v01@openssh.com")).is_err());
        let add = message(17, &[b"ssh-ed25519-cert-v01@openssh.com", &cert]);
        assert!(decode(&add).is_err());
        // Its plain key's requests go to ssh-agent-lib.
        let key = blob(include_str!("testdata/host-key.pub"));
        let mut sign = message(13, &[&key, b"data"]);
        sign.extend_from_slice(&0u32.to_be_bytes());
        assert!(matches!(decode(&sign), Ok(Decoded::Request(_))));
    }

    #[test]
    fn the_identities_answer_is_what_ssh_agent_lib_writes_for_keys() {
        let key =
            ssh_key::PublicKey::from_openssh(include_str!("testdata/host-key.pub")).expect("key");
        let answer = ssh_agent_lib::proto::Response::IdentitiesAnswer(vec![
            ssh_agent_lib::proto::Identity {
                credential: ssh_agent_lib::proto::PublicCredential::Key(key.key_data().clone()),
                comment: "a key".into(),
            },
        ]);
        let mut theirs = Vec::new();
        answer.encode(&mut theirs).expect("encode");
        let mut ours = Vec::new();
        let blob = blob(include_str!("testdata/host-key.pub"));
        encode_identities([(blob, "a key")].into_iter(), &mut ours).expect("encode");
        assert_eq!(ours, theirs);
    }

    use rand_core::OsRng;
    use ssh_agent_lib::proto::extension::KeySpec;
    use ssh_agent_lib::ssh_encoding::Encode as _;
    use ssh_key::{Algorithm, PrivateKey};

    fn host() -> PrivateKey {
        PrivateKey::random(&mut OsRng, Algorithm::Ed25519).expect("key")
    }

    fn bind(host: &PrivateKey, session_id: &[u8], forwarding: bool) -> Vec<u8> {
        encode(&bind_message(host, session_id, forwarding))
    }

    fn encode(bind: &SessionBind) -> Vec<u8> {
        let mut out = Vec::new();
        bind.encode(&mut out).expect("encode");
        out
    }

    fn bind_message(host: &PrivateKey, session_id: &[u8], forwarding: bool) -> SessionBind {
        use signature::Signer as _;
        SessionBind {
            host_key: host.public_key().key_data().clone(),
            session_id: session_id.to_vec(),
            signature: host.try_sign(session_id).expect("sign"),
            is_forwarding: forwarding,
        }
    }

    fn tuple(user: &str, hostname: &str, keys: &[&PrivateKey]) -> HostTuple {
        HostTuple {
            username: user.into(),
            hostname: hostname.into(),
            keys: keys
                .iter()
                .map(|k| KeySpec {
                    keyblob: k.public_key().key_data().clone(),
                    is_ca: false,
                })
                .collect(),
        }
    }

    fn userauth(session: &[u8], user: &str, key: &KeyData, host: Option<&KeyData>) -> Vec<u8> {
        let mut out = Vec::new();
        session.encode(&mut out).expect("encode");
        50u8.encode(&mut out).expect("encode");
        user.encode(&mut out).expect("encode");
        "ssh-connection".encode(&mut out).expect("encode");
        let method = if host.is_some() {
            "publickey-hostbound-v00@openssh.com"
        } else {
            "publickey"
        };
        method.encode(&mut out).expect("encode");
        1u8.encode(&mut out).expect("encode");
        key.algorithm().as_str().encode(&mut out).expect("encode");
        key.encode_prefixed(&mut out).expect("encode");
        if let Some(host) = host {
            host.encode_prefixed(&mut out).expect("encode");
        }
        out
    }

    #[test]
    fn a_key_for_one_host_is_usable_there_and_nowhere_else() {
        let (a, b, user_key) = (host(), host(), host());
        let user_key = user_key.public_key().key_data().clone();
        let constraints = vec![DestinationConstraint {
            from: tuple("", "", &[]),
            to: tuple("git*", "a.example", &[&a]),
        }];
        assert!(valid(&constraints));
        // Local use: no binding.
        assert!(Bindings::default().permits(&constraints, None));

        let mut to_a = Bindings::default();
        assert!(to_a.bind(&bind(&a, b"sid-a", false), NOW).is_ok());
        assert!(to_a.permits(&constraints, None));
        assert!(to_a.permits(&constraints, Some("git")));
        assert!(!to_a.permits(&constraints, Some("root")));
        let data = userauth(b"sid-a", "git", &user_key, Some(a.public_key().key_data()));
        assert_eq!(
            to_a.check_use(&constraints, &data, &user_key, None)
                .as_deref(),
            Ok("git")
        );
        let as_root = userauth(b"sid-a", "root", &user_key, Some(a.public_key().key_data()));
        assert_eq!(
            to_a.check_use(&constraints, &as_root, &user_key, None),
            Err(UseError::Refused)
        );
        let stale = userauth(b"sid-old", "git", &user_key, None);
        assert_eq!(
            to_a.check_use(&constraints, &stale, &user_key, None),
            Err(UseError::OtherSession)
        );
        assert_eq!(
            to_a.check_use(&constraints, b"not a request", &user_key, None),
            Err(UseError::NotUserAuth)
        );
        // No second binding after one for authentication.
        assert!(to_a.bind(&bind(&a, b"sid-2", false), NOW).is_err());

        let mut to_b = Bindings::default();
        assert!(to_b.bind(&bind(&b, b"sid-b", false), NOW).is_ok());
        assert!(!to_b.permits(&constraints, None));
        assert!(!to_b.permits(&constraints, Some("git")));
    }

    #[test]
    fn forwarding_needs_a_constraint_for_each_hop() {
        let (a, b) = (host(), host());
        let only_a = vec![DestinationConstraint {
            from: tuple("", "", &[]),
            to: tuple("", "a", &[&a]),
        }];
        let a_then_b = vec![
            only_a[0].clone(),
            DestinationConstraint {
                from: tuple("", "a", &[&a]),
                to: tuple("", "b", &[&b]),
            },
        ];
        let user_key = host();
        let user_key = user_key.public_key().key_data().clone();
        let mut via_a = Bindings::default();
        assert!(via_a.bind(&bind(&a, b"sid-a", true), NOW).is_ok());
        // Forwarded to a: listed only if it may go further.
        assert!(!via_a.permits(&only_a, None));
        assert!(via_a.permits(&a_then_b, None));
        // But it signs nothing for the forwarding hop itself: a, which
        // knows its own session id, asks for a log-in to a (OpenSSH:
        // "tried to sign on forwarding hop"), though a constraint lets the
        // key log in to a from here.
        assert!(!via_a.permits(&a_then_b, Some("u")));
        let to_a_itself = userauth(b"sid-a", "u", &user_key, Some(a.public_key().key_data()));
        assert_eq!(
            via_a.check_use(&a_then_b, &to_a_itself, &user_key, None),
            Err(UseError::ForwardingHop)
        );
        let mut direct = Bindings::default();
        assert!(direct.bind(&bind(&a, b"sid-a", false), NOW).is_ok());
        assert_eq!(
            direct
                .check_use(&a_then_b, &to_a_itself, &user_key, None)
                .as_deref(),
            Ok("u"),
            "the same request on a connection bound for authentication"
        );
        assert!(via_a.bind(&bind(&b, b"sid-b", false), NOW).is_ok());
        assert!(!via_a.permits(&only_a, Some("u")));
        assert!(via_a.permits(&a_then_b, Some("u")));
    }

    #[test]
    fn bad_binds_are_refused_and_poison_constrained_keys() {
        let (a, b) = (host(), host());
        let constraints = vec![DestinationConstraint {
            from: tuple("", "", &[]),
            to: tuple("", "a", &[&a]),
        }];
        let mut forged = bind_message(&a, b"sid", false);
        forged.host_key = b.public_key().key_data().clone();
        let mut conn = Bindings::default();
        assert_eq!(conn.bind(&encode(&forged), NOW), Err(BindError::Signature));
        assert!(!conn.permits(&constraints, None));
        assert_eq!(conn.allows(&constraints, None), Err(UseError::BindFailed));
        assert!(conn.permits(&[], None));
    }

    #[test]
    fn malformed_constraints_are_invalid() {
        let a = host();
        let no_keys = DestinationConstraint {
            from: tuple("", "", &[]),
            to: tuple("", "a", &[]),
        };
        let user_on_from = DestinationConstraint {
            from: tuple("u", "", &[]),
            to: tuple("", "a", &[&a]),
        };
        assert!(!valid(&[no_keys]));
        assert!(!valid(&[user_on_from]));
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("*", "anything"));
        assert!(glob("g?t", "git"));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c", "abd"));
        assert!(glob("", ""));
        assert!(!glob("", "x"));
    }
}
