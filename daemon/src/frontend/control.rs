//! The control socket: how `mesh` and the shims talk to `meshd`.
//!
//! One task per connection (through [`crate::server::accept_loop`]), at
//! most [`MAX_CONNECTIONS`] at once. Frames are decoded with
//! [`mesh_ipc::control`]; a malformed frame gets an error answer and
//! closes that connection and nothing else.
//!
//! Reads (status, lists, exports) are answered from the account's
//! published view and never wait for the account's task, so a slow or
//! stopped service cannot delay them. Changes go to the account's task;
//! the answer comes once what was done is usable: the keystore serves the
//! new keys, and gpg's keyring holds a new certificate.
//!
//! Two requests hand many secrets out at once: recovery shares
//! (`AccountEscrow`) and the whole Credential catalog (`CatalogList`).
//! Any program of the user's can reach this socket, so these are answered
//! only once the user says yes through askpass, as `ssh-add -c` keys are
//! (no one to ask is a no), and an escrow quorum under
//! [`MIN_QUORUM`] is refused outright. One credential is asked for by
//! name (`CatalogGet`, what the git helper uses) and needs no question.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mesh_ipc::control::{
    self, Catalog, CatalogEntry, DaemonStatus, ErrorKind, FrameError, Listener, MAX_FRAME, Request,
    Response, Standing,
};
use mesh_protocol::account::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, watch};

use crate::account::{AccountError, Command, Handle, SshPut};
use crate::host::gpg::Followed;
use crate::keystore;
use crate::keystore::confirm::Askpass;

/// How many control connections may be open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The smallest escrow quorum: with 1, each share is the account seed.
pub const MIN_QUORUM: usize = 2;

/// How long a command waits for gpg to take a new certificate: well
/// inside the 75 s a client waits for an answer.
const GPG_IMPORT: Duration = Duration::from_secs(25);

/// How long a PIN is accepted when its issuer does not say: ten minutes.
const PIN_LIFETIME_S: u64 = 600;

/// What the control frontend knows about the daemon.
#[derive(Debug)]
pub struct State {
    /// When the daemon started.
    pub started: Instant,
    /// The only uid whose clients are served.
    pub uid: u32,
    /// The directory that holds the sockets.
    pub runtime_dir: PathBuf,
    /// Every socket the daemon serves.
    pub listeners: Vec<Listener>,
    /// Notified when a client asks the daemon to stop.
    pub stop: Arc<Notify>,
    /// The account's task.
    pub account: Handle,
    /// The key snapshot generation the keystore serves.
    pub keystore_applied: watch::Receiver<u64>,
    /// How far gpg's keyring and gpg.conf follow the account.
    pub gpg_followed: watch::Receiver<Followed>,
    /// Where the user confirms exports of secrets.
    pub askpass: Askpass,
}

/// Accept control connections until the future is dropped.
pub async fn serve(listener: UnixListener, state: Arc<State>) {
    let uid = state.uid;
    crate::server::accept_loop(listener, "control", MAX_CONNECTIONS, uid, move |stream| {
        let state = Arc::clone(&state);
        async move { handle(stream, &state).await }
    })
    .await;
}

/// Serve one connection: read a request, answer it, until the peer leaves.
async fn handle(mut stream: UnixStream, state: &State) -> Result<(), FrameError> {
    // Requests may carry a private key: wipe what was read, spare
    // capacity included, when the connection ends.
    let mut buf = zeroize::Zeroizing::new(Vec::with_capacity(256));
    loop {
        let request = match control::decode::<Request>(&buf) {
            Ok(Some((request, used))) => {
                buf.drain(..used);
                request
            }
            Ok(None) => {
                if buf.len() > MAX_FRAME + 4 {
                    return Err(FrameError::TooLong { len: buf.len() });
                }
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return if buf.is_empty() {
                        Ok(())
                    } else {
                        Err(FrameError::Truncated)
                    };
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                continue;
            }
            Err(err) => {
                let answer = Response::Error {
                    kind: ErrorKind::Malformed,
                    message: err.to_string(),
                };
                stream.write_all(&control::encode(&answer)?).await?;
                return Err(err);
            }
        };
        tracing::debug!(request = request.name(), "control request");
        let stop = matches!(request, Request::Shutdown);
        let response = match allowed(&request, state).await {
            Err(refusal) => refusal,
            Ok(()) => respond(request, state)
                .await
                .unwrap_or_else(|e| Response::Error {
                    kind: e.kind(),
                    message: e.to_string(),
                }),
        };
        let frame = match control::encode(&response) {
            Err(FrameError::TooLong { len }) => control::encode(&Response::Error {
                kind: ErrorKind::Io,
                message: format!(
                    "the answer ({len} bytes) is over the control socket's limit of {MAX_FRAME}"
                ),
            })?,
            other => other?,
        };
        stream.write_all(&frame).await?;
        if stop {
            state.stop.notify_one();
            return Ok(());
        }
    }
}

/// Whether a request may be answered: those that export secrets in bulk
/// need a quorum of at least [`MIN_QUORUM`] and the user's yes. The error
/// is the refusal to send.
async fn allowed(request: &Request, state: &State) -> Result<(), Response> {
    let prompt = match request {
        Request::AccountEscrow { quorum, .. } if *quorum < MIN_QUORUM => {
            return Err(Response::Error {
                kind: ErrorKind::Input,
                message: format!(
                    "a quorum of at least {MIN_QUORUM} is needed (with {quorum}, each share is the account seed itself)"
                ),
            });
        }
        // Only an administrator holds the seed: the others are refused
        // here, with no question asked. (A view not yet up to date with a
        // promotion refuses too: never an escrow without a question.)
        Request::AccountEscrow { .. } if !state.account.view().status.admin => {
            let refusal = if state.account.view().status.status == Standing::None {
                AccountError::NoAccount
            } else {
                AccountError::NotAdmin
            };
            return Err(Response::Error {
                kind: refusal.kind(),
                message: refusal.to_string(),
            });
        }
        Request::AccountEscrow { shares, quorum } => format!(
            "Allow a program to take this Mesh account's recovery shares ({shares} shares, any {quorum} of which rebuild the account)?"
        ),
        Request::CatalogList {
            store: Catalog::Credential,
        } => "Allow a program to read every password and token in this Mesh account's Credential catalog?".to_owned(),
        _ => return Ok(()),
    };
    if state.askpass.confirm(&prompt).await {
        tracing::info!(request = request.name(), "export confirmed");
        Ok(())
    } else {
        tracing::warn!(request = request.name(), "export not confirmed; refused");
        Err(Response::Error {
            kind: ErrorKind::Denied,
            message: "not confirmed: this export needs a yes through askpass (SSH_ASKPASS), and no one said yes".into(),
        })
    }
}

/// A key the keystore would not make or take, as the account reports it.
fn unusable(e: keystore::MakeError) -> AccountError {
    match e {
        keystore::MakeError::Failed => AccountError::Io(e.to_string()),
        e => AccountError::Input(e.to_string()),
    }
}

/// Have the account do `command`, and answer once the keystore serves
/// the keys it left (a sync or a join may bring new ones, a revocation
/// take them away).
async fn change(state: &State, command: Command) -> Result<Response, AccountError> {
    let answer = state.account.run(command).await?;
    keys_in_use(state, false).await;
    Ok(answer)
}

/// The answer to one request.
async fn respond(request: Request, state: &State) -> Result<Response, AccountError> {
    let view = state.account.view();
    let run = |command| change(state, command);
    match request {
        Request::Status => Ok(Response::Status(DaemonStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: control::VERSION,
            pid: std::process::id(),
            uptime_seconds: state.started.elapsed().as_secs(),
            runtime_dir: state.runtime_dir.clone(),
            listeners: state.listeners.clone(),
        })),
        Request::Shutdown => Ok(Response::ShuttingDown),
        // ---- reads: from the view ----
        Request::AccountStatus => Ok(Response::Account(view.status.clone())),
        Request::DevicePending => Ok(Response::Pending {
            requests: view.pending.clone()?,
        }),
        Request::DeviceList => Ok(Response::Devices {
            devices: view.devices.clone()?,
        }),
        Request::CatalogGet { store, name } => {
            let values = match store {
                Catalog::Application => view.application.clone()?,
                Catalog::Credential => view.credential.clone()?,
            };
            let value = values
                .get(&name)
                .ok_or_else(|| AccountError::NotFound(format!("no entry named {name:?}")))?
                .to_owned();
            Ok(Response::CatalogEntry(CatalogEntry { name, value }))
        }
        Request::CatalogList { store } => {
            let values = match store {
                Catalog::Application => view.application.clone()?,
                Catalog::Credential => view.credential.clone()?,
            };
            Ok(Response::Catalog {
                entries: values
                    .entries()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            })
        }
        Request::SshList => Ok(Response::SshIdentities {
            identities: view.ssh.clone()?,
        }),
        Request::UsageLog => Ok(Response::Usage {
            uses: view.usage.clone()?,
        }),
        Request::ApprovalList => Ok(Response::Approvals {
            requests: view.approvals.clone()?.waiting.clone(),
        }),
        Request::SshGet { name } => view
            .ssh
            .clone()?
            .into_iter()
            .find(|e| e.name == name)
            .map(Response::SshIdentity)
            .ok_or_else(|| AccountError::NotFound(format!("no SSH identity named {name:?}"))),
        Request::SshAuthorizedKeys | Request::SshAllowedSigners => {
            let signers = matches!(request, Request::SshAllowedSigners);
            let address = view.status.address.clone().ok_or(AccountError::NoAccount)?;
            let lines = view
                .ssh
                .clone()?
                .into_iter()
                .map(|e| {
                    if signers {
                        format!("{address} namespaces=\"git\" {}", e.public)
                    } else {
                        e.public
                    }
                })
                .collect();
            Ok(Response::Lines { lines })
        }
        Request::OpenpgpList => Ok(Response::OpenpgpKeys {
            keys: view
                .openpgp
                .clone()?
                .into_iter()
                .map(|(row, _)| row)
                .collect(),
        }),
        Request::OpenpgpExport { name } => view
            .openpgp
            .clone()?
            .into_iter()
            .find(|(row, _)| row.name == name)
            .map(|(_, cert)| Response::OpenpgpCertificate(cert))
            .ok_or_else(|| AccountError::NotFound(format!("no OpenPGP key named {name:?}"))),
        // ---- changes: through the account's task ----
        Request::AccountCreate {
            address,
            service,
            name,
        } => {
            run(Command::Create {
                address,
                service,
                name,
            })
            .await
        }
        Request::AccountSync => run(Command::Sync).await,
        Request::AccountEscrow { shares, quorum } => run(Command::Escrow { shares, quorum }).await,
        Request::AccountRecover { shares, rejoin } => {
            let shares = shares.iter().map(|s| s.expose().to_owned()).collect();
            run(Command::Recover { shares, rejoin }).await
        }
        Request::AccountPin {
            roles,
            expires_in_s,
        } => {
            run(Command::Pin {
                roles,
                expires_in: Duration::from_secs(expires_in_s.unwrap_or(PIN_LIFETIME_S)),
            })
            .await
        }
        Request::DeviceConnect {
            address,
            service,
            name,
            pin,
            profile,
        } => {
            run(Command::Connect {
                address,
                service,
                name,
                pin,
                profile,
            })
            .await
        }
        Request::DeviceConnectStatus => run(Command::ConnectStatus).await,
        Request::DeviceAccept { code, roles, name } => {
            let roles = if roles.is_empty() {
                vec![Role::Device]
            } else {
                roles
            };
            run(Command::Answer {
                code,
                accept: Some((roles, name)),
            })
            .await
        }
        Request::DeviceReject { code } => run(Command::Answer { code, accept: None }).await,
        Request::DeviceRevoke { name } => run(Command::Revoke { name }).await,
        Request::CatalogPut { store, name, value } => {
            run(Command::CatalogImport {
                store: store.store(),
                entries: vec![(name, value.expose().to_owned())],
            })
            .await
        }
        Request::CatalogImport { store, entries } => {
            run(Command::CatalogImport {
                store: store.store(),
                entries,
            })
            .await
        }
        Request::CatalogDelete { store, name } => {
            run(Command::CatalogDelete {
                store: store.store(),
                name,
            })
            .await
        }
        Request::SshCreate {
            name,
            algorithm,
            confirm,
            hosts,
        } => {
            crate::account::check_name(&name)?;
            let key = keystore::generate_ssh(&algorithm).await.map_err(unusable)?;
            run(Command::SshPut(Box::new(SshPut {
                name,
                key,
                confirm,
                replace: false,
                hosts,
            })))
            .await
        }
        Request::SshImport {
            name,
            private,
            passphrase,
            confirm,
            hosts,
        } => {
            crate::account::check_name(&name)?;
            let key = keystore::take_ssh(
                private.expose(),
                passphrase.as_ref().map(control::SecretText::expose),
            )
            .map_err(unusable)?;
            run(Command::SshPut(Box::new(SshPut {
                name,
                key,
                confirm,
                replace: true,
                hosts,
            })))
            .await
        }
        Request::SshSet { name, hosts } => run(Command::SshSet { name, hosts }).await,
        Request::SshDelete { name } => run(Command::SshDelete { name }).await,
        Request::Approve { id, approved } => run(Command::AnswerApproval { id, approved }).await,
        Request::OpenpgpCreate {
            user_id,
            algorithm,
            name,
            confirm,
        } => {
            let cert = keystore::generate_openpgp(&user_id, &algorithm)
                .await
                .map_err(unusable)?;
            openpgp_added(state, Box::new(cert), name, Some(confirm)).await
        }
        Request::OpenpgpImport {
            secret,
            name,
            confirm,
        } => {
            let cert = keystore::take_openpgp(secret.expose().as_bytes()).map_err(unusable)?;
            openpgp_added(state, Box::new(cert), name, confirm.then_some(true)).await
        }
        Request::OpenpgpSet { name, confirm } => run(Command::OpenpgpSet { name, confirm }).await,
        Request::OpenpgpDelete { name } => run(Command::OpenpgpDelete { name }).await,
    }
}

/// Put a certificate in the account and return once gpg lists it, with
/// what was done to gpg.conf for it (by the host, once the key was in the
/// account), if anything.
async fn openpgp_added(
    state: &State,
    cert: Box<sequoia_openpgp::Cert>,
    name: Option<String>,
    confirm: Option<bool>,
) -> Result<Response, AccountError> {
    let answer = state
        .account
        .run(Command::OpenpgpPut {
            cert,
            name,
            confirm,
        })
        .await?;
    let generation = state.account.generation();
    keys_in_use(state, true).await;
    let configured = state
        .gpg_followed
        .borrow()
        .configured
        .clone()
        .filter(|(at, _)| *at >= generation)
        .map(|(_, configured)| configured);
    Ok(match answer {
        Response::OpenpgpAdded(mut added) => {
            added.configured = configured;
            Response::OpenpgpAdded(added)
        }
        other => other,
    })
}

/// Wait until the keystore serves the account's latest keys (and, with
/// `gpg`, until gpg's keyring holds its certificates), so that a command
/// returns when its keys can be used.
async fn keys_in_use(state: &State, gpg: bool) {
    let generation = state.account.generation();
    let mut applied = state.keystore_applied.clone();
    let _ = applied.wait_for(|g| *g >= generation).await;
    if gpg {
        let mut followed = state.gpg_followed.clone();
        if tokio::time::timeout(
            GPG_IMPORT,
            followed.wait_for(|f| f.generation >= generation),
        )
        .await
        .is_err()
        {
            tracing::warn!("gpg has not taken the new certificate yet");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_ipc::paths::Paths;

    use crate::account::{Account, Settings};
    use crate::service_client::RemoteError;

    /// A daemon's control state for a device with no account, whose
    /// service cannot be reached.
    fn state(dir: &std::path::Path) -> Arc<State> {
        let paths = Paths {
            home: dir.to_owned(),
            runtime_dir: dir.join("run"),
            data_dir: dir.join("data"),
            config_dir: dir.join("config"),
        };
        let settings = Settings {
            paths: paths.clone(),
            keyring: Some("file".into()),
            session_bus: false,
            connector: Arc::new(|url: &str| {
                Err(RemoteError::Unreachable {
                    url: url.to_owned(),
                    detail: "no network in this test".into(),
                })
            }),
        };
        let account = Account::open(settings).expect("opens");
        let (handle, _keys, task) = crate::account::spawn(account, Duration::from_secs(3600));
        tokio::spawn(task);
        let (_, applied) = watch::channel(0);
        let (_, followed) = watch::channel(Followed::default());
        Arc::new(State {
            started: Instant::now(),
            uid: 1000,
            runtime_dir: paths.runtime_dir,
            listeners: Vec::new(),
            stop: Arc::new(Notify::new()),
            account: handle,
            keystore_applied: applied,
            gpg_followed: followed,
            askpass: Askpass::from_env(|_| None),
        })
    }

    async fn exchange(client: &mut UnixStream, request: &Request) -> Response {
        client
            .write_all(&control::encode(request).expect("encodes"))
            .await
            .expect("sent");
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await.expect("a length");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        client.read_exact(&mut body).await.expect("a body");
        serde_json::from_slice(&body).expect("a response")
    }

    #[tokio::test]
    async fn a_control_session_answers_each_request_with_its_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = state(dir.path());
        let (mut client, server) = UnixStream::pair().expect("a pair");
        let serving = tokio::spawn({
            let state = Arc::clone(&state);
            async move { handle(server, &state).await }
        });
        let Response::Status(status) = exchange(&mut client, &Request::Status).await else {
            panic!("a status")
        };
        assert_eq!(status.protocol, control::VERSION);
        let Response::Account(account) = exchange(&mut client, &Request::AccountStatus).await
        else {
            panic!("an account status")
        };
        assert_eq!(account.status, Standing::None);
        for (request, kind) in [
            (Request::SshList, ErrorKind::NoAccount),
            (Request::DeviceList, ErrorKind::NoAccount),
            (
                Request::SshCreate {
                    name: "bad name".into(),
                    algorithm: "ed25519".into(),
                    confirm: false,
                    hosts: Vec::new(),
                },
                ErrorKind::Input,
            ),
            (
                Request::AccountEscrow {
                    shares: 3,
                    quorum: 1,
                },
                ErrorKind::Input,
            ),
            (
                Request::AccountEscrow {
                    shares: 3,
                    quorum: 2,
                },
                ErrorKind::NoAccount,
            ),
            // Nobody to ask in this test: the export is denied.
            (
                Request::CatalogList {
                    store: Catalog::Credential,
                },
                ErrorKind::Denied,
            ),
            (
                Request::CatalogGet {
                    store: Catalog::Credential,
                    name: "git:https://example.com".into(),
                },
                ErrorKind::NoAccount,
            ),
            (
                Request::DeviceConnect {
                    address: "alice@example.com".into(),
                    service: "http://127.0.0.1:9".into(),
                    name: "phone".into(),
                    pin: None,
                    profile: None,
                },
                ErrorKind::Unreachable,
            ),
            (
                Request::OpenpgpCreate {
                    user_id: "Alice <alice@example.com>".into(),
                    algorithm: "ed25519".into(),
                    name: None,
                    confirm: false,
                },
                ErrorKind::NoAccount,
            ),
        ] {
            match exchange(&mut client, &request).await {
                Response::Error { kind: got, message } => assert_eq!(got, kind, "{message}"),
                other => panic!("{request:?}: {other:?}"),
            }
        }
        // A frame that is no request: an error answer, then the close.
        let body = br#"{"request":"steal-keys"}"#;
        client
            .write_all(&u32::try_from(body.len()).expect("fits").to_be_bytes())
            .await
            .expect("sent");
        client.write_all(body).await.expect("sent");
        let mut len = [0u8; 4];
        client.read_exact(&mut len).await.expect("a length");
        let mut answer = vec![0u8; u32::from_be_bytes(len) as usize];
        client.read_exact(&mut answer).await.expect("a body");
        let answer: Response = serde_json::from_slice(&answer).expect("a response");
        assert!(
            matches!(
                answer,
                Response::Error {
                    kind: ErrorKind::Malformed,
                    ..
                }
            ),
            "{answer:?}"
        );
        assert!(serving.await.expect("the task ends").is_err());
    }
}
