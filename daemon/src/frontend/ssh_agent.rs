//! The SSH agent socket: RFC 9987 and OpenSSH's PROTOCOL.agent, message
//! for message as OpenSSH's `ssh-agent` answers them.
//!
//! Frames are a 4-byte big-endian length and that many bytes, at most
//! [`MAX_FRAME`]; ssh-agent-lib decodes and encodes the messages. A frame
//! over the limit closes that connection and nothing else. A message that
//! does not parse as what its type names (a key type we do not know, a
//! certificate we cannot read), or a type we do not know, gets FAILURE and
//! the connection lives on, as in OpenSSH's agent: the length prefix keeps
//! the frames apart. The first is logged (a client sent something we
//! could not read), the second at debug level. Each connection is a
//! task; it keeps its own session bindings (`session-bind@openssh.com`),
//! which decide what it may see, use, replace and remove; what a removal
//! leaves behind (a Mesh key masked by a constrained copy) is the
//! keystore's rule ([`crate::keystore::ssh`]).

use std::path::PathBuf;
use std::sync::Arc;

use ssh_agent_lib::proto::extension::{QueryResponse, RestrictDestination};
use ssh_agent_lib::proto::{
    AddIdentity, AddIdentityConstrained, Extension, KeyConstraint, PrivateCredential,
    PublicCredential, Request, Response,
};
use ssh_agent_lib::ssh_encoding::Encode as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::keystore::confirm::Askpass;
use crate::keystore::ssh::{Identity, Keyring};
use crate::server::workers::Workers;
use mesh_protocol::agent::known_hosts::Names;
use mesh_protocol::agent::ssh_agent::{self, Bindings, CertRequest, Decoded, MAX_FRAME};
use mesh_protocol::application::KNOWN_HOSTS_ENTRY;

/// How many agent connections may be open at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The extensions `query` reports.
const EXTENSIONS: &[&str] = &["query", "session-bind@openssh.com"];

/// What every connection shares.
#[derive(Debug)]
pub struct Agent {
    /// The keys.
    pub keys: Arc<Keyring>,
    /// Where confirmation questions go.
    pub askpass: Askpass,
    /// The only uid whose clients are served.
    pub uid: u32,
    /// What names the hosts a connection is bound to, for keys scoped to
    /// hosts.
    pub known_hosts: KnownHosts,
    /// Where what the agent learns goes (to the account, which shares it
    /// with the other devices): `(host key, key)` SHA-256 fingerprints of
    /// a key a server took.
    pub learned: Option<tokio::sync::mpsc::UnboundedSender<(String, String)>>,
    /// Where each signature is reported (the usage log).
    pub usage: super::UsageLog,
    /// The account's other devices, asked to confirm when nobody is here.
    pub approvals: Option<super::approval::Remote>,
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("cannot encode the answer: {0}")]
    Encode(#[from] ssh_agent_lib::ssh_encoding::Error),
}

/// Accept agent connections until the future is dropped, each served on
/// one of `workers`' threads.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>, workers: Arc<Workers>) {
    let uid = agent.uid;
    let keys = Arc::clone(&agent.keys);
    let connections =
        crate::server::accept_loop(listener, "ssh-agent", MAX_CONNECTIONS, uid, move |stream| {
            let (agent, workers) = (Arc::clone(&agent), Arc::clone(&workers));
            async move {
                let serve = |stream| async move { handle(stream, &agent).await };
                workers.serve(stream, serve).await
            }
        });
    tokio::join!(connections, reap(keys));
}

/// Forget keys added with a lifetime when it ends, even if no client
/// asks: sleep until the next one ends, or until a key with a lifetime is
/// added (it may end sooner).
async fn reap(keys: Arc<Keyring>) {
    /// How often to look when no key expires.
    const IDLE: std::time::Duration = std::time::Duration::from_secs(3600);
    loop {
        let next = keys.reap();
        let wake = next.unwrap_or_else(|| std::time::Instant::now() + IDLE);
        tokio::select! {
            () = tokio::time::sleep_until(wake.into()) => {}
            () = keys.lifetime_added() => {}
        }
    }
}

/// Serve one connection until the client leaves or breaks the protocol.
///
/// Bytes are read as they come into one buffer and frames cut from it,
/// so a request takes one read, not one for its length and one for its
/// body.
async fn handle(mut stream: UnixStream, agent: &Agent) -> Result<(), ConnectionError> {
    let mut bindings = Bindings::default();
    let client = super::Client::of(&stream);
    // Frames may hold a private key or a lock passphrase: wiped when done.
    let mut buf = Zeroizing::new(Vec::with_capacity(READ_SIZE));
    loop {
        let end = match frame_end(&buf)? {
            Some(end) if buf.len() >= end => {
                let out = answer(&buf[4..end], agent, &mut bindings, &client).await?;
                buf.drain(..end);
                stream.write_all(&out).await?;
                continue;
            }
            Some(end) => end,
            None => 4,
        };
        if buf.capacity() < end {
            grow(&mut buf, end);
        }
        // Into the spare room (at least up to `end`), no more: the
        // buffer is never reallocated by a read, nor filled first.
        let start = buf.len();
        match crate::server::workers::read(&mut stream, &mut buf).await? {
            // A peer that leaves between frames (or inside a length) has
            // finished; inside a body, it broke off.
            0 if start < 4 => return Ok(()),
            0 => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
            _ => {}
        }
    }
}

/// How much a read asks for when no longer frame is coming.
const READ_SIZE: usize = 4096;

/// Where the frame at the start of `buf` ends, once its length is in;
/// an error if that length is over [`MAX_FRAME`].
fn frame_end(buf: &[u8]) -> Result<Option<usize>, ConnectionError> {
    let Some(prefix) = buf.first_chunk::<4>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_FRAME {
        return Err(ConnectionError::TooLong(len));
    }
    Ok(Some(4 + len))
}

/// Make room for `end` bytes in `buf` without leaving a copy of what it
/// held behind: the old block is wiped (dropped as `Zeroizing`), where a
/// reallocation would free it as it is.
fn grow(buf: &mut Zeroizing<Vec<u8>>, end: usize) {
    let mut bigger = Zeroizing::new(Vec::with_capacity(end));
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

/// The session: one frame's body in, the whole answer frame out (its
/// length first). An error means the connection must close.
async fn answer(
    body: &[u8],
    agent: &Agent,
    bindings: &mut Bindings,
    client: &super::Client,
) -> Result<Vec<u8>, ConnectionError> {
    let reply = match ssh_agent::decode(body) {
        Ok(Decoded::Request(request)) => respond(*request, agent, bindings, client).await,
        Ok(Decoded::Cert(request)) => {
            Reply::Response(respond_cert(*request, agent, bindings, client).await)
        }
        Ok(Decoded::Unknown(command)) => {
            tracing::debug!(command, "unknown agent message");
            Reply::Response(Response::Failure)
        }
        Err(err) => {
            tracing::warn!(
                message = body.first().copied(),
                error = %err,
                "an agent request could not be read; answered FAILURE"
            );
            Reply::Response(Response::Failure)
        }
    };
    let mut out = Vec::with_capacity(64);
    0u32.encode(&mut out)?;
    match reply {
        Reply::Response(response) => response.encode(&mut out)?,
        Reply::Identities(identities) => {
            ssh_agent::encode_identities(
                identities.iter().map(|id| (id.blob(), id.comment.as_str())),
                &mut out,
            )?;
        }
    }
    let body_len = u32::try_from(out.len() - 4).unwrap_or(u32::MAX);
    out[..4].copy_from_slice(&body_len.to_be_bytes());
    Ok(out)
}

/// Where the names of hosts come from: known_hosts files, and the one the
/// account syncs in its Credential catalog (entry
/// [`KNOWN_HOSTS_ENTRY`], for devices with the `web` right), so that a
/// key scoped to `github.com` finds GitHub on a device that never
/// connected there before.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    /// The files (the user's, then the system's); one that is not there
    /// names nothing.
    pub files: Vec<PathBuf>,
    /// The account, whose view holds the synced one.
    pub account: Option<crate::account::Handle>,
}

impl KnownHosts {
    /// Every name `host` has.
    pub fn names(&self, host: &ssh_key::public::KeyData) -> Names {
        let mut names = Names::default();
        for path in &self.files {
            if let Ok(text) = std::fs::read_to_string(path) {
                names = names.merged(Names::of(&text, host));
            }
        }
        if let Some(account) = &self.account
            && let Ok(credential) = &account.view().credential
            && let Some(text) = credential.get(KNOWN_HOSTS_ENTRY)
        {
            names = names.merged(Names::of(text, host));
        }
        names
    }
}

/// An answer to a request.
enum Reply {
    /// As ssh-agent-lib encodes it.
    Response(Response),
    /// SSH2_AGENT_IDENTITIES_ANSWER, encoded here: ssh-agent-lib's
    /// cannot carry every certificate (see [`ssh_agent::Cert`]).
    Identities(Vec<Arc<Identity>>),
}

/// The identities in the order a connection bound to `host` should try
/// them: those scoped to one of its names first, those scoped to no host
/// after, those scoped to other hosts not at all (so `ssh` finds the right
/// key before sshd's MaxAuthTries, with no ssh_config). On an unbound
/// connection (`ssh-add -l`, an old client) every identity, as they are.
fn for_host(
    identities: Vec<Arc<Identity>>,
    host: Option<&ssh_key::public::KeyData>,
    known_hosts: &KnownHosts,
) -> Vec<Arc<Identity>> {
    let Some(host) = host else {
        return identities;
    };
    if identities.iter().all(|id| id.hosts.is_empty()) {
        return identities;
    }
    let names = known_hosts.names(host);
    let (scoped, unscoped): (Vec<_>, Vec<_>) =
        identities.into_iter().partition(|id| !id.hosts.is_empty());
    let mut out: Vec<Arc<Identity>> = scoped
        .into_iter()
        .filter(|id| id.hosts.iter().any(|pattern| names.match_any(pattern)))
        .collect();
    out.extend(unscoped);
    out
}

/// `identities` for a connection bound to `host`: the keys that server
/// took before (here or on another device of the account) first, then as
/// [`for_host`] orders them.
fn for_bound_host(
    identities: Vec<Arc<Identity>>,
    host: Option<&ssh_key::public::KeyData>,
    agent: &Agent,
) -> Vec<Arc<Identity>> {
    let Some(host) = host else {
        return identities;
    };
    let taken = agent.keys.accepted_by(host);
    let (first, rest): (Vec<_>, Vec<_>) = identities
        .into_iter()
        .partition(|id| taken.contains(&id.fingerprint()));
    let mut out = first;
    out.extend(for_host(rest, Some(host), &agent.known_hosts));
    out
}

/// A host as a person knows it: its first name in known_hosts, with its
/// host key's fingerprint.
fn host_label(host: &ssh_key::public::KeyData, known_hosts: &KnownHosts) -> String {
    let fingerprint = host.fingerprint(ssh_key::HashAlg::Sha256);
    match known_hosts.names(host).first_plain() {
        Some(name) => format!("{name} ({fingerprint})"),
        None => fingerprint.to_string(),
    }
}

/// The answer to one request.
async fn respond(
    request: Request,
    agent: &Agent,
    bindings: &mut Bindings,
    client: &super::Client,
) -> Reply {
    let keys = &agent.keys;
    Reply::Response(match request {
        Request::RequestIdentities => {
            return Reply::Identities(for_bound_host(
                keys.identities()
                    .into_iter()
                    .filter(|id| bindings.permits(&id.destinations, None))
                    .collect(),
                bindings.destination(),
                agent,
            ));
        }
        Request::SignRequest(request) => {
            // (A certificate is read by `ssh_agent::decode`, never here.)
            let PublicCredential::Key(public) = &request.credential else {
                return Reply::Response(Response::Failure);
            };
            match keys.find(public) {
                Some(id) => sign(id, request.data, request.flags, agent, bindings, client).await,
                None => Response::Failure,
            }
        }
        Request::AddIdentity(identity) => add(identity, Vec::new(), None, keys, bindings),
        Request::AddIdConstrained(AddIdentityConstrained {
            identity,
            constraints,
        }) => add(identity, constraints, None, keys, bindings),
        // As in OpenSSH, any connection may remove what it can see, and
        // `ssh-add -D` works from anywhere: removal takes capability away
        // and never gives any back (a masked Mesh key stays masked).
        Request::RemoveIdentity(remove) => match remove.credential {
            PublicCredential::Key(public) => {
                status(keys.remove(&public, |id| bindings.permits(&id.destinations, None)))
            }
            // (A certificate is read by `ssh_agent::decode`, never here.)
            PublicCredential::Cert(_) => Response::Failure,
        },
        Request::RemoveAllIdentities => status(keys.remove_all()),
        Request::Lock(passphrase) => {
            let passphrase = Zeroizing::new(passphrase.into_bytes());
            status(keys.lock(&passphrase))
        }
        Request::Unlock(passphrase) => {
            let passphrase = Zeroizing::new(passphrase.into_bytes());
            // A wrong passphrase is slowed down there, as OpenSSH does.
            status(keys.unlock(&passphrase).await)
        }
        // No PKCS#11 providers: the Mesh is where keys come from.
        Request::AddSmartcardKey(_)
        | Request::RemoveSmartcardKey(_)
        | Request::AddSmartcardKeyConstrained(_) => Response::Failure,
        Request::Extension(extension) => self::extension(extension, keys, bindings),
    })
}

/// The answer to a request naming a certificate: a certified identity is
/// added, used and removed as a key is, by its certificate blob.
async fn respond_cert(
    request: CertRequest,
    agent: &Agent,
    bindings: &Bindings,
    client: &super::Client,
) -> Response {
    let keys = &agent.keys;
    match request {
        CertRequest::Add { cert, add: request } => add(
            request.identity,
            request.constraints,
            Some(*cert),
            keys,
            bindings,
        ),
        CertRequest::Sign { cert, data, flags } => match keys.find_cert(&cert) {
            Some(id) => sign(id, data, flags, agent, bindings, client).await,
            None => Response::Failure,
        },
        CertRequest::Remove { cert } => {
            status(keys.remove_cert(&cert, |id| bindings.permits(&id.destinations, None)))
        }
    }
}

fn status(ok: bool) -> Response {
    if ok {
        Response::Success
    } else {
        Response::Failure
    }
}

fn extension(extension: Extension, keys: &Keyring, bindings: &mut Bindings) -> Response {
    // Binds are recorded while locked too, as OpenSSH 10 does: `ssh`
    // binds each connection as it opens it, and after an unlock the
    // connection must be known for where it leads, not taken for local
    // use. A bind reveals and uses no key.
    if extension.name == "session-bind@openssh.com" {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return match bindings.bind(extension.details.as_ref(), now) {
            Ok(()) => Response::Success,
            Err(err) => {
                tracing::warn!(error = %err, "session-bind refused");
                // OpenSSH's answer to a failed extension.
                Response::ExtensionFailure
            }
        };
    }
    if keys.is_locked() {
        return Response::Failure;
    }
    match extension.name.as_str() {
        "query" => {
            let query = QueryResponse {
                extensions: EXTENSIONS.iter().map(|&name| name.into()).collect(),
            };
            match Extension::new_message(query) {
                Ok(answer) => Response::ExtensionResponse(answer),
                Err(_) => Response::Failure,
            }
        }
        name => {
            tracing::debug!(name, "unsupported agent extension");
            Response::Failure
        }
    }
}

/// Add a key, or with `cert` a certified identity of it (the certificate
/// must be for this key, as OpenSSH requires).
fn add(
    identity: AddIdentity,
    constraints: Vec<KeyConstraint>,
    cert: Option<ssh_agent::Cert>,
    keys: &Keyring,
    bindings: &Bindings,
) -> Response {
    // (A certificate is read by `ssh_agent::decode`, never here.)
    let PrivateCredential::Key { privkey, comment } = &identity.credential else {
        return Response::Failure;
    };
    let mut id = match Identity::new(privkey, comment.clone()) {
        Ok(id) => id,
        Err(err) => {
            tracing::info!(error = %err, "refusing a key");
            return Response::Failure;
        }
    };
    if let Some(cert) = cert {
        if cert.key != id.public {
            tracing::info!(
                fingerprint = %id.fingerprint(),
                "refusing a certificate for another key"
            );
            return Response::Failure;
        }
        id.cert = Some(cert.blob);
    }
    for constraint in constraints {
        match constraint {
            KeyConstraint::Lifetime(seconds) => {
                id.expires = Some(
                    std::time::Instant::now() + std::time::Duration::from_secs(seconds.into()),
                );
            }
            KeyConstraint::Confirm => id.confirm = true,
            KeyConstraint::Extension(extension) => {
                match extension.parse_key_constraint::<RestrictDestination>() {
                    Ok(Some(restriction)) if ssh_agent::valid(&restriction.constraints) => {
                        id.destinations.extend(restriction.constraints);
                    }
                    _ => {
                        tracing::info!(name = %extension.name, "refusing a key constraint");
                        return Response::Failure;
                    }
                }
            }
        }
    }
    let fingerprint = id.fingerprint();
    let certified = id.cert.is_some();
    let added = keys.add(id, |old| bindings.permits(&old.destinations, None));
    if added {
        tracing::info!(%fingerprint, certified, "key added");
    } else {
        tracing::info!(
            %fingerprint,
            certified,
            "key not added: locked, or its copy out of sight"
        );
    }
    status(added)
}

/// Sign `data` with an identity the agent serves, under its constraints.
async fn sign(
    id: Arc<Identity>,
    data: Vec<u8>,
    flags: u32,
    agent: &Agent,
    bindings: &Bindings,
    client: &super::Client,
) -> Response {
    let mut destination = String::new();
    if !id.destinations.is_empty() {
        match bindings.check_use(&id.destinations, &data, &id.public, id.cert.as_deref()) {
            Ok(user) => destination = format!(" for user \"{user}\" on a listed host"),
            Err(err) => {
                tracing::warn!(error = %err, "refusing a destination-constrained key");
                return Response::Failure;
            }
        }
    }
    if id.confirm {
        let prompt = format!(
            "Allow use of key {}{destination}?\nKey fingerprint {}.",
            id.comment,
            id.fingerprint()
        );
        let question = || crate::account::Question {
            operation: "ssh".into(),
            key: id.comment.clone(),
            fingerprint: id.fingerprint(),
            host: bindings
                .destination()
                .map(|host| host_label(host, &agent.known_hosts)),
            user: ssh_agent::login_user(&data, &id.public, id.cert.as_deref()),
            program: client.program.clone(),
            expires_in: std::time::Duration::ZERO,
        };
        let remote = agent.approvals.as_ref();
        if !super::approval::confirm(&agent.askpass, remote, &prompt, question).await {
            tracing::info!(fingerprint = %id.fingerprint(), "use of key denied");
            return Response::Failure;
        }
    }
    // A server that took this key, to offer it first there next time.
    let accepted = bindings.accepted_by(&data, &id.public, id.cert.as_deref());
    let result = if id.is_rsa() {
        // Milliseconds of big-number work: off the event loop.
        let id = Arc::clone(&id);
        tokio::task::spawn_blocking(move || id.sign(&data, flags))
            .await
            .unwrap_or(Err(crate::keystore::ssh::KeyError::Sign))
    } else {
        id.sign(&data, flags)
    };
    match result {
        Ok(signature) => {
            if let Some(host) = accepted
                && agent.keys.learn(&host, &id.public)
                && let Some(learned) = &agent.learned
            {
                let host = host.fingerprint(ssh_key::HashAlg::Sha256).to_string();
                let _ = learned.send((host, id.fingerprint()));
            }
            super::note_use(
                &agent.usage,
                client,
                "ssh",
                &id.comment,
                id.fingerprint(),
                bindings
                    .destination()
                    .map(|host| host.fingerprint(ssh_key::HashAlg::Sha256).to_string()),
                id.confirm,
            );
            Response::SignResponse(signature)
        }
        Err(err) => {
            tracing::info!(error = %err, "sign request refused");
            Response::Failure
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_agent_lib::proto::SignRequest;
    use ssh_key::{Algorithm, PrivateKey};

    fn agent() -> Agent {
        Agent {
            keys: Arc::new(Keyring::default()),
            askpass: Askpass::from_env(|_| None),
            uid: 1000,
            known_hosts: KnownHosts::default(),
            learned: None,
            usage: None,
            approvals: None,
        }
    }

    /// A request's body, as `ssh-add` and `ssh` send it.
    fn body(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        request.encode(&mut out).expect("encodes");
        out
    }

    async fn ask(agent: &Agent, bindings: &mut Bindings, body: &[u8]) -> Vec<u8> {
        answer(body, agent, bindings, &crate::frontend::Client::default())
            .await
            .expect("an answer")
    }

    fn decoded(frame: &[u8]) -> Response {
        assert_eq!(
            u32::from_be_bytes(frame[..4].try_into().expect("4")) as usize,
            frame.len() - 4
        );
        ssh_agent_lib::ssh_encoding::Decode::decode(&mut &frame[4..]).expect("a response")
    }

    #[tokio::test]
    async fn an_ssh_add_session_byte_for_byte() {
        let agent = agent();
        let mut bindings = Bindings::default();
        // `ssh-add -l` on an empty agent: SSH2_AGENTC_REQUEST_IDENTITIES
        // (11), answered with SSH2_AGENT_IDENTITIES_ANSWER (12) and no key.
        assert_eq!(
            ask(&agent, &mut bindings, &[11]).await,
            [0, 0, 0, 5, 12, 0, 0, 0, 0]
        );
        // An unknown message type: SSH_AGENT_FAILURE (5), and the session
        // goes on.
        assert_eq!(ask(&agent, &mut bindings, &[0x99]).await, [0, 0, 0, 1, 5]);

        // `ssh-add KEY`, then `ssh-add -l`, then a signature.
        let key = PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).expect("key");
        let add = Request::AddIdentity(AddIdentity {
            credential: PrivateCredential::Key {
                privkey: key.key_data().clone(),
                comment: "test".into(),
            },
        });
        assert_eq!(
            ask(&agent, &mut bindings, &body(&add)).await,
            [0, 0, 0, 1, 6]
        );
        let Response::IdentitiesAnswer(ids) = decoded(&ask(&agent, &mut bindings, &[11]).await)
        else {
            panic!("an identities answer")
        };
        assert_eq!(ids.len(), 1);
        assert_eq!(ids[0].comment, "test");
        let sign = Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.public_key().key_data().clone()),
            data: b"data".to_vec(),
            flags: 0,
        });
        let Response::SignResponse(signature) =
            decoded(&ask(&agent, &mut bindings, &body(&sign)).await)
        else {
            panic!("a signature")
        };
        use signature::Verifier as _;
        key.public_key()
            .key_data()
            .verify(b"data", &signature)
            .expect("the signature verifies");

        // Locked, the agent lists nothing and signs nothing.
        let lock = Request::Lock("secret".into());
        assert_eq!(
            ask(&agent, &mut bindings, &body(&lock)).await,
            [0, 0, 0, 1, 6]
        );
        assert_eq!(
            ask(&agent, &mut bindings, &[11]).await,
            [0, 0, 0, 5, 12, 0, 0, 0, 0]
        );
        assert_eq!(
            ask(&agent, &mut bindings, &body(&sign)).await,
            [0, 0, 0, 1, 5]
        );
        let unlock = Request::Unlock("secret".into());
        assert_eq!(
            ask(&agent, &mut bindings, &body(&unlock)).await,
            [0, 0, 0, 1, 6]
        );

        // `ssh-add -D`.
        assert_eq!(ask(&agent, &mut bindings, &[19]).await, [0, 0, 0, 1, 6]);
        assert_eq!(
            ask(&agent, &mut bindings, &[11]).await,
            [0, 0, 0, 5, 12, 0, 0, 0, 0]
        );
    }

    fn key() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, Algorithm::Ed25519).expect("key")
    }

    const SUCCESS: [u8; 5] = [0, 0, 0, 1, 6];
    const FAILURE: [u8; 5] = [0, 0, 0, 1, 5];
    const EXTENSION_FAILURE: [u8; 5] = [0, 0, 0, 1, 28];

    /// `ssh-add` with constraints.
    fn add_request(key: &PrivateKey, constraints: Vec<KeyConstraint>) -> Vec<u8> {
        body(&Request::AddIdConstrained(AddIdentityConstrained {
            identity: AddIdentity {
                credential: PrivateCredential::Key {
                    privkey: key.key_data().clone(),
                    comment: "copy".into(),
                },
            },
            constraints,
        }))
    }

    /// `ssh-add -h host`.
    fn only_to(host: &PrivateKey) -> KeyConstraint {
        use ssh_agent_lib::proto::extension::{DestinationConstraint, HostTuple, KeySpec};
        let origin = HostTuple {
            username: String::new(),
            hostname: String::new(),
            keys: Vec::new(),
        };
        let to = HostTuple {
            username: String::new(),
            hostname: "host.example".into(),
            keys: vec![KeySpec {
                keyblob: host.public_key().key_data().clone(),
                is_ca: false,
            }],
        };
        let restriction = RestrictDestination {
            constraints: vec![DestinationConstraint { from: origin, to }],
        };
        KeyConstraint::Extension(Extension::new_key_constraint(restriction).expect("encodes"))
    }

    /// What `ssh` sends on a connection it opens for a session with
    /// `host` (`forwarding`: for the agent forwarded to it).
    fn session_bind(host: &PrivateKey, session_id: &[u8], forwarding: bool) -> Vec<u8> {
        use signature::Signer as _;
        use ssh_agent_lib::proto::extension::SessionBind;
        let bind = SessionBind {
            host_key: host.public_key().key_data().clone(),
            session_id: session_id.to_vec(),
            signature: host.try_sign(session_id).expect("signs"),
            is_forwarding: forwarding,
        };
        body(&Request::Extension(
            Extension::new_message(bind).expect("encodes"),
        ))
    }

    fn remove_request(key: &PrivateKey) -> Vec<u8> {
        body(&Request::RemoveIdentity(
            ssh_agent_lib::proto::RemoveIdentity {
                credential: PublicCredential::Key(key.public_key().key_data().clone()),
            },
        ))
    }

    fn sign_request(key: &PrivateKey) -> Vec<u8> {
        body(&Request::SignRequest(SignRequest {
            credential: PublicCredential::Key(key.public_key().key_data().clone()),
            data: b"data".to_vec(),
            flags: 0,
        }))
    }

    async fn listed(agent: &Agent, bindings: &mut Bindings) -> usize {
        match decoded(&ask(agent, bindings, &[11]).await) {
            Response::IdentitiesAnswer(ids) => ids.len(),
            other => panic!("not an identities answer: {other:?}"),
        }
    }

    /// Finding 10 of the second security review: a host the agent was
    /// forwarded to, knowing a Mesh key's public half, removes the
    /// user's constrained copy to get the unconstrained Mesh key back.
    #[tokio::test]
    async fn a_forwarded_host_cannot_bring_back_the_mesh_key() {
        let (mesh, a, b) = (key(), key(), key());
        for copy in ["-h a", "-c"] {
            let agent = agent();
            agent.keys.set_mesh(vec![
                Identity::new(mesh.key_data(), "mesh".into()).expect("identity"),
            ]);
            let mut local = Bindings::default();
            let constraint = match copy {
                "-h a" => only_to(&a),
                _ => KeyConstraint::Confirm,
            };
            let add = add_request(&mesh, vec![constraint]);
            assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
            // `ssh -A b`: the connection forwarded to b.
            let mut forwarded = Bindings::default();
            let bind = session_bind(&b, b"session with b", true);
            assert_eq!(ask(&agent, &mut forwarded, &bind).await, SUCCESS);
            let removed = ask(&agent, &mut forwarded, &remove_request(&mesh)).await;
            match copy {
                // A copy b cannot see, b cannot remove (as in OpenSSH).
                "-h a" => assert_eq!(removed, FAILURE),
                _ => assert_eq!(removed, SUCCESS),
            }
            // `ssh-add -D` works from anywhere, as in OpenSSH.
            assert_eq!(ask(&agent, &mut forwarded, &[19]).await, SUCCESS);
            // Nothing came back, there or here.
            assert_eq!(listed(&agent, &mut forwarded).await, 0, "{copy}");
            assert_eq!(
                ask(&agent, &mut forwarded, &sign_request(&mesh)).await,
                FAILURE
            );
            assert_eq!(listed(&agent, &mut local).await, 0, "{copy}");
            assert_eq!(ask(&agent, &mut local, &sign_request(&mesh)).await, FAILURE);
        }
    }

    #[tokio::test]
    async fn session_binds_count_while_locked() {
        let agent = agent();
        let (user, a, b) = (key(), key(), key());
        let mut setup = Bindings::default();
        let add = add_request(&user, vec![only_to(&a)]);
        assert_eq!(ask(&agent, &mut setup, &add).await, SUCCESS);
        let lock = body(&Request::Lock("pw".into()));
        let unlock = body(&Request::Unlock("pw".into()));
        // A connection `ssh b` opened while the agent was locked.
        let mut to_b = Bindings::default();
        assert_eq!(ask(&agent, &mut to_b, &lock).await, SUCCESS);
        let bind = session_bind(&b, b"session with b", false);
        assert_eq!(ask(&agent, &mut to_b, &bind).await, SUCCESS);
        // A connection whose bind failed while locked.
        let mut forged = Bindings::default();
        let mut bad = session_bind(&b, b"session with b", false);
        let last = bad.len() - 2;
        bad[last] ^= 1; // inside the signature
        assert_eq!(ask(&agent, &mut forged, &bad).await, EXTENSION_FAILURE);
        assert_eq!(ask(&agent, &mut to_b, &unlock).await, SUCCESS);
        // After the unlock neither is taken for local use.
        assert_eq!(listed(&agent, &mut to_b).await, 0);
        assert_eq!(listed(&agent, &mut forged).await, 0);
        assert_eq!(listed(&agent, &mut Bindings::default()).await, 1);
    }

    #[tokio::test]
    async fn a_key_with_a_lifetime_wakes_the_reaper() {
        let keys = Arc::new(Keyring::default());
        let reaper = tokio::spawn(reap(Arc::clone(&keys)));
        // Let the reaper find nothing and settle into its idle hour.
        tokio::task::yield_now().await;
        let mut id = Identity::new(key().key_data(), "short".into()).expect("identity");
        id.expires = Some(std::time::Instant::now());
        assert!(keys.add(id, |_| true));
        // The guard is for a broken reaper only: it ends the test instead
        // of waiting an hour.
        let reaped = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while keys.counts() != (0, 0) {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(reaped.is_ok(), "the reaper slept on");
        reaper.abort();
    }

    /// A user certificate of the Ed25519 `key`, signed by `ca`, valid
    /// until `valid_before` (`u64::MAX`: forever, what ssh-keygen writes
    /// without `-V`, which ssh-key cannot build), as ssh-keygen lays it
    /// out.
    fn certificate(ca: &PrivateKey, key: &PrivateKey, valid_before: u64) -> Vec<u8> {
        use signature::Signer as _;
        let mut out = Vec::new();
        let ssh_key::public::KeyData::Ed25519(public) = key.public_key().key_data() else {
            panic!("an Ed25519 key")
        };
        "ssh-ed25519-cert-v01@openssh.com"
            .encode(&mut out)
            .expect("encodes");
        [7u8; 32].as_slice().encode(&mut out).expect("nonce");
        public.0.as_slice().encode(&mut out).expect("key");
        1u64.encode(&mut out).expect("serial");
        1u32.encode(&mut out).expect("a user certificate");
        "key id".encode(&mut out).expect("key id");
        let mut principals = Vec::new();
        "user".encode(&mut principals).expect("principal");
        principals.encode(&mut out).expect("principals");
        0u64.encode(&mut out).expect("valid after");
        valid_before.encode(&mut out).expect("valid before");
        let mut extensions = Vec::new();
        "permit-pty".encode(&mut extensions).expect("extension");
        "".encode(&mut extensions).expect("extension");
        [0u8; 0]
            .as_slice()
            .encode(&mut out)
            .expect("critical options");
        extensions.encode(&mut out).expect("extensions");
        [0u8; 0].as_slice().encode(&mut out).expect("reserved");
        ca.public_key()
            .key_data()
            .encode_prefixed(&mut out)
            .expect("ca");
        let signature: ssh_key::Signature = ca.try_sign(&out).expect("signs");
        signature.encode_prefixed(&mut out).expect("signature");
        out
    }

    /// `ssh-add` of a key with its certificate: the certified form, as
    /// ssh-add sends it (the certificate, then the Ed25519 key's private
    /// fields), with raw constraint bytes.
    fn add_cert_request(cert: &[u8], key: &PrivateKey, constraints: &[u8]) -> Vec<u8> {
        let ssh_key::private::KeypairData::Ed25519(pair) = key.key_data() else {
            panic!("an Ed25519 key")
        };
        let mut out = vec![if constraints.is_empty() { 17 } else { 25 }];
        "ssh-ed25519-cert-v01@openssh.com"
            .encode(&mut out)
            .expect("encodes");
        cert.encode(&mut out).expect("cert");
        pair.public.0.as_slice().encode(&mut out).expect("pk");
        let mut secret = pair.private.to_bytes().to_vec();
        secret.extend_from_slice(&pair.public.0);
        secret.encode(&mut out).expect("sk");
        "key-cert".encode(&mut out).expect("comment");
        out.extend_from_slice(constraints);
        out
    }

    fn sign_cert_request(cert: &[u8]) -> Vec<u8> {
        let mut out = vec![13];
        cert.encode(&mut out).expect("cert");
        b"data".as_slice().encode(&mut out).expect("data");
        0u32.encode(&mut out).expect("flags");
        out
    }

    fn remove_cert_request(cert: &[u8]) -> Vec<u8> {
        let mut out = vec![18];
        cert.encode(&mut out).expect("cert");
        out
    }

    /// The blobs and comments of an identities answer, read by hand
    /// (ssh-agent-lib cannot read a certificate valid forever).
    fn identities(frame: &[u8]) -> Vec<(Vec<u8>, String)> {
        use ssh_agent_lib::ssh_encoding::Decode as _;
        let mut r = &frame[4..];
        assert_eq!(u8::decode(&mut r).expect("type"), 12, "{frame:?}");
        let n = u32::decode(&mut r).expect("count");
        let out = (0..n)
            .map(|_| {
                (
                    Vec::<u8>::decode(&mut r).expect("blob"),
                    String::decode(&mut r).expect("comment"),
                )
            })
            .collect();
        assert!(r.is_empty());
        out
    }

    fn blob(key: &PrivateKey) -> Vec<u8> {
        let mut out = Vec::new();
        key.public_key().key_data().encode(&mut out).expect("blob");
        out
    }

    #[tokio::test]
    async fn a_certified_key_is_added_listed_used_and_removed_by_its_certificate() {
        let (ca, user) = (key(), key());
        let in_an_hour = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("now")
            .as_secs()
            + 3600;
        for valid_before in [in_an_hour, u64::MAX] {
            let agent = agent();
            let mut local = Bindings::default();
            let cert = certificate(&ca, &user, valid_before);
            // `ssh-add key`: the key, then its certified form.
            assert_eq!(
                ask(&agent, &mut local, &add_request(&user, Vec::new())).await,
                SUCCESS
            );
            let add = add_cert_request(&cert, &user, &[]);
            assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
            // Two identities, as in OpenSSH: the key and the certificate.
            let listed = identities(&ask(&agent, &mut local, &[11]).await);
            assert_eq!(
                listed,
                [
                    (blob(&user), "copy".to_owned()),
                    (cert.clone(), "key-cert".to_owned())
                ]
            );
            // Asked by the certificate, the key signs.
            let Response::SignResponse(signature) =
                decoded(&ask(&agent, &mut local, &sign_cert_request(&cert)).await)
            else {
                panic!("a signature")
            };
            use signature::Verifier as _;
            user.public_key()
                .key_data()
                .verify(b"data", &signature)
                .expect("the key's signature");
            // Adding it again replaces it.
            assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
            assert_eq!(identities(&ask(&agent, &mut local, &[11]).await).len(), 2);
            // Locked, it is out of sight and out of use.
            let lock = body(&Request::Lock("pw".into()));
            assert_eq!(ask(&agent, &mut local, &lock).await, SUCCESS);
            assert!(identities(&ask(&agent, &mut local, &[11]).await).is_empty());
            assert_eq!(
                ask(&agent, &mut local, &sign_cert_request(&cert)).await,
                FAILURE
            );
            assert_eq!(
                ask(&agent, &mut local, &remove_cert_request(&cert)).await,
                FAILURE
            );
            let unlock = body(&Request::Unlock("pw".into()));
            assert_eq!(ask(&agent, &mut local, &unlock).await, SUCCESS);
            // Removed by its certificate, the certified identity goes; the
            // key stays.
            let remove = remove_cert_request(&cert);
            assert_eq!(ask(&agent, &mut local, &remove).await, SUCCESS);
            assert_eq!(ask(&agent, &mut local, &remove).await, FAILURE);
            assert_eq!(
                identities(&ask(&agent, &mut local, &[11]).await),
                [(blob(&user), "copy".to_owned())]
            );
            assert_eq!(
                ask(&agent, &mut local, &sign_cert_request(&cert)).await,
                FAILURE
            );
            assert!(matches!(
                decoded(&ask(&agent, &mut local, &sign_request(&user)).await),
                Response::SignResponse(_)
            ));
            // And the other way round: removing the key leaves the
            // certificate; `ssh-add -D` takes both.
            assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
            assert_eq!(
                ask(&agent, &mut local, &remove_request(&user)).await,
                SUCCESS
            );
            assert_eq!(
                identities(&ask(&agent, &mut local, &[11]).await),
                [(cert.clone(), "key-cert".to_owned())]
            );
            assert_eq!(
                ask(&agent, &mut local, &add_request(&user, Vec::new())).await,
                SUCCESS
            );
            assert_eq!(ask(&agent, &mut local, &[19]).await, SUCCESS);
            assert!(identities(&ask(&agent, &mut local, &[11]).await).is_empty());
        }
    }

    #[tokio::test]
    async fn a_certificate_is_refused_for_another_key_or_forged() {
        let (ca, user, other) = (key(), key(), key());
        let agent = agent();
        let mut local = Bindings::default();
        let cert = certificate(&ca, &user, u64::MAX);
        // The certificate of one key with the private key of another.
        let add = add_cert_request(&cert, &other, &[]);
        assert_eq!(ask(&agent, &mut local, &add).await, FAILURE);
        // A byte changed in what the authority signed.
        let mut forged = cert.clone();
        let at = forged.len() / 2;
        forged[at] ^= 1;
        let add = add_cert_request(&forged, &user, &[]);
        assert_eq!(ask(&agent, &mut local, &add).await, FAILURE);
        // Cut short.
        let add = add_cert_request(&cert, &user, &[]);
        assert_eq!(
            ask(&agent, &mut local, &add[..add.len() - 3]).await,
            FAILURE
        );
        assert!(identities(&ask(&agent, &mut local, &[11]).await).is_empty());
        // The connection goes on.
        assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
    }

    #[tokio::test]
    async fn constraints_apply_to_a_certified_key() {
        let (ca, user, host) = (key(), key(), key());
        let cert = certificate(&ca, &user, u64::MAX);
        // `ssh-add -c`: asked each time; here askpass says no.
        let mut agent = agent();
        agent.askpass = Askpass::from_env(|var| match var {
            "SSH_ASKPASS" => Some("/bin/false".into()),
            "DISPLAY" => Some(":0".into()),
            _ => None,
        });
        let mut local = Bindings::default();
        let add = add_cert_request(&cert, &user, &[2]);
        assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
        assert_eq!(
            ask(&agent, &mut local, &sign_cert_request(&cert)).await,
            FAILURE
        );
        // `ssh-add -t 0`... a lifetime that has ended: gone.
        let agent = self::agent();
        let add = add_cert_request(&cert, &user, &[1, 0, 0, 0, 0]);
        assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
        assert!(identities(&ask(&agent, &mut local, &[11]).await).is_empty());
        assert_eq!(agent.keys.reap(), None);
        assert_eq!(agent.keys.counts(), (0, 0));
        // `ssh-add -h host`: out of sight on a connection to another host,
        // and not for signing anything but a log-in there.
        let mut constraint = Vec::new();
        let KeyConstraint::Extension(extension) = only_to(&host) else {
            unreachable!()
        };
        KeyConstraint::Extension(extension)
            .encode(&mut constraint)
            .expect("encodes");
        let add = add_cert_request(&cert, &user, &constraint);
        assert_eq!(ask(&agent, &mut local, &add).await, SUCCESS);
        assert_eq!(identities(&ask(&agent, &mut local, &[11]).await).len(), 1);
        assert_eq!(
            ask(&agent, &mut local, &sign_cert_request(&cert)).await,
            FAILURE,
            "local use of a destination-constrained key signs no log-in"
        );
        // On a connection `ssh` bound to that host, the log-in it asks
        // for, offering the certificate, is signed; offering the plain
        // key instead, it is not.
        let mut there = Bindings::default();
        let bind = session_bind(&host, b"session there", false);
        assert_eq!(ask(&agent, &mut there, &bind).await, SUCCESS);
        let login = |algorithm: &str, offered: &[u8]| {
            let mut data = Vec::new();
            b"session there".as_slice().encode(&mut data).expect("id");
            50u8.encode(&mut data).expect("userauth request");
            "git".encode(&mut data).expect("user");
            "ssh-connection".encode(&mut data).expect("service");
            "publickey-hostbound-v00@openssh.com"
                .encode(&mut data)
                .expect("method");
            1u8.encode(&mut data).expect("with a signature");
            algorithm.encode(&mut data).expect("algorithm");
            offered.encode(&mut data).expect("key");
            blob(&host).encode(&mut data).expect("host key");
            let mut out = vec![13];
            cert.encode(&mut out).expect("cert");
            data.encode(&mut out).expect("data");
            0u32.encode(&mut out).expect("flags");
            out
        };
        let signed = login("ssh-ed25519-cert-v01@openssh.com", &cert);
        assert!(matches!(
            decoded(&ask(&agent, &mut there, &signed).await),
            Response::SignResponse(_)
        ));
        let plain = login("ssh-ed25519", &blob(&user));
        assert_eq!(ask(&agent, &mut there, &plain).await, FAILURE);
        let mut elsewhere = Bindings::default();
        let bind = session_bind(&key(), b"session elsewhere", false);
        assert_eq!(ask(&agent, &mut elsewhere, &bind).await, SUCCESS);
        assert!(identities(&ask(&agent, &mut elsewhere, &[11]).await).is_empty());
        assert_eq!(
            ask(&agent, &mut elsewhere, &remove_cert_request(&cert)).await,
            FAILURE
        );
        assert_eq!(agent.keys.counts(), (0, 1));
    }

    #[tokio::test]
    async fn a_malformed_known_message_gets_failure_and_the_session_goes_on() {
        let agent = agent();
        let mut bindings = Bindings::default();
        // A sign request (13) cut short, then a good request.
        let failed = decoded(&ask(&agent, &mut bindings, &[13, 0, 0, 0, 50, 1, 2]).await);
        assert!(matches!(failed, Response::Failure), "{failed:?}");
        let listed = decoded(&ask(&agent, &mut bindings, &[11]).await);
        assert!(
            matches!(listed, Response::IdentitiesAnswer(_)),
            "{listed:?}"
        );
    }

    /// The message type of the next answer frame on `client`.
    async fn answered(client: &mut UnixStream) -> u8 {
        use tokio::io::AsyncReadExt as _;
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await.expect("length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        client.read_exact(&mut body).await.expect("body");
        body[0]
    }

    /// The driver cuts frames out of what it reads however the bytes
    /// come: two requests in one write, one request a byte at a time, a
    /// body larger than a read; a length over the limit ends the
    /// connection.
    #[tokio::test]
    async fn frames_are_cut_however_the_bytes_come() {
        use tokio::io::AsyncWriteExt as _;
        let agent = Arc::new(agent());
        let (mut client, server) = UnixStream::pair().expect("pair");
        let served = tokio::spawn({
            let agent = Arc::clone(&agent);
            async move { handle(server, &agent).await }
        });
        let list = [0, 0, 0, 1, 11];
        client
            .write_all(&[list, list].concat())
            .await
            .expect("sent");
        assert_eq!(answered(&mut client).await, 12);
        assert_eq!(answered(&mut client).await, 12);
        for byte in list {
            client.write_all(&[byte]).await.expect("sent");
            tokio::task::yield_now().await;
        }
        assert_eq!(answered(&mut client).await, 12);
        // An unknown message of 10 000 bytes: FAILURE, and on.
        let mut big = 10_000u32.to_be_bytes().to_vec();
        big.push(200);
        big.resize(4 + 10_000, 7);
        client.write_all(&big).await.expect("sent");
        assert_eq!(answered(&mut client).await, 5);
        client.write_all(&list).await.expect("sent");
        assert_eq!(answered(&mut client).await, 12);
        let over = u32::try_from(MAX_FRAME + 1).expect("fits").to_be_bytes();
        client.write_all(&over).await.expect("sent");
        let ended = served.await.expect("joined");
        assert!(
            matches!(ended, Err(ConnectionError::TooLong(_))),
            "{ended:?}"
        );
    }
}
