//! The account layer against the real service handler, in process (its
//! storage in memory): no socket, no HTTP, no other process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mesh_ipc::control::{ConnectionState, Response, Standing};
use mesh_ipc::paths::Paths;
use mesh_protocol::account::{Role, Store};
use mesh_protocol::service::{ServiceRequest, ServiceResponse};
use mesh_service::{Limits, RedbStorage, Service};
use tokio::sync::mpsc;

use super::{Account, AccountError, Command, Handle, KeySnapshot, Settings, SshPut, spawn};
use crate::service_client::{Connector, Posted, RemoteError, Transport};

/// What a test service does with each answer before the client sees it.
type Twist = dyn Fn(ServiceResponse) -> ServiceResponse + Send + Sync;

/// The service's handler, called in process.
struct InProcess {
    service: Arc<Service>,
    /// Hang every call (a stopped service).
    hang: bool,
    twist: Option<Arc<Twist>>,
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("hang", &self.hang)
            .finish()
    }
}

impl Transport for InProcess {
    fn post<'a>(
        &'a self,
        body: Vec<u8>,
        auth: Option<String>,
        capability: Option<String>,
    ) -> Posted<'a> {
        Box::pin(async move {
            if self.hang {
                std::future::pending::<()>().await;
            }
            let malformed = |detail: &str| RemoteError::NotMesh {
                detail: detail.into(),
            };
            let request: ServiceRequest =
                serde_json::from_slice(&body).map_err(|_| malformed("request"))?;
            let (status, answer) =
                match self
                    .service
                    .handle(request, auth.as_deref(), capability.as_deref(), &body)
                {
                    Ok(answer) => (200, answer),
                    Err(refusal) => (refusal.status, refusal.body()),
                };
            let answer = match &self.twist {
                Some(twist) => twist(answer),
                None => answer,
            };
            let json = serde_json::to_vec(&answer).map_err(|_| malformed("answer"))?;
            Ok((status, json))
        })
    }
}

/// One service, shared by the devices of a test.
fn service() -> Arc<Service> {
    let storage = RedbStorage::in_memory().expect("an in-memory store");
    Arc::new(Service::new(Box::new(storage), Limits::default(), None))
}

fn connector(service: &Arc<Service>, hang: bool, twist: Option<Arc<Twist>>) -> Connector {
    let service = Arc::clone(service);
    Arc::new(move |_url: &str| {
        Ok(Arc::new(InProcess {
            service: Arc::clone(&service),
            hang,
            twist: twist.clone(),
        }) as Arc<dyn Transport>)
    })
}

/// A device: its own directory, its account task running.
struct Device {
    _dir: tempfile::TempDir,
    handle: Handle,
    keys: mpsc::UnboundedReceiver<KeySnapshot>,
}

impl Device {
    fn start(connector: Connector) -> Device {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let paths = Paths {
            home: root.to_owned(),
            runtime_dir: root.join("run"),
            data_dir: root.join("data"),
            config_dir: root.join("config"),
        };
        Device::open(dir, &paths, connector)
    }

    fn open(dir: tempfile::TempDir, paths: &Paths, connector: Connector) -> Device {
        let settings = Settings {
            paths: paths.clone(),
            keyring: Some("file".into()),
            session_bus: false,
            connector,
        };
        let account = Account::open(settings).expect("the account opens");
        // Syncs happen when a test asks for them.
        let (handle, keys, task) = spawn(account, Duration::from_secs(3600));
        tokio::spawn(task);
        Device {
            _dir: dir,
            handle,
            keys,
        }
    }

    async fn run(&self, command: Command) -> Result<Response, AccountError> {
        self.handle.run(command).await
    }

    /// The latest key snapshot sent to the keystore.
    fn latest_keys(&mut self) -> KeySnapshot {
        let mut latest = None;
        while let Ok(snapshot) = self.keys.try_recv() {
            latest = Some(snapshot);
        }
        latest.expect("a key snapshot")
    }
}

fn data_dir(device: &Device) -> &Path {
    device._dir.path()
}

async fn create(device: &Device) {
    let created = device
        .run(Command::Create {
            address: "alice@example.com".into(),
            service: "in-process".into(),
            name: "laptop".into(),
        })
        .await
        .expect("the account is created");
    assert!(
        matches!(created, Response::AccountCreated(_)),
        "{created:?}"
    );
}

/// Ask to join alice@example.com as `phone`; the witness code shown.
async fn ask_to_join(phone: &Device) -> String {
    let asked = phone
        .run(Command::Connect {
            address: "alice@example.com".into(),
            service: "in-process".into(),
            name: "phone".into(),
            pin: None,
            profile: None,
        })
        .await
        .expect("asked");
    let Response::Connection(ConnectionState {
        status: Standing::Pending,
        witness: Some(witness),
        ..
    }) = asked
    else {
        panic!("{asked:?}")
    };
    witness
}

fn ed25519_key() -> ssh_key::PrivateKey {
    ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).expect("a key")
}

#[tokio::test]
async fn an_account_keeps_its_catalogs_and_keys_in_its_view() {
    let service = service();
    let mut laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    let view = laptop.handle.view();
    assert_eq!(view.status.status, Standing::Connected);
    assert!(view.status.admin);
    assert_eq!(view.devices.as_ref().expect("devices").len(), 1);

    laptop
        .run(Command::CatalogImport {
            store: Store::Credential,
            entries: vec![("git:https://example.com".into(), "token".into())],
        })
        .await
        .expect("written");
    let view = laptop.handle.view();
    let credential = view.credential.as_ref().expect("readable");
    assert_eq!(credential.get("git:https://example.com"), Some("token"));
    // Only the catalogs hold plain entries.
    let refused = laptop
        .run(Command::CatalogImport {
            store: Store::Device,
            entries: vec![("x".into(), "y".into())],
        })
        .await;
    assert!(
        matches!(refused, Err(AccountError::Input(_))),
        "{refused:?}"
    );

    let key = ed25519_key();
    laptop
        .run(Command::SshPut(Box::new(SshPut {
            name: "work".into(),
            key,
            confirm: true,
            replace: false,
            hosts: Vec::new(),
        })))
        .await
        .expect("put");
    let snapshot = laptop.latest_keys();
    let ssh = snapshot.ssh.as_deref().expect("the SSH keys were read");
    assert_eq!(ssh.len(), 1);
    assert_eq!(ssh[0].name, "work");
    assert!(ssh[0].confirm);
    let rows = laptop.handle.view().ssh.clone().expect("listed");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].algorithm.as_deref(), Some("ssh-ed25519"));
    assert_eq!(laptop.handle.generation(), snapshot.generation);

    // A second identity of the same name is refused, by kind.
    let key = ed25519_key();
    let again = laptop
        .run(Command::SshPut(Box::new(SshPut {
            name: "work".into(),
            key,
            confirm: false,
            replace: false,
            hosts: Vec::new(),
        })))
        .await;
    assert!(matches!(again, Err(AccountError::Exists(_))), "{again:?}");
    assert!(
        data_dir(&laptop)
            .join("data/stores/MMM_Application.dare")
            .is_file()
    );
}

#[tokio::test]
async fn a_device_joins_by_its_witness_code_and_leaves_when_revoked() {
    let service = service();
    let laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    let mut phone = Device::start(connector(&service, false, None));
    let witness = ask_to_join(&phone).await;
    laptop.run(Command::Sync).await.expect("synced");
    let pending = laptop.handle.view().pending.clone().expect("admin");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].witness, witness, "both sides compute one code");
    // A wrong code answers nothing.
    let wrong = laptop
        .run(Command::Answer {
            code: "AAAA-BBBB".into(),
            accept: Some((vec![Role::Device], None)),
        })
        .await;
    assert!(matches!(wrong, Err(AccountError::NotFound(_))), "{wrong:?}");
    laptop
        .run(Command::Answer {
            code: witness,
            accept: Some((vec![Role::Device], None)),
        })
        .await
        .expect("accepted");
    phone.run(Command::ConnectStatus).await.expect("polled");
    let view = phone.handle.view();
    assert_eq!(view.status.status, Standing::Connected);
    assert_eq!(view.status.roles.as_deref(), Some(&[Role::Device][..]));
    // Not an administrator: no pending list, no escrow.
    assert!(matches!(view.pending, Err(AccountError::NotAdmin)));
    let escrow = phone
        .run(Command::Escrow {
            shares: 3,
            quorum: 2,
        })
        .await;
    assert!(matches!(escrow, Err(AccountError::NotAdmin)), "{escrow:?}");

    laptop
        .run(Command::Revoke {
            name: "phone".into(),
        })
        .await
        .expect("revoked");
    let report = phone.run(Command::Sync).await.expect("a report");
    assert!(
        matches!(&report, Response::Synced(r) if !r.ok),
        "{report:?}"
    );
    let view = phone.handle.view();
    assert_eq!(view.status.status, Standing::Revoked);
    assert!(phone.latest_keys().ssh.is_some_and(|k| k.is_empty()));
    let refused = phone.run(Command::Sync).await.expect("a report");
    assert!(matches!(refused, Response::Synced(r) if !r.ok));
}

#[tokio::test(start_paused = true)]
async fn reads_answer_while_the_service_hangs() {
    let service = service();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_owned();
    let paths = Paths {
        home: root.clone(),
        runtime_dir: root.join("run"),
        data_dir: root.join("data"),
        config_dir: root.join("config"),
    };
    {
        let laptop = Device::open(
            tempfile::tempdir().expect("tempdir"),
            &paths,
            connector(&service, false, None),
        );
        create(&laptop).await;
    }
    // The same device again, now with a service that never answers.
    let laptop = Device::open(dir, &paths, connector(&service, true, None));
    let handle = laptop.handle.clone();
    let sync = tokio::spawn(async move { handle.run(Command::Sync).await });
    // The paused clock runs ahead while everything waits: past the point
    // where the view says the service does not answer.
    tokio::time::sleep(super::SLOW_SERVICE * 2).await;
    let view = laptop.handle.view();
    assert_eq!(view.status.status, Standing::Connected);
    assert!(
        view.status.unanswered_since_ms.is_some(),
        "{:?}",
        view.status
    );
    assert!(
        view.status.sync_errors["service"].contains("unreachable"),
        "{:?}",
        view.status
    );
    assert_eq!(view.devices.as_ref().expect("devices").len(), 1);
    assert!(!sync.is_finished(), "the sync still waits for the service");
    sync.abort();
}

#[tokio::test]
async fn a_store_this_device_may_not_read_is_refused_from_the_service() {
    let service = service();
    let laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    // The service offers a device-only phone the administrators' Local
    // spool too.
    let offer_local: Arc<Twist> = Arc::new(|answer| match answer {
        ServiceResponse::StatusResponse(mut status) => {
            if !status.stores.iter().any(|s| s.store == Store::Local) {
                let mut local = status.stores[0].clone();
                local.store = Store::Local;
                status.stores.push(local);
            }
            ServiceResponse::StatusResponse(status)
        }
        other => other,
    });
    let phone = Device::start(connector(&service, false, Some(offer_local)));
    let witness = ask_to_join(&phone).await;
    laptop.run(Command::Sync).await.expect("synced");
    laptop
        .run(Command::Answer {
            code: witness,
            accept: Some((vec![Role::Device], None)),
        })
        .await
        .expect("accepted");
    phone.run(Command::ConnectStatus).await.expect("polled");
    let report = phone.run(Command::Sync).await.expect("a report");
    let Response::Synced(report) = report else {
        panic!("{report:?}")
    };
    assert!(!report.ok);
    assert!(
        report.errors["service"].contains("may not read"),
        "{report:?}"
    );
    assert!(
        !phone
            .handle
            .view()
            .status
            .stores
            .contains_key(&Store::Local)
    );
}

/// Ask to join, and have the administrator accept with `roles`.
async fn join_as(laptop: &Device, phone: &Device, roles: Vec<Role>) {
    let witness = ask_to_join(phone).await;
    laptop.run(Command::Sync).await.expect("synced");
    laptop
        .run(Command::Answer {
            code: witness,
            accept: Some((roles, None)),
        })
        .await
        .expect("accepted");
    phone.run(Command::ConnectStatus).await.expect("polled");
}

/// Write `envelope` to `store` as `account`'s device, past its own
/// checks: what a device of the account running other code can do. The
/// service takes it (the device is in the account).
async fn write_raw(
    account: &mut Account,
    store: Store,
    envelope: mesh_protocol::envelope::Envelope,
) {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use mesh_protocol::service::{StoreUpdate, TransactRequest};
    account.sync().await;
    let (index, apex) = account.replicas.head(store);
    let frames = account
        .replicas
        .stage(store, vec![envelope])
        .iter()
        .map(|b| URL_SAFE_NO_PAD.encode(b))
        .collect();
    let request = TransactRequest {
        account_address: "alice@example.com".into(),
        updates: vec![StoreUpdate {
            store,
            index,
            apex: URL_SAFE_NO_PAD.encode(apex),
            frames,
        }],
        responses: Vec::new(),
    };
    account
        .call(ServiceRequest::Transact(request))
        .await
        .expect("the service takes a frame a device of the account signed");
    account.replicas.commit(store).expect("committed");
    let ledger = account.check_staged(store).expect("it is a valid entry");
    account.settle(store, ledger);
}

#[tokio::test]
async fn a_device_role_device_cannot_weaken_swap_or_plant_keys() {
    use mesh_protocol::application::{
        OPENPGP_MESSAGE_TYPE, OpenpgpEntry, SSH_MESSAGE_TYPE, SshIdentity,
    };
    use mesh_protocol::envelope::Event;
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::SerializeInto as _;
    use ssh_key::LineEnding;

    let service = service();
    let mut laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    laptop
        .run(Command::SshPut(Box::new(SshPut {
            name: "work".into(),
            key: ed25519_key(),
            confirm: true,
            replace: false,
            hosts: Vec::new(),
        })))
        .await
        .expect("the administrator's key");
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths {
        home: phone_dir.path().to_owned(),
        runtime_dir: phone_dir.path().join("run"),
        data_dir: phone_dir.path().join("data"),
        config_dir: phone_dir.path().join("config"),
    };
    let phone = Device::open(
        tempfile::tempdir().expect("tempdir"),
        &paths,
        connector(&service, false, None),
    );
    join_as(&laptop, &phone, vec![Role::Device]).await;
    // A key of its own, asking for confirmation: the phone may.
    let own = ed25519_key();
    phone
        .run(Command::SshPut(Box::new(SshPut {
            name: "own".into(),
            key: own.clone(),
            confirm: true,
            replace: false,
            hosts: Vec::new(),
        })))
        .await
        .expect("a device writes its own keys");
    // Its own client refuses to switch confirmation off ...
    let refused = phone
        .run(Command::SshPut(Box::new(SshPut {
            name: "own".into(),
            key: own.clone(),
            confirm: false,
            replace: true,
            hosts: Vec::new(),
        })))
        .await;
    assert!(
        matches!(refused, Err(AccountError::Forbidden(_))),
        "{refused:?}"
    );

    // ... so the phone runs other code, with its own keys.
    let mut phone_raw = raw_account(&service, paths.clone());
    let app_key = phone_raw
        .store_key(Store::Application)
        .expect("a key")
        .public();
    let identity = |name: &str, key: &ssh_key::PrivateKey, public: String, confirm| SshIdentity {
        name: name.into(),
        public,
        private: key.to_openssh(LineEnding::LF).expect("pem").to_string(),
        confirm,
        hosts: Vec::new(),
    };
    let public = |key: &ssh_key::PrivateKey| key.public_key().to_openssh().expect("public");
    let (other, forged) = (ed25519_key(), ed25519_key());
    let attacks = [
        // Confirmation off on its own key.
        ("ssh/own", identity("own", &own, public(&own), false)),
        // Its key's public half swapped for another key's.
        ("ssh/own", identity("own", &own, public(&other), true)),
        // The administrator's key, replaced, confirmation off.
        (
            "ssh/work",
            identity("work", &forged, public(&forged), false),
        ),
    ];
    for (id, record) in attacks {
        let envelope = phone_raw
            .entry(
                Store::Application,
                id,
                Event::Update,
                SSH_MESSAGE_TYPE,
                Some(&record),
                &phone_raw.activation().expect("active").sign,
                &[app_key],
            )
            .expect("sealed");
        write_raw(&mut phone_raw, Store::Application, envelope).await;
    }
    // A certificate of its own, for every device's gpg keyring.
    let (cert, _) = CertBuilder::general_purpose(Some("Alice <alice@example.com>"))
        .generate()
        .expect("a certificate");
    let armored = |tsk: bool| {
        String::from_utf8(
            if tsk {
                cert.as_tsk().armored().to_vec()
            } else {
                cert.armored().to_vec()
            }
            .expect("armor"),
        )
        .expect("text")
    };
    let planted = OpenpgpEntry {
        name: "alice".into(),
        fingerprint: cert.fingerprint().to_hex(),
        public: armored(false),
        secret: armored(true),
        confirm: false,
    };
    let envelope = phone_raw
        .entry(
            Store::Application,
            "openpgp/alice",
            Event::New,
            OPENPGP_MESSAGE_TYPE,
            Some(&planted),
            &phone_raw.activation().expect("active").sign,
            &[app_key],
        )
        .expect("sealed");
    write_raw(&mut phone_raw, Store::Application, envelope).await;

    // Every reader keeps what the rules allow, and says what it did not apply.
    laptop.run(Command::Sync).await.expect("synced");
    let view = laptop.handle.view();
    let rows = view.ssh.clone().expect("listed");
    let confirm: Vec<(String, bool)> = rows.iter().map(|r| (r.name.clone(), r.confirm)).collect();
    assert_eq!(
        confirm,
        [("own".to_owned(), true), ("work".to_owned(), true)]
    );
    assert!(view.openpgp.as_ref().expect("listed").is_empty());
    assert_eq!(view.status.denied.len(), 4, "{:?}", view.status.denied);
    for (line, why) in view.status.denied.iter().zip([
        "only an administrator switches confirmation off",
        "its public key is not its private key's",
        "a device changes only what it wrote",
        "only an administrator writes OpenPGP keys",
    ]) {
        assert!(line.contains(why), "{line}");
    }
    let snapshot = laptop.latest_keys();
    let ssh = snapshot.ssh.as_deref().expect("read");
    let own_public = public(&own);
    assert!(ssh.iter().all(|k| k.confirm));
    assert!(
        ssh.iter()
            .any(|k| k.public.split_whitespace().nth(1) == own_public.split_whitespace().nth(1))
    );
    assert!(laptop.handle.certificates().borrow().openpgp.is_empty());
}

#[tokio::test]
async fn openpgp_confirmation_is_set_kept_and_switched_only_by_the_administrator() {
    use sequoia_openpgp::cert::CertBuilder;

    let service = service();
    let mut laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    let (cert, _) = CertBuilder::general_purpose(Some("Alice <alice@example.com>"))
        .generate()
        .expect("cert");
    let put = |confirm| Command::OpenpgpPut {
        cert: Box::new(cert.clone()),
        name: None,
        confirm,
    };
    let confirmed = |device: &Device| -> Vec<bool> {
        let view = device.handle.view();
        let rows = view.openpgp.as_ref().expect("listed");
        rows.iter().map(|(row, _)| row.confirm).collect()
    };
    laptop.run(put(Some(true))).await.expect("put");
    assert_eq!(confirmed(&laptop), [true]);
    let snapshot = laptop.latest_keys();
    let served = snapshot.openpgp.as_deref().expect("read");
    assert!(served.iter().all(|e| e.confirm), "{served:?}");
    // Put again without a say (gpg importing the certificate through
    // meshd): the setting stays.
    laptop.run(put(None)).await.expect("put again");
    assert_eq!(confirmed(&laptop), [true]);

    // A device-role device may not switch it off: it writes no OpenPGP
    // entries at all.
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let paths = Paths {
        home: phone_dir.path().to_owned(),
        runtime_dir: phone_dir.path().join("run"),
        data_dir: phone_dir.path().join("data"),
        config_dir: phone_dir.path().join("config"),
    };
    let phone = Device::open(
        tempfile::tempdir().expect("tempdir"),
        &paths,
        connector(&service, false, None),
    );
    join_as(&laptop, &phone, vec![Role::Device]).await;
    phone.run(Command::Sync).await.expect("synced");
    assert_eq!(confirmed(&phone), [true]);
    let off = |name: &str| Command::OpenpgpSet {
        name: name.into(),
        confirm: false,
    };
    let refused = phone.run(off("alice@example.com")).await;
    assert!(
        matches!(refused, Err(AccountError::NotAdmin)),
        "{refused:?}"
    );
    assert_eq!(confirmed(&phone), [true]);

    // The administrator may; a name the account does not have is not
    // found.
    laptop
        .run(off("alice@example.com"))
        .await
        .expect("switched off");
    assert_eq!(confirmed(&laptop), [false]);
    let missing = laptop.run(off("bob@example.com")).await;
    assert!(
        matches!(missing, Err(AccountError::NotFound(_))),
        "{missing:?}"
    );
    phone.run(Command::Sync).await.expect("synced");
    assert_eq!(confirmed(&phone), [false]);
    assert!(phone.handle.view().status.denied.is_empty());
}

/// A second `Account` on a device's directory, outside its task: what
/// the device running other code can do.
fn raw_account(service: &Arc<Service>, paths: Paths) -> Account {
    Account::open(Settings {
        paths,
        keyring: Some("file".into()),
        session_bus: false,
        connector: connector(service, false, None),
    })
    .expect("the device's account")
}

/// A device's own directory, so that a second `Account` can open it.
fn device_paths(dir: &Path) -> Paths {
    Paths {
        home: dir.to_owned(),
        runtime_dir: dir.join("run"),
        data_dir: dir.join("data"),
        config_dir: dir.join("config"),
    }
}

#[tokio::test]
async fn revocation_rotates_the_store_keys() {
    let service = service();
    let laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let phone_paths = device_paths(phone_dir.path());
    let phone = Device::open(
        tempfile::tempdir().expect("tempdir"),
        &phone_paths,
        connector(&service, false, None),
    );
    join_as(&laptop, &phone, vec![Role::Device, Role::Web]).await;
    let tablet = Device::start(connector(&service, false, None));
    let witness = ask_to_join(&tablet).await;
    laptop.run(Command::Sync).await.expect("synced");
    laptop
        .run(Command::Answer {
            code: witness,
            accept: Some((vec![Role::Device, Role::Web], Some("tablet".into()))),
        })
        .await
        .expect("accepted");
    tablet.run(Command::ConnectStatus).await.expect("polled");
    // Every store key the phone holds before it is revoked.
    let phone_raw = raw_account(&service, phone_paths);
    let held: Vec<String> = phone_raw
        .activation()
        .expect("active")
        .store_keys
        .iter()
        .map(|(_, k)| k.public().fingerprint().to_string())
        .collect();
    assert!(!held.is_empty());

    laptop
        .run(Command::Revoke {
            name: "phone".into(),
        })
        .await
        .expect("revoked");
    laptop
        .run(Command::CatalogImport {
            store: Store::Credential,
            entries: vec![("git:https://example.com".into(), "after".into())],
        })
        .await
        .expect("written after the revocation");

    // The new entry is sealed to no key the phone ever held.
    let laptop_raw = raw_account(&service, device_paths(data_dir(&laptop)));
    let written = laptop_raw.live(Store::Credential)["git:https://example.com"].index;
    let frame = laptop_raw
        .replicas
        .frame(Store::Credential, written)
        .expect("the frame");
    assert!(!frame.header.recipients.is_empty());
    for recipient in &frame.header.recipients {
        assert!(!held.contains(&recipient.kid), "sealed to a revoked key");
    }
    assert_eq!(laptop_raw.activation().expect("active").epoch(), 1);

    // The tablet, which remains, was issued the new keys and reads it.
    let synced = tablet.run(Command::Sync).await.expect("synced");
    assert!(matches!(&synced, Response::Synced(r) if r.ok), "{synced:?}");
    let view = tablet.handle.view();
    let credential = view.credential.as_ref().expect("readable");
    assert_eq!(credential.get("git:https://example.com"), Some("after"));
    assert_eq!(view.status.status, Standing::Connected);
}

#[tokio::test]
async fn an_answer_for_another_request_is_not_taken() {
    use std::sync::Mutex;
    let service = service();
    let laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    // The service keeps the administrator's answer to one device ...
    let kept: Arc<Mutex<Option<ServiceResponse>>> = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&kept);
    let keeping: Arc<Twist> = Arc::new(move |answer| {
        if matches!(&answer, ServiceResponse::CompleteResponse(c) if c.enveloped_respond_connection.is_some())
        {
            *keep.lock().expect("lock") = Some(answer.clone());
        }
        answer
    });
    // ... and hands it to another that waits.
    let give = Arc::clone(&kept);
    let replaying: Arc<Twist> = Arc::new(move |answer| match answer {
        ServiceResponse::CompleteResponse(_) => {
            give.lock().expect("lock").clone().unwrap_or(answer)
        }
        other => other,
    });
    let first = Device::start(connector(&service, false, Some(keeping)));
    let second = Device::start(connector(&service, false, Some(replaying)));
    let rejected = ask_to_join(&first).await;
    ask_to_join(&second).await;
    laptop.run(Command::Sync).await.expect("synced");
    laptop
        .run(Command::Answer {
            code: rejected,
            accept: None,
        })
        .await
        .expect("rejected");
    first.run(Command::ConnectStatus).await.expect("polled");
    assert_eq!(first.handle.view().status.status, Standing::Rejected);
    assert!(kept.lock().expect("lock").is_some());
    // The second device is told the first one's answer: not believed.
    let told = second.run(Command::ConnectStatus).await;
    assert!(
        matches!(&told, Err(AccountError::Untrusted { why, .. }) if why.contains("another request")),
        "{told:?}"
    );
    assert_eq!(second.handle.view().status.status, Standing::Pending);
}

#[tokio::test]
async fn only_another_device_answers_an_approval_request() {
    use mesh_protocol::application::{
        ANSWER_MESSAGE_TYPE, APPROVAL_MESSAGE_TYPE, ApprovalAnswer, ApprovalRequest,
    };
    use mesh_protocol::envelope::Event;

    let service = service();
    let laptop = Device::start(connector(&service, false, None));
    create(&laptop).await;
    let phone_dir = tempfile::tempdir().expect("tempdir");
    let paths = device_paths(phone_dir.path());
    let phone = Device::open(
        tempfile::tempdir().expect("tempdir"),
        &paths,
        connector(&service, false, None),
    );
    join_as(&laptop, &phone, vec![Role::Device]).await;
    let question = super::Question {
        operation: "ssh".into(),
        key: "work".into(),
        fingerprint: "SHA256:x".into(),
        host: Some("example.com".into()),
        user: Some("alice".into()),
        program: None,
        expires_in: Duration::from_secs(60),
    };
    let asked = phone
        .run(Command::AskApproval(Box::new(question)))
        .await
        .expect("asked");
    let Response::Approvals { requests } = asked else {
        panic!("{asked:?}")
    };
    let id = requests[0].id.clone();

    // The phone, running other code, answers its own request, and files
    // a request under the laptop's name.
    let mut phone_raw = raw_account(&service, paths.clone());
    let app_key = phone_raw
        .store_key(Store::Application)
        .expect("a key")
        .public();
    let phone_udf = phone_raw.own_udf().expect("a device");
    let digest = phone_raw
        .open_live(Store::Application)
        .expect("opened")
        .into_iter()
        .find(|(name, _)| *name == id)
        .map(|(_, v)| super::approval::digest_text(&v.digest))
        .expect("the request");
    let own_yes = ApprovalAnswer {
        request: id.clone(),
        digest,
        device: phone_udf,
        approved: true,
    };
    let answer_id = ApprovalAnswer::unique_id(&id).expect("an answer id");
    let envelope = phone_raw
        .entry(
            Store::Application,
            &answer_id,
            Event::New,
            ANSWER_MESSAGE_TYPE,
            Some(&own_yes),
            &phone_raw.activation().expect("active").sign,
            &[app_key],
        )
        .expect("sealed");
    write_raw(&mut phone_raw, Store::Application, envelope).await;
    laptop.run(Command::Sync).await.expect("synced");
    let laptop_udf = laptop
        .handle
        .view()
        .devices
        .clone()
        .expect("listed")
        .into_iter()
        .find(|d| d.this)
        .expect("the laptop")
        .device;
    let posing = ApprovalRequest {
        device: laptop_udf.clone(),
        operation: "ssh".into(),
        key: "work".into(),
        fingerprint: "SHA256:x".into(),
        host: None,
        user: None,
        program: None,
        asked_ms: 1,
        expires_ms: u64::MAX,
    };
    let envelope = phone_raw
        .entry(
            Store::Application,
            &format!("approval/{laptop_udf}/posing"),
            Event::New,
            APPROVAL_MESSAGE_TYPE,
            Some(&posing),
            &phone_raw.activation().expect("active").sign,
            &[app_key],
        )
        .expect("sealed");
    write_raw(&mut phone_raw, Store::Application, envelope).await;

    // Neither applies: the phone's request is still unanswered, and the
    // laptop is asked about the phone's request only.
    phone.run(Command::Sync).await.expect("synced");
    laptop.run(Command::Sync).await.expect("synced");
    let view = laptop.handle.view();
    let approvals = view.approvals.clone().expect("read");
    assert_eq!(
        approvals
            .waiting
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()]
    );
    let denied = &view.status.denied;
    assert_eq!(denied.len(), 2, "{denied:?}");
    assert!(
        denied[0].contains("only another device answers"),
        "{denied:?}"
    );
    assert!(denied[1].contains("only under its own name"), "{denied:?}");
    assert!(
        phone
            .handle
            .view()
            .approvals
            .clone()
            .expect("read")
            .answered
            .is_empty()
    );
    // The phone may not answer through its client either.
    let own = phone
        .run(Command::AnswerApproval {
            id: id.clone(),
            approved: true,
        })
        .await;
    assert!(matches!(own, Err(AccountError::Forbidden(_))), "{own:?}");

    // The laptop's no reaches the phone.
    laptop
        .run(Command::AnswerApproval {
            id: id.clone(),
            approved: false,
        })
        .await
        .expect("answered");
    phone.run(Command::Sync).await.expect("synced");
    let answered = phone.handle.view().approvals.clone().expect("read");
    assert_eq!(answered.answered.get(&id), Some(&false));
    // Withdrawn: the laptop is asked no more.
    phone
        .run(Command::WithdrawApproval { id: id.clone() })
        .await
        .expect("withdrawn");
    laptop.run(Command::Sync).await.expect("synced");
    assert!(
        laptop
            .handle
            .view()
            .approvals
            .clone()
            .expect("read")
            .waiting
            .is_empty()
    );
}
