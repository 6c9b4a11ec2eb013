//! The client of the Mesh service: one JSON POST per transaction, signed
//! by the device ([`mesh_protocol::service::Auth`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_protocol::keys::PrivateKey;
use mesh_protocol::service::{
    AUTH_HEADER, Auth, CAPABILITY_HEADER, Reason, SERVICE_PATH, ServiceRequest, ServiceResponse,
    auth_message,
};

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

/// HTTP(S) to a service, through reqwest with rustls (ring).
#[derive(Debug)]
pub struct Http {
    http: reqwest::Client,
    url: String,
}

impl Http {
    /// A client of `service`, trusting `ca` (PEM certificates) besides the
    /// platform's roots when given; a call fails after `timeout`.
    pub fn new(service: &str, ca: Option<&Path>, timeout: Duration) -> Result<Http, RemoteError> {
        // TLS through rustls with ring, the one provider we build; a
        // provider set before (by us) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let unreachable = |detail: String| RemoteError::Unreachable {
            url: service.to_owned(),
            detail,
        };
        let mut builder = reqwest::Client::builder().timeout(timeout);
        // A service with its own CA (e.g. `mesh-service --self-signed`).
        if let Some(path) = ca {
            let pem = std::fs::read(path).map_err(|e| {
                unreachable(format!(
                    "cannot read MESH_SERVICE_CA {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                unreachable(format!("MESH_SERVICE_CA is not PEM certificates: {e}"))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|err| unreachable(err.to_string()))?;
        Ok(Http {
            http,
            url: endpoint(service),
        })
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
                .http
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
    last_time: AtomicU64,
    /// A `mesh-capability` to send with every request, while set.
    capability: std::sync::Mutex<Option<String>>,
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
    /// A client of the service behind `transport`, for `account`.
    pub fn new(transport: Arc<dyn Transport>, account: &str) -> Remote {
        Remote {
            transport,
            account: account.to_owned(),
            last_time: AtomicU64::new(0),
            capability: std::sync::Mutex::new(None),
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

    /// A time for a request: now in milliseconds, and always later than
    /// the last one this client used.
    fn next_time(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut last = self.last_time.load(Ordering::SeqCst);
        loop {
            let next = now.max(last + 1);
            match self
                .last_time
                .compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }

    /// Send one transaction, signed by `signer` (the device's UDF and key)
    /// when given.
    pub async fn call(
        &self,
        request: &ServiceRequest,
        signer: Option<(&str, &PrivateKey)>,
    ) -> Result<ServiceResponse, RemoteError> {
        let local = |detail: String| RemoteError::Local { detail };
        let body = serde_json::to_vec(request).map_err(|e| local(e.to_string()))?;
        let auth = match signer {
            Some((device, key)) => {
                let time = self.next_time();
                let signature = key
                    .sign(&auth_message(&self.account, device, time, &body))
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
        let (status, bytes) = self.transport.post(body, auth, capability).await?;
        let answer: ServiceResponse =
            serde_json::from_slice(&bytes).map_err(|_| RemoteError::NotMesh {
                detail: format!("HTTP {status}"),
            })?;
        match answer {
            ServiceResponse::MeshResponse(refusal) if !(200..300).contains(&status) => {
                Err(RemoteError::Refused {
                    status: refusal.status,
                    reason: refusal.reason,
                    description: refusal.status_description,
                })
            }
            answer => Ok(answer),
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

    #[test]
    fn times_always_increase() {
        let http = Http::new("http://127.0.0.1:1", None, Duration::from_secs(1)).expect("a client");
        let remote = Remote::new(Arc::new(http), "a@b");
        let mut last = 0;
        for _ in 0..1000 {
            let t = remote.next_time();
            assert!(t > last);
            last = t;
        }
    }
}
