//! The service over real sockets: the accept loop outlives accept errors
//! and bounds connections (how many, how long a handshake and a header may
//! take), and the transactions that guard an account against a revoked
//! device, times far ahead and a flood of connection requests. Requests
//! are plain HTTP/1.1 written by hand, so that a test can also stop
//! halfway through one.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mesh_protocol::account::{
    self, AccessCapability, AccountKeys, DeviceKeys, KeyData, RequestConnection, Role, Store,
    message_type,
};
use mesh_protocol::envelope::{Envelope, Event};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::sequence::{self, ContainerType, Sequence};
use mesh_protocol::service::{
    AUTH_HEADER, AccountRequest, Auth, BindRequest, CAPABILITY_HEADER, ConnectRequest,
    HelloRequest, MAX_TIME_AHEAD_MS, PostedResponse, Reason, ServiceRequest, ServiceResponse,
    StatusOnly, StoreUpdate, TransactRequest, auth_message,
};
use mesh_service::{Connections, Limits, Listener, RedbStorage, Service};
use rand_core::{OsRng, RngCore as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Long enough that a test fails rather than hangs when the service keeps
/// a connection open that it should have closed; never reached otherwise.
const HANG: Duration = Duration::from_secs(60);

/// Connections that stay as long as the test needs them.
fn patient(max: usize) -> Connections {
    Connections {
        max,
        handshake_timeout: Duration::from_secs(3600),
        header_timeout: Duration::from_secs(3600),
    }
}

fn service(limits: Limits) -> Service {
    let storage = RedbStorage::in_memory().expect("an in-memory store");
    Service::new(Box::new(storage), limits, None)
}

/// A service on loopback, over plain HTTP.
async fn start(limits: Limits, connections: Connections) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(mesh_service::run(
        listener,
        service(limits),
        connections,
        std::future::pending(),
    ));
    addr
}

/// The bytes of one POST of `body` with `headers`, closing after it.
fn post_bytes(body: &[u8], headers: &[(&str, String)]) -> Vec<u8> {
    let mut head = format!(
        "POST /.well-known/mmm/ HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Read everything the service sends until it closes: empty if it closed
/// (or reset) the connection without answering.
async fn answer_of(mut stream: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut answer = Vec::new();
    match tokio::time::timeout(HANG, stream.read_to_end(&mut answer)).await {
        Ok(Ok(_)) => answer,
        Ok(Err(_)) => Vec::new(),
        Err(_) => panic!("the service kept the connection open"),
    }
}

/// An HTTP answer's status and its `ServiceResponse`.
fn parse(answer: &[u8]) -> (u16, ServiceResponse) {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = std::str::from_utf8(&answer[..split]).expect("an ASCII head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = serde_json::from_slice(&answer[split + 4..]).expect("a Mesh answer");
    (status, body)
}

async fn exchange(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    body: &[u8],
    headers: &[(&str, String)],
) -> (u16, ServiceResponse) {
    let mut stream = stream;
    stream
        .write_all(&post_bytes(body, headers))
        .await
        .expect("sent");
    parse(&answer_of(stream).await)
}

async fn hello(addr: SocketAddr) -> (u16, ServiceResponse) {
    let stream = TcpStream::connect(addr).await.expect("connected");
    let body = serde_json::to_vec(&ServiceRequest::Hello(HelloRequest {})).expect("encodes");
    exchange(stream, &body, &[]).await
}

fn assert_hello(answer: (u16, ServiceResponse)) {
    assert_eq!(answer.0, 200);
    assert!(
        matches!(answer.1, ServiceResponse::MeshHelloResponse(_)),
        "{:?}",
        answer.1
    );
}

// --- Connections.

/// A listener whose first accepts fail as a listener out of descriptors
/// or with an aborted connection does.
struct Failing {
    errors: VecDeque<io::Error>,
    inner: TcpListener,
}

impl Listener for Failing {
    type Io = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        match self.errors.pop_front() {
            Some(err) => Err(err),
            None => self.inner.accept().await,
        }
    }
}

#[tokio::test]
async fn accept_errors_cost_a_pause_and_not_the_service() {
    let inner = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = inner.local_addr().expect("an address");
    let errors = [
        io::Error::from_raw_os_error(24), // EMFILE
        io::Error::from_raw_os_error(23), // ENFILE
        io::Error::from(io::ErrorKind::ConnectionAborted),
        io::Error::from(io::ErrorKind::OutOfMemory), // ENOBUFS, ENOMEM
    ];
    let listener = Failing {
        errors: errors.into(),
        inner,
    };
    let served = tokio::spawn(mesh_service::run(
        listener,
        service(Limits::default()),
        patient(8),
        std::future::pending(),
    ));
    assert_hello(hello(addr).await);
    assert!(!served.is_finished());
}

/// The real binary with 64 descriptors: 120 idle connections use them
/// all, so `accept` fails (EMFILE) while more wait; the service pauses,
/// closes the idle ones as their header time runs out (one second), takes
/// the next, and answers at the end.
#[test]
fn out_of_descriptors_the_service_pauses_and_goes_on() {
    use std::io::{BufRead as _, Read as _, Write as _};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_mesh-service"))
        .args(["--listen", "127.0.0.1:0", "--header-timeout", "1", "--data"])
        .arg(dir.path().join("service.redb"))
        .env("MESH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("mesh-service started");
    let mut line = String::new();
    io::BufReader::new(child.stdout.take().expect("its stdout"))
        .read_line(&mut line)
        .expect("its first line");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("mesh-service listening on http://")
        .and_then(|rest| rest.strip_suffix("/.well-known/mmm/"))
        .and_then(|addr| addr.parse().ok())
        .expect("the address it listens on");
    let idle: Vec<std::net::TcpStream> = (0..120)
        .map(|_| std::net::TcpStream::connect(addr).expect("connected"))
        .collect();
    for mut stream in idle {
        stream.set_read_timeout(Some(HANG)).expect("a timeout");
        let mut byte = [0u8; 1];
        if let Err(err) = stream.read(&mut byte) {
            assert!(
                !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ),
                "the service kept an idle connection open"
            );
        }
    }
    assert!(
        child.try_wait().expect("its state").is_none(),
        "the service exited"
    );
    let mut stream = std::net::TcpStream::connect(addr).expect("connected");
    let body = serde_json::to_vec(&ServiceRequest::Hello(HelloRequest {})).expect("encodes");
    stream.write_all(&post_bytes(&body, &[])).expect("sent");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("an answer");
    assert_hello(parse(&answer));
    child.kill().expect("stopped");
    child.wait().expect("reaped");
}

#[tokio::test]
async fn connections_over_the_cap_are_closed_and_the_service_answers_after() {
    let addr = start(Limits::default(), patient(2)).await;
    // Two idle connections take both places (accepted in order, before
    // the third).
    let mut first = TcpStream::connect(addr).await.expect("connected");
    let _second = TcpStream::connect(addr).await.expect("connected");
    let third = TcpStream::connect(addr).await.expect("connected");
    let body = serde_json::to_vec(&ServiceRequest::Hello(HelloRequest {})).expect("encodes");
    let mut third = third;
    // The write may fail once the service has closed the connection.
    let _ = third.write_all(&post_bytes(&body, &[])).await;
    assert!(
        answer_of(third).await.is_empty(),
        "a connection over the cap was served"
    );
    // The first one leaves; once it sees the service close, its place is
    // free and a new client is served.
    first.shutdown().await.expect("shut down");
    assert!(answer_of(first).await.is_empty());
    assert_hello(hello(addr).await);
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_header_is_closed() {
    let connections = Connections {
        header_timeout: Duration::from_millis(200),
        ..patient(8)
    };
    let addr = start(Limits::default(), connections).await;
    let silent = TcpStream::connect(addr).await.expect("connected");
    let mut slow = TcpStream::connect(addr).await.expect("connected");
    slow.write_all(b"POST /.well-known/mmm/ HTTP/1.1\r\nHost: test\r\n")
        .await
        .expect("sent");
    let (silent, slow) = tokio::join!(answer_of(silent), answer_of(slow));
    assert!(silent.is_empty(), "{silent:?}");
    assert!(!slow.starts_with(b"HTTP/1.1 2"), "{slow:?}");
    // Whoever is quick is served.
    assert_hello(hello(addr).await);
}

#[tokio::test]
async fn tls_needs_a_handshake_in_time_and_then_serves_http_1_1() {
    let (acceptor, pem) = mesh_service::tls::self_signed().expect("a certificate");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let addr = listener.local_addr().expect("an address");
    let connections = Connections {
        handshake_timeout: Duration::from_millis(200),
        ..patient(8)
    };
    tokio::spawn(mesh_service::run_tls(
        listener,
        acceptor,
        service(Limits::default()),
        connections,
        std::future::pending(),
    ));
    // A client that never starts its handshake is let go.
    let silent = TcpStream::connect(addr).await.expect("connected");
    assert!(answer_of(silent).await.is_empty());
    // One that does is served, over HTTP/1.1.
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM"))
        .expect("a root");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connected");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("a handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let body = serde_json::to_vec(&ServiceRequest::Hello(HelloRequest {})).expect("encodes");
    assert_hello(exchange(tls, &body, &[]).await);
}

// --- Transactions.

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A format-2 entry of the test account (`mesh_protocol::entry`).
fn seal_entry<T: serde::Serialize>(
    store: Store,
    record: Option<&T>,
    message_type: &str,
    unique_id: &str,
    event: Event,
    signer: &PrivateKey,
    recipients: &[mesh_protocol::keys::PublicKey],
) -> Result<Envelope, account::AccountError> {
    let head = mesh_protocol::entry::Head {
        format: mesh_protocol::entry::FORMAT,
        account: "alice@example.com".into(),
        store,
        unique_id: unique_id.to_owned(),
        event,
        message_type: message_type.to_owned(),
        previous: None,
    };
    Ok(mesh_protocol::entry::seal(
        &mut OsRng, &head, record, signer, recipients,
    )?)
}

/// A device of the test account: its UDF, the key its requests are
/// signed with, and the Access entry an administrator signed for it.
struct Device {
    udf: String,
    key: PrivateKey,
    access: Envelope,
    time: u64,
}

impl Device {
    fn new(keys: &AccountKeys, name: &str, roles: &[Role]) -> Device {
        let device = DeviceKeys::generate(&mut OsRng).expect("device keys");
        let capability = AccessCapability {
            device_udf: device.udf().to_string(),
            name: name.to_owned(),
            roles: roles.to_vec(),
            signature: KeyData::of(&device.sign.public()),
        };
        let access = seal_entry(
            Store::Access,
            Some(&capability),
            message_type::ACCESS_CAPABILITY,
            &capability.device_udf,
            Event::New,
            &keys.admin,
            &[],
        )
        .expect("an Access entry");
        Device {
            udf: capability.device_udf,
            key: device.sign,
            access,
            time: now_ms(),
        }
    }

    /// The `mesh-auth` header for `body`, at `time`.
    fn auth(&self, address: &str, time: u64, body: &[u8]) -> String {
        let signature = self
            .key
            .sign(&auth_message(address, &self.udf, time, body))
            .expect("signed");
        Auth {
            device: self.udf.clone(),
            time,
            signature,
        }
        .to_header()
    }

    /// The next time this device would use.
    fn tick(&mut self) -> u64 {
        self.time += 1;
        self.time
    }
}

/// An account on a service: its keys, its first (administrator) device,
/// and a copy of its Access store to write after.
struct Account {
    addr: SocketAddr,
    address: String,
    keys: AccountKeys,
    admin: Device,
    access: Sequence,
}

impl Account {
    async fn bind(limits: Limits) -> Account {
        Account::bind_at(start(limits, patient(64)).await).await
    }

    /// Bind a new account, always at the same address, on the service at
    /// `addr`.
    async fn bind_at(addr: SocketAddr) -> Account {
        let address = "alice@example.com".to_owned();
        let keys = AccountKeys::generate(&mut OsRng).expect("account keys");
        let profile = keys.profile(&mut OsRng, &address).expect("a profile");
        let mut admin = Device::new(&keys, "laptop", &[Role::Admin]);
        let device_frame = seal_entry(
            Store::Device,
            Some(&serde_json::Map::new()),
            message_type::CATALOGED_DEVICE,
            &admin.udf,
            Event::New,
            &keys.admin,
            &[keys.store_key(Store::Device, 0).expect("a key").public()],
        )
        .expect("a Device entry");
        let request = ServiceRequest::BindAccount(BindRequest {
            account_address: address.clone(),
            enveloped_profile_user: profile.to_json(),
            access_frame: admin.access.to_json(),
            device_frame: device_frame.to_json(),
        });
        let time = admin.tick();
        let mut access = Sequence::new(ContainerType::Merkle);
        access.append(admin.access.clone());
        let account = Account {
            addr,
            address,
            keys,
            admin,
            access,
        };
        let (status, answer) = account.send(&account.admin, time, &request, None).await;
        assert_eq!(status, 200, "{answer:?}");
        account
    }

    /// Post `request` signed by `device` at `time`, with a capability.
    async fn send(
        &self,
        device: &Device,
        time: u64,
        request: &ServiceRequest,
        capability: Option<&Envelope>,
    ) -> (u16, ServiceResponse) {
        let body = serde_json::to_vec(request).expect("encodes");
        let mut headers = vec![(AUTH_HEADER, device.auth(&self.address, time, &body))];
        if let Some(access) = capability {
            headers.push((CAPABILITY_HEADER, URL_SAFE_NO_PAD.encode(access.to_json())));
        }
        let stream = TcpStream::connect(self.addr).await.expect("connected");
        exchange(stream, &body, &headers).await
    }

    fn status_request(&self) -> ServiceRequest {
        ServiceRequest::Status(mesh_protocol::service::StatusRequest {
            account_address: self.address.clone(),
        })
    }

    /// A Transact appending `entries` to the Access store (as the copy
    /// here says it stands) and posting `responses`.
    fn transact(
        &mut self,
        entries: Vec<Envelope>,
        responses: Vec<PostedResponse>,
    ) -> ServiceRequest {
        let (index, apex) = (
            self.access.len(),
            URL_SAFE_NO_PAD.encode(self.access.apex()),
        );
        let mut frames = Vec::new();
        for entry in entries {
            self.access.append(entry);
            let raw = self.access.raw_frames().last().expect("a frame");
            frames.push(URL_SAFE_NO_PAD.encode(sequence::encode_frame(raw)));
        }
        let updates = if frames.is_empty() {
            Vec::new()
        } else {
            vec![StoreUpdate {
                store: Store::Access,
                index,
                apex,
                frames,
            }]
        };
        ServiceRequest::Transact(TransactRequest {
            account_address: self.address.clone(),
            updates,
            responses,
        })
    }

    /// The administrator writes `entries` to Access; it must succeed.
    async fn admin_writes(&mut self, entries: Vec<Envelope>, responses: Vec<PostedResponse>) {
        let request = self.transact(entries, responses);
        let time = self.admin.tick();
        let (status, answer) = self.send(&self.admin, time, &request, None).await;
        assert_eq!(status, 200, "{answer:?}");
    }

    /// A device's request to connect, signed by its profile key.
    fn connect_request(&self) -> ServiceRequest {
        let device = DeviceKeys::generate(&mut OsRng).expect("device keys");
        let profile = device.profile(&mut OsRng, "phone").expect("a profile");
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let request = RequestConnection {
            account_address: self.address.clone(),
            enveloped_profile_device: profile.to_json(),
            client_nonce: URL_SAFE_NO_PAD.encode(nonce),
            pin_id: None,
            pin_witness: None,
        };
        let envelope = account::sign_record(
            &mut OsRng,
            &request,
            message_type::REQUEST_CONNECTION,
            &device.profile,
            &[],
        )
        .expect("signed");
        ServiceRequest::Connect(ConnectRequest {
            account_address: self.address.clone(),
            enveloped_request_connection: envelope.to_json(),
        })
    }

    /// Post an unauthenticated request.
    async fn post(&self, request: &ServiceRequest) -> (u16, ServiceResponse) {
        let body = serde_json::to_vec(request).expect("encodes");
        let stream = TcpStream::connect(self.addr).await.expect("connected");
        exchange(stream, &body, &[]).await
    }
}

fn refusal(answer: &(u16, ServiceResponse)) -> &StatusOnly {
    match &answer.1 {
        ServiceResponse::MeshResponse(refusal) if refusal.reason.is_some() => refusal,
        other => panic!("not a refusal: {other:?}"),
    }
}

#[tokio::test]
async fn a_revoked_device_is_refused_whatever_capability_it_brings() {
    let mut account = Account::bind(Limits::default()).await;
    let mut phone = Device::new(&account.keys, "phone", &[Role::Device]);
    account
        .admin_writes(vec![phone.access.clone()], Vec::new())
        .await;
    let status = account.status_request();
    let time = phone.tick();
    let served = account.send(&phone, time, &status, None).await;
    assert_eq!(served.0, 200, "{:?}", served.1);

    // The administrator revokes the phone.
    let delete = seal_entry::<()>(
        Store::Access,
        None,
        message_type::ACCESS_CAPABILITY,
        &phone.udf,
        Event::Delete,
        &account.keys.admin,
        &[],
    )
    .expect("a Delete entry");
    account.admin_writes(vec![delete], Vec::new()).await;

    // Its old Access entry, administrator-signed, brought as a capability:
    // still revoked, and nothing served.
    let time = phone.tick();
    let answer = account
        .send(&phone, time, &status, Some(&phone.access))
        .await;
    assert_eq!(answer.0, 410, "{:?}", answer.1);
    assert_eq!(refusal(&answer).reason, Some(Reason::DeviceRevoked));
    // Nor does writing it back into Access bring the phone back.
    let again = account.transact(vec![phone.access.clone()], Vec::new());
    let time = phone.tick();
    let answer = account.send(&phone, time, &again, None).await;
    assert_eq!(answer.0, 410, "{:?}", answer.1);
    assert_eq!(refusal(&answer).reason, Some(Reason::DeviceRevoked));
    // Without one, as before.
    let time = phone.tick();
    let answer = account.send(&phone, time, &status, None).await;
    assert_eq!(refusal(&answer).reason, Some(Reason::DeviceRevoked));
}

#[tokio::test]
async fn a_time_far_ahead_is_refused_unrecorded_and_refusals_name_the_time_held() {
    let account = Account::bind(Limits::default()).await;
    let status = account.status_request();
    let held = account.admin.time;
    let admin = &account.admin;

    let ahead = now_ms() + MAX_TIME_AHEAD_MS + 60_000;
    let answer = account.send(admin, ahead, &status, None).await;
    assert_eq!(answer.0, 401, "{:?}", answer.1);
    assert_eq!(refusal(&answer).reason, Some(Reason::TimeAhead));
    assert_eq!(refusal(&answer).last_time, Some(held));

    // Not recorded: a time before it is still good ...
    let answer = account.send(admin, held + 1, &status, None).await;
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    // ... and a replay is told which time the service holds.
    let answer = account.send(admin, held, &status, None).await;
    assert_eq!(refusal(&answer).reason, Some(Reason::Replayed));
    assert_eq!(refusal(&answer).last_time, Some(held + 1));

    // Someone without the device's key learns nothing.
    let mut other = Device::new(&account.keys, "other", &[Role::Admin]);
    other.udf = account.admin.udf.clone();
    let answer = account.send(&other, held, &status, None).await;
    assert_eq!(refusal(&answer).reason, Some(Reason::NotAuthorized));
    assert_eq!(refusal(&answer).last_time, None);
}

#[tokio::test]
async fn a_connect_flood_fills_the_waiting_requests_and_not_the_account() {
    // Two entries after binding; room for three requests, one write and
    // one more request (without the cap on waiting requests, five of the
    // flood would fit and the write would not).
    let limits = Limits {
        entries_per_account: 7,
        pending_per_account: 3,
        ..Limits::default()
    };
    let mut account = Account::bind(limits).await;
    let request = account.connect_request();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let answer = account.post(&request).await;
        let ServiceResponse::ConnectResponse(connect) = answer.1 else {
            panic!("not connected: {:?}", answer.1);
        };
        ids.push(connect.response_id);
    }
    // The same signed request again, and a new one: the account is full
    // of waiting requests.
    for request in [request, account.connect_request()] {
        let answer = account.post(&request).await;
        assert_eq!(answer.0, 429, "{:?}", answer.1);
        assert_eq!(refusal(&answer).reason, Some(Reason::TooLarge));
    }
    // The account's own writes still fit, and an answer makes room.
    let phone = Device::new(&account.keys, "phone", &[Role::Device]);
    let answered = PostedResponse {
        response_id: ids[0].clone(),
        envelope: "{}".into(),
    };
    account
        .admin_writes(vec![phone.access.clone()], vec![answered])
        .await;
    let answer = account.post(&account.connect_request()).await;
    assert!(
        matches!(answer.1, ServiceResponse::ConnectResponse(_)),
        "{:?}",
        answer.1
    );
    // Unbinding takes the waiting requests with it: an account bound
    // again at the address starts with none.
    let unbind = ServiceRequest::UnbindAccount(AccountRequest {
        account_address: account.address.clone(),
    });
    let time = account.admin.tick();
    let answer = account.send(&account.admin, time, &unbind, None).await;
    assert_eq!(answer.0, 200, "{:?}", answer.1);
    let account = Account::bind_at(account.addr).await;
    for _ in 0..3 {
        let answer = account.post(&account.connect_request()).await;
        assert!(
            matches!(answer.1, ServiceResponse::ConnectResponse(_)),
            "{:?}",
            answer.1
        );
    }
}
