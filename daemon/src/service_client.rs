//! The client of the Mesh service: one JSON POST per transaction, signed
//! by the device ([`mesh_protocol::service::Auth`]).
//!
//! Each signed request carries a time later than the last one the service
//! recorded for the device. The client keeps the last time it used, and
//! a reservation ahead of it in [`TIME_FILE`], so that times keep rising
//! across restarts whatever the clock does; when the service still calls
//! a time replayed (or too far ahead of its clock), the client continues
//! after the time the refusal names and sends that request once more.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_protocol::keys::PrivateKey;
use mesh_protocol::service::{
    AUTH_HEADER, Auth, CAPABILITY_HEADER, Reason, SERVICE_PATH, ServiceRequest, ServiceResponse,
    StatusOnly, auth_message,
};

/// The file, in the data directory, holding the request-time reservation
/// (decimal milliseconds): every time this device has used is at most
/// this, so after a restart it continues from there.
pub const TIME_FILE: &str = "request-time";

/// How far past a time in use a reservation reaches: the file is written
/// once per this span of request times, not once per request, and a
/// restart moves the times at most this far ahead of the clock (well
/// inside the service's [`MAX_TIME_AHEAD_MS`](mesh_protocol::service::MAX_TIME_AHEAD_MS)).
const RESERVE_MS: u64 = 60_000;

/// How far the client moves on when the service says a time was replayed
/// without saying which time it holds.
const REPLAY_STEP_MS: u64 = 60_000;

/// The most a refusal's `LastTime` may be ahead of this device's clock
/// for the client to continue from it: an honest service holds no time
/// beyond its clock plus [`MAX_TIME_AHEAD_MS`](mesh_protocol::service::MAX_TIME_AHEAD_MS), so a time far beyond that
/// is a service's lie that would push this device's times out of reach.
const MAX_HINT_AHEAD_MS: u64 = 60 * 60 * 1000;

/// Why a call to the service failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The service answered with a refusal.
    #[error("the service refused ({status}): {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine reason, if the service gave one.
        reason: Option<Reason>,
        /// The service's line.
        description: String,
    },
    /// The service could not be reached or answered nonsense.
    #[error("cannot reach the service at {url}: {detail}")]
    Unreachable {
        /// Where.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// What answered is not a Mesh service (a wrong URL, a proxy's error
    /// page), or its answer does not parse.
    #[error("not a Mesh answer from the service: {detail}")]
    NotMesh {
        /// What is wrong.
        detail: String,
    },
    /// The request could not be made here (encoding, signing).
    #[error("cannot make the request: {detail}")]
    Local {
        /// What failed.
        detail: String,
    },
}

/// What a [`Transport`] answers, in time: the HTTP status and body.
pub type Posted<'a> =
    Pin<Box<dyn Future<Output = Result<(u16, Vec<u8>), RemoteError>> + Send + 'a>>;

/// How requests reach a service: one POST of a transaction's JSON, with
/// its headers; the answer's HTTP status and body. HTTP(S) in the daemon
/// ([`Http`]); the service's own handler, in process, in tests.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Post `body` with the `mesh-auth` and `mesh-capability` headers, if
    /// any.
    fn post<'a>(
        &'a self,
        body: Vec<u8>,
        auth: Option<String>,
        capability: Option<String>,
    ) -> Posted<'a>;
}

/// Makes the transport for a service URL.
pub type Connector =
    Arc<dyn Fn(&str) -> Result<Arc<dyn Transport>, RemoteError> + Send + Sync + 'static>;

/// The largest answer read from a service, in bytes: a Download answer
/// carries at most [`mesh_protocol::service::MAX_DOWNLOAD`] bytes of
/// frames, base64url-encoded, plus a little JSON.
const MAX_ANSWER: usize = mesh_protocol::service::MAX_DOWNLOAD / 3 * 4 + 64 * 1024;

/// How long an idle connection to the service is kept for the next
/// request: below the service's default header timeout.
const IDLE_CONNECTION: Duration = Duration::from_secs(10);

/// HTTP(S) to a service, through reqwest with rustls (ring).
///
/// The reqwest client is made at the first call, not here: making it
/// loads and parses the platform's root certificates (some 150, a few
/// milliseconds), which meshd's start-up does not need before its first
/// answer.
#[derive(Debug)]
pub struct Http {
    http: OnceLock<reqwest::Client>,
    /// `MESH_SERVICE_CA`'s certificates, trusted besides the platform's.
    ca: Option<Vec<reqwest::Certificate>>,
    timeout: Duration,
    url: String,
}

impl Http {
    /// A client of `service`, trusting `ca` (PEM certificates) besides the
    /// platform's roots when given; a call fails after `timeout`. A `ca`
    /// that cannot be read is an error here; the platform's roots are read
    /// at the first call.
    pub fn new(service: &str, ca: Option<&Path>, timeout: Duration) -> Result<Http, RemoteError> {
        let unreachable = |detail: String| RemoteError::Unreachable {
            url: service.to_owned(),
            detail,
        };
        // A service with its own CA (e.g. `mesh-service --self-signed`).
        let ca = match ca {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    unreachable(format!(
                        "cannot read MESH_SERVICE_CA {}: {e}",
                        path.display()
                    ))
                })?;
                Some(reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    unreachable(format!("MESH_SERVICE_CA is not PEM certificates: {e}"))
                })?)
            }
            None => None,
        };
        Ok(Http {
            http: OnceLock::new(),
            ca,
            timeout,
            url: endpoint(service),
        })
    }

    /// The reqwest client, made at the first call.
    fn client(&self) -> Result<&reqwest::Client, RemoteError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        // TLS through rustls with ring, the one provider we build; a
        // provider set before (by us) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // Idle connections are dropped here before the service closes them
        // (its header timeout, 20 s by default), so that a request is not
        // sent on a connection the service is closing.
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .pool_idle_timeout(IDLE_CONNECTION);
        if let Some(certs) = &self.ca {
            builder = builder.tls_certs_merge(certs.iter().cloned());
        }
        let http = builder.build().map_err(|err| RemoteError::Unreachable {
            url: self.url.clone(),
            detail: err.to_string(),
        })?;
        // Two first calls at once both make one; either is kept.
        Ok(self.http.get_or_init(|| http))
    }

    /// A [`Connector`] making [`Http`] clients that trust `ca` and give
    /// up after `timeout`.
    pub fn connector(ca: Option<PathBuf>, timeout: Duration) -> Connector {
        Arc::new(move |service: &str| {
            Ok(Arc::new(Http::new(service, ca.as_deref(), timeout)?) as Arc<dyn Transport>)
        })
    }
}

impl Transport for Http {
    fn post<'a>(
        &'a self,
        body: Vec<u8>,
        auth: Option<String>,
        capability: Option<String>,
    ) -> Posted<'a> {
        Box::pin(async move {
            let unreachable = |detail: String| RemoteError::Unreachable {
                url: self.url.clone(),
                detail,
            };
            let mut post = self
                .client()?
                .post(&self.url)
                .header("content-type", "application/json");
            if let Some(auth) = auth {
                post = post.header(AUTH_HEADER, auth);
            }
            if let Some(capability) = capability {
                post = post.header(CAPABILITY_HEADER, capability);
            }
            let mut response = post.body(body).send().await.map_err(|e| {
                // The cause (certificate not trusted, refused ...) is in the chain.
                let mut detail = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    detail = format!("{detail}: {cause}");
                    source = cause.source();
                }
                unreachable(detail)
            })?;
            let status = response.status().as_u16();
            // Read at most MAX_ANSWER bytes, whatever the service announces.
            let mut bytes = Vec::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| unreachable(e.to_string()))?
            {
                if bytes.len() + chunk.len() > MAX_ANSWER {
                    return Err(unreachable(format!(
                        "an answer over {MAX_ANSWER} bytes: refusing it"
                    )));
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok((status, bytes))
        })
    }
}

/// A service, for one account.
#[derive(Debug)]
pub struct Remote {
    transport: Arc<dyn Transport>,
    account: String,
    clock: Mutex<RequestClock>,
    /// A `mesh-capability` to send with every request, while set.
    capability: Mutex<Option<String>>,
}

/// The times of signed requests: the last one used and the reservation
/// kept in [`TIME_FILE`] (when there is a file).
///
/// The reservation is written before a time beyond it is used, so a
/// restart never reuses a time. It is not fsynced: a write lost to a
/// power cut costs one `Replayed` refusal, which the client recovers
/// from. The lock is held over that write (a few bytes, once per
/// [`RESERVE_MS`] of request times): the only ones who wait are other
/// requests, which need the reservation anyway.
#[derive(Debug)]
struct RequestClock {
    last: u64,
    reserved: u64,
    file: Option<PathBuf>,
}

impl RequestClock {
    /// The next time to use: now, and always later than the last.
    fn next(&mut self, now: u64) -> Result<u64, RemoteError> {
        let next = self
            .last
            .checked_add(1)
            .map(|after| after.max(now))
            .ok_or_else(|| RemoteError::Local {
                detail: "no request time is left".into(),
            })?;
        if next > self.reserved {
            let reserve = next.saturating_add(RESERVE_MS);
            if let Some(path) = &self.file {
                write_time(path, reserve).map_err(|e| RemoteError::Local {
                    detail: format!("cannot keep the request time in {}: {e}", path.display()),
                })?;
            }
            self.reserved = reserve;
        }
        self.last = next;
        Ok(next)
    }

    /// Take a refusal of a request's time into account; say whether the
    /// request is worth sending again with a new time.
    fn refused(&mut self, reason: Reason, held: Option<u64>, now: u64) -> bool {
        let held = held.filter(|t| *t <= now.saturating_add(MAX_HINT_AHEAD_MS));
        match (reason, held) {
            // Continue after the time the service holds.
            (Reason::Replayed, Some(held)) => self.last = self.last.max(held),
            // Without it, move on past the clock and the last time.
            (Reason::Replayed, None) => {
                self.last = self.last.max(now).saturating_add(REPLAY_STEP_MS);
            }
            // Our time ran ahead of the service's clock and was not
            // recorded: go back to just after the time it holds, and let
            // the next reservation be written afresh.
            (Reason::TimeAhead, Some(held)) => {
                self.last = held;
                self.reserved = self.reserved.min(held);
            }
            _ => return false,
        }
        true
    }
}

/// Read a reservation; a missing file is no reservation.
fn read_time(path: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a time in ms")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Write a reservation: a new file renamed over the old one.
fn write_time(path: &Path, time: u64) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(".request-time.tmp");
    std::fs::write(&tmp, format!("{time}\n"))?;
    std::fs::rename(tmp, path)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What the service answered: an answer, or a refusal with its fields.
enum Answer {
    Served(ServiceResponse),
    Refused(StatusOnly),
}

/// The protocol URL of a service given as `http://host:port` (or with
/// the path already).
pub fn endpoint(service: &str) -> String {
    let base = service.trim_end_matches('/');
    if base.ends_with(SERVICE_PATH.trim_end_matches('/')) {
        format!("{base}/")
    } else {
        format!("{base}{SERVICE_PATH}")
    }
}

impl Remote {
    /// A client of the service behind `transport`, for `account`, that
    /// keeps its request times in memory only.
    pub fn new(transport: Arc<dyn Transport>, account: &str) -> Remote {
        Remote::with_clock(transport, account, 0, None)
    }

    /// A client that keeps its request times in `file` (the data
    /// directory's [`TIME_FILE`]) and continues after the time found
    /// there. A file that cannot be read is started over, with a warning:
    /// the service's refusal then says where to continue.
    pub fn with_time_file(transport: Arc<dyn Transport>, account: &str, file: &Path) -> Remote {
        let reserved = read_time(file).unwrap_or_else(|err| {
            tracing::warn!(file = %file.display(), error = %err, "request time unreadable; starting over");
            0
        });
        Remote::with_clock(transport, account, reserved, Some(file.to_owned()))
    }

    fn with_clock(
        transport: Arc<dyn Transport>,
        account: &str,
        reserved: u64,
        file: Option<PathBuf>,
    ) -> Remote {
        Remote {
            transport,
            account: account.to_owned(),
            clock: Mutex::new(RequestClock {
                last: reserved,
                reserved,
                file,
            }),
            capability: Mutex::new(None),
        }
    }

    /// Send this administrator-signed Access entry (its JSON) with every
    /// request, or stop sending one.
    pub fn set_capability(&self, access: Option<&str>) {
        use base64::Engine as _;
        let value =
            access.map(|json| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json));
        if let Ok(mut slot) = self.capability.lock() {
            *slot = value;
        }
    }

    /// The account this client works for.
    pub fn account(&self) -> &str {
        &self.account
    }

    fn clock(&self) -> Result<std::sync::MutexGuard<'_, RequestClock>, RemoteError> {
        self.clock.lock().map_err(|_| RemoteError::Local {
            detail: "the request clock is lost".into(),
        })
    }

    /// A time for a request: now in milliseconds, and always later than
    /// the last one this client used.
    fn next_time(&self) -> Result<u64, RemoteError> {
        self.clock()?.next(now_ms())
    }

    /// Send one transaction, signed by `signer` (the device's UDF and key)
    /// when given. A signed request the service refuses for its time
    /// (`Replayed`, `TimeAhead`) is sent once more with a time after the
    /// one the service holds.
    pub async fn call(
        &self,
        request: &ServiceRequest,
        signer: Option<(&str, &PrivateKey)>,
    ) -> Result<ServiceResponse, RemoteError> {
        let body = serde_json::to_vec(request).map_err(|e| RemoteError::Local {
            detail: e.to_string(),
        })?;
        let mut answer = self.send(&body, signer).await?;
        if let (Answer::Refused(refusal), Some(_)) = (&answer, signer) {
            let retry = match refusal.reason {
                Some(reason @ (Reason::Replayed | Reason::TimeAhead)) => {
                    self.clock()?.refused(reason, refusal.last_time, now_ms())
                }
                _ => false,
            };
            if retry {
                tracing::info!(reason = ?refusal.reason, "request time refused; sending again after the service's");
                answer = self.send(&body, signer).await?;
            }
        }
        match answer {
            Answer::Served(answer) => Ok(answer),
            Answer::Refused(refusal) => Err(RemoteError::Refused {
                status: refusal.status,
                reason: refusal.reason,
                description: refusal.status_description,
            }),
        }
    }

    /// Sign `body` with a new time (when there is a signer) and post it.
    async fn send(
        &self,
        body: &[u8],
        signer: Option<(&str, &PrivateKey)>,
    ) -> Result<Answer, RemoteError> {
        let local = |detail: String| RemoteError::Local { detail };
        let auth = match signer {
            Some((device, key)) => {
                let time = self.next_time()?;
                let signature = key
                    .sign(&auth_message(&self.account, device, time, body))
                    .map_err(|_| local("cannot sign the request".into()))?;
                Some(
                    Auth {
                        device: device.to_owned(),
                        time,
                        signature,
                    }
                    .to_header(),
                )
            }
            None => None,
        };
        let capability = self.capability.lock().ok().and_then(|c| c.clone());
        let (status, bytes) = self.transport.post(body.to_vec(), auth, capability).await?;
        let answer: ServiceResponse =
            serde_json::from_slice(&bytes).map_err(|_| RemoteError::NotMesh {
                detail: format!("HTTP {status}"),
            })?;
        match answer {
            ServiceResponse::MeshResponse(refusal) if !(200..300).contains(&status) => {
                Ok(Answer::Refused(refusal))
            }
            answer => Ok(Answer::Served(answer)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("http://127.0.0.1:80"),
            "http://127.0.0.1:80/.well-known/mmm/"
        );
        assert_eq!(
            endpoint("http://h/.well-known/mmm/"),
            "http://h/.well-known/mmm/"
        );
        assert_eq!(
            endpoint("http://h/.well-known/mmm"),
            "http://h/.well-known/mmm/"
        );
    }

    /// A service that keeps one device's last time as the real one does:
    /// a time not after it is `Replayed`, one over five minutes ahead of
    /// the clock `TimeAhead`, both naming the time held (or not, when
    /// `hint` is off); anything else is served and recorded.
    #[derive(Debug)]
    struct Clocked {
        held: Mutex<u64>,
        hint: bool,
        times: Mutex<Vec<u64>>,
    }

    impl Clocked {
        fn holding(held: u64, hint: bool) -> Arc<Clocked> {
            Arc::new(Clocked {
                held: Mutex::new(held),
                hint,
                times: Mutex::new(Vec::new()),
            })
        }

        fn times(&self) -> Vec<u64> {
            self.times.lock().expect("times").clone()
        }
    }

    impl Transport for Clocked {
        fn post<'a>(
            &'a self,
            _body: Vec<u8>,
            auth: Option<String>,
            _capability: Option<String>,
        ) -> Posted<'a> {
            Box::pin(async move {
                let time = auth
                    .as_deref()
                    .and_then(Auth::parse)
                    .expect("a signed request")
                    .time;
                self.times.lock().expect("times").push(time);
                let mut held = self.held.lock().expect("held");
                let refused = if time <= *held {
                    Some(Reason::Replayed)
                } else if time > now_ms() + mesh_protocol::service::MAX_TIME_AHEAD_MS {
                    Some(Reason::TimeAhead)
                } else {
                    None
                };
                let (status, answer) = match refused {
                    Some(reason) => (
                        401,
                        ServiceResponse::MeshResponse(StatusOnly {
                            status: 401,
                            status_description: "refused".into(),
                            reason: Some(reason),
                            last_time: self.hint.then_some(*held),
                        }),
                    ),
                    None => {
                        *held = time;
                        (
                            200,
                            ServiceResponse::MeshHelloResponse(
                                mesh_protocol::service::HelloResponse::current(),
                            ),
                        )
                    }
                };
                Ok((status, serde_json::to_vec(&answer).expect("encodes")))
            })
        }
    }

    fn device_key() -> PrivateKey {
        mesh_protocol::account::DeviceKeys::generate(&mut rand_core::OsRng)
            .expect("device keys")
            .sign
    }

    fn status() -> ServiceRequest {
        ServiceRequest::Status(mesh_protocol::service::StatusRequest {
            account_address: "a@b".into(),
        })
    }

    #[tokio::test]
    async fn a_replayed_time_is_continued_after_the_services_and_sent_once_more() {
        // The service holds a time two minutes ahead of this clock (the
        // time file was lost); the client starts from nothing.
        let held = now_ms() + 120_000;
        let service = Clocked::holding(held, true);
        let remote = Remote::new(service.clone(), "a@b");
        let key = device_key();
        remote
            .call(&status(), Some(("dev", &key)))
            .await
            .expect("served on the second try");
        let times = service.times();
        assert_eq!(times.len(), 2, "{times:?}");
        assert!(times[0] <= held && times[1] > held, "{times:?}");
        // And the next request needs no second try.
        remote
            .call(&status(), Some(("dev", &key)))
            .await
            .expect("served");
        assert_eq!(service.times().len(), 3);
    }

    #[tokio::test]
    async fn a_time_that_ran_ahead_is_taken_back_to_the_services() {
        // This device once ran a day ahead and kept that time; the service
        // holds a time of a minute ago.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join(TIME_FILE);
        write_time(&file, now_ms() + 86_400_000).expect("written");
        let held = now_ms() - 60_000;
        let service = Clocked::holding(held, true);
        let remote = Remote::with_time_file(service.clone(), "a@b", &file);
        let key = device_key();
        remote
            .call(&status(), Some(("dev", &key)))
            .await
            .expect("served on the second try");
        let times = service.times();
        assert_eq!(times.len(), 2, "{times:?}");
        assert!(times[1] > held && times[1] < times[0], "{times:?}");
        // The file now reserves from the accepted time, not the day ahead.
        let kept = read_time(&file).expect("readable");
        assert!(kept >= times[1] && kept <= times[1] + RESERVE_MS, "{kept}");
    }

    #[tokio::test]
    async fn a_time_refusal_is_retried_once_and_no_more() {
        // A service that names a time past any this client may reach
        // (over the bound it believes) keeps refusing.
        let service = Clocked::holding(u64::MAX - 1, true);
        let remote = Remote::new(service.clone(), "a@b");
        let key = device_key();
        let err = remote
            .call(&status(), Some(("dev", &key)))
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err,
                RemoteError::Refused {
                    reason: Some(Reason::Replayed),
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(service.times().len(), 2);
    }

    #[tokio::test]
    async fn without_the_services_time_a_replayed_client_moves_on() {
        let held = now_ms() + 30_000;
        let service = Clocked::holding(held, false);
        let remote = Remote::new(service.clone(), "a@b");
        let key = device_key();
        remote
            .call(&status(), Some(("dev", &key)))
            .await
            .expect("served on the second try");
        let times = service.times();
        assert_eq!(times.len(), 2, "{times:?}");
        assert!(times[1] > held, "{times:?}");
    }

    #[test]
    fn request_times_survive_a_restart_whatever_the_clock_does() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("data").join(TIME_FILE);
        let http = Arc::new(
            Http::new("http://127.0.0.1:1", None, Duration::from_secs(1)).expect("a client"),
        );
        let before = Remote::with_time_file(http.clone(), "a@b", &file);
        let mut clock = before.clock().expect("clock");
        let used = clock.next(5_000_000).expect("a time");
        assert_eq!(used, 5_000_000);
        // The file reserves past the time used.
        assert_eq!(read_time(&file).expect("readable"), 5_000_000 + RESERVE_MS);
        let later = clock.next(5_000_000 + RESERVE_MS + 1).expect("a time");
        drop(clock);
        drop(before);
        // After a restart with the clock gone back, times still rise.
        let after = Remote::with_time_file(http, "a@b", &file);
        let next = after.clock().expect("clock").next(1_000).expect("a time");
        assert!(next > later, "{next} after {later}");
    }

    #[test]
    fn a_services_time_far_ahead_of_the_clock_is_not_believed() {
        let mut clock = RequestClock {
            last: 0,
            reserved: 0,
            file: None,
        };
        let now = 10_000_000;
        assert!(clock.refused(Reason::Replayed, Some(now + 10 * MAX_HINT_AHEAD_MS), now));
        assert_eq!(clock.last, now + REPLAY_STEP_MS);
        assert!(!clock.refused(Reason::TimeAhead, None, now));
        assert!(!clock.refused(Reason::NotAuthorized, Some(now), now));
    }

    #[test]
    fn times_always_increase() {
        let http = Http::new("http://127.0.0.1:1", None, Duration::from_secs(1)).expect("a client");
        let remote = Remote::new(Arc::new(http), "a@b");
        let mut last = 0;
        for _ in 0..1000 {
            let t = remote.next_time().expect("a time");
            assert!(t > last);
            last = t;
        }
    }
}
