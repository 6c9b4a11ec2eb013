//! The client of the Mesh service: one JSON POST per transaction, signed
//! by the device ([`mesh_protocol::service::Auth`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_protocol::keys::PrivateKey;
use mesh_protocol::service::{
    AUTH_HEADER, Auth, CAPABILITY_HEADER, SERVICE_PATH, ServiceRequest, ServiceResponse,
    auth_message,
};

/// Why a call to the service failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteError {
    /// The service answered with a refusal.
    #[error("the service refused ({status} {reason}): {description}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine reason (`DeviceRevoked`, `Conflict` ...).
        reason: String,
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
}

/// A service, for one account.
#[derive(Debug)]
pub struct Remote {
    http: reqwest::Client,
    url: String,
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
    /// A client of `service` for `account`.
    pub fn new(service: &str, account: &str) -> Result<Remote, RemoteError> {
        // TLS through rustls with ring, the one provider we build; a
        // provider set before (by us) is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let unreachable = |detail: String| RemoteError::Unreachable {
            url: service.to_owned(),
            detail,
        };
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
        // A service with its own CA (e.g. `mesh-service --self-signed`):
        // trust its certificate besides the platform's roots.
        if let Some(path) = std::env::var_os("MESH_SERVICE_CA") {
            let pem = std::fs::read(&path).map_err(|e| {
                unreachable(format!(
                    "cannot read MESH_SERVICE_CA {}: {e}",
                    path.to_string_lossy()
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
        Ok(Remote {
            http,
            url: endpoint(service),
            account: account.to_owned(),
            last_time: AtomicU64::new(0),
            capability: std::sync::Mutex::new(None),
        })
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
        let unreachable = |detail: String| RemoteError::Unreachable {
            url: self.url.clone(),
            detail,
        };
        let body = serde_json::to_vec(request).map_err(|e| unreachable(e.to_string()))?;
        let mut post = self
            .http
            .post(&self.url)
            .header("content-type", "application/json");
        if let Some((device, key)) = signer {
            let time = self.next_time();
            let signature = key
                .sign(&auth_message(&self.account, device, time, &body))
                .map_err(|_| unreachable("cannot sign the request".into()))?;
            let auth = Auth {
                device: device.to_owned(),
                time,
                signature,
            };
            post = post.header(AUTH_HEADER, auth.to_header());
        }
        let capability = self.capability.lock().ok().and_then(|c| c.clone());
        if let Some(capability) = capability {
            post = post.header(CAPABILITY_HEADER, capability);
        }
        let response = post.body(body).send().await.map_err(|e| {
            // The cause (certificate not trusted, refused ...) is in the chain.
            let mut detail = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                detail = format!("{detail}: {cause}");
                source = cause.source();
            }
            unreachable(detail)
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let answer: ServiceResponse = serde_json::from_slice(&bytes)
            .map_err(|_| unreachable(format!("not a Mesh answer (HTTP {status})")))?;
        match answer {
            ServiceResponse::MeshResponse(refusal) if !status.is_success() => {
                Err(RemoteError::Refused {
                    status: refusal.status,
                    reason: refusal.reason.unwrap_or_default(),
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
        let remote = Remote::new("http://127.0.0.1:1", "a@b").expect("a client");
        let mut last = 0;
        for _ in 0..1000 {
            let t = remote.next_time();
            assert!(t > last);
            last = t;
        }
    }
}
