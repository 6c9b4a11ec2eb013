//! `mesh-service`: the Mesh service, as a library.
//!
//! It answers the Mesh service protocol ([`mesh_protocol::service`]) over
//! HTTP POST at `/.well-known/mmm/`: Hello, BindAccount, UnbindAccount,
//! Connect, Complete, Status, Download and Transact ([`handler`]). It is
//! untrusted by design: it stores and relays envelopes it cannot open, and
//! clients verify everything it returns. Accounts live in a [`Storage`]
//! ([`storage::RedbStorage`], one file, by default).
//!
//! Every refusal is an HTTP status with a JSON `MeshResponse` body, never a
//! dropped connection; bodies over [`MAX_MESSAGE`] bytes are refused
//! unread.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use mesh_protocol::service::{
    AUTH_HEADER, CAPABILITY_HEADER, MAX_MESSAGE, Reason, SERVICE_PATH, ServiceRequest,
    ServiceResponse, StatusOnly,
};
use tokio::net::TcpListener;

pub mod handler;
pub mod hostile;
pub mod storage;
pub mod tls;

pub use handler::{Limits, Service};
pub use hostile::Hostile;
pub use storage::{RedbStorage, Storage};

/// Serve `service` on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(Arc::new(service)))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serve `service` over TLS on `listener` until `shutdown` completes:
/// each connection's handshake, then HTTP/1.1 or HTTP/2, on a task of its
/// own; a failed handshake drops only that connection.
pub async fn run_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    service: Service,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let app = router(Arc::new(service));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => {
                    tracing::debug!(error = %err, "TLS handshake failed");
                    return;
                }
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder.serve_connection(TokioIo::new(tls), service).await {
                tracing::debug!(error = %err, "connection ended");
            }
        });
    }
}

/// The service's routes: the one protocol path, and JSON 404s elsewhere.
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route(SERVICE_PATH, post(transaction))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                "no such resource; POST to /.well-known/mmm/",
            )
        })
        .with_state(service)
}

/// Dispatch one transaction.
async fn transaction(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Ok(bytes) = to_bytes(body, MAX_MESSAGE).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            Reason::TooLarge,
            &format!("request body over {MAX_MESSAGE} bytes"),
        );
    };
    let request = match serde_json::from_slice::<ServiceRequest>(&bytes) {
        Ok(request) => request,
        Err(err) if err.is_data() => {
            return refuse(
                StatusCode::NOT_FOUND,
                Reason::NotFound,
                "unknown transaction or malformed fields",
            );
        }
        Err(_) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                Reason::Malformed,
                "request body is not a JSON object",
            );
        }
    };
    let auth = match headers.get(AUTH_HEADER).map(|v| v.to_str()) {
        Some(Ok(value)) => Some(value.to_owned()),
        Some(Err(_)) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                Reason::Malformed,
                "malformed mesh-auth header",
            );
        }
        None => None,
    };
    let capability = headers
        .get(CAPABILITY_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let hostile = service.hostile();
    let result = tokio::task::spawn_blocking(move || {
        service.handle(request, auth.as_deref(), capability.as_deref(), &bytes)
    })
    .await;
    match result {
        Ok(Ok(response)) => match hostile {
            Some(hostile) => {
                let json = serde_json::to_vec(&response).unwrap_or_default();
                (
                    StatusCode::OK,
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    hostile.body(json),
                )
                    .into_response()
            }
            None => (StatusCode::OK, Json(response)).into_response(),
        },
        Ok(Err(refusal)) => {
            let status =
                StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(refusal.body())).into_response()
        }
        Err(_) => refuse(
            StatusCode::INTERNAL_SERVER_ERROR,
            Reason::Internal,
            "the transaction failed",
        ),
    }
}

/// A refusal: the HTTP status, and the same status with a reason in JSON.
fn refuse(status: StatusCode, reason: Reason, description: &str) -> Response {
    let body = ServiceResponse::MeshResponse(StatusOnly {
        status: status.as_u16(),
        status_description: description.to_owned(),
        reason: Some(reason),
    });
    (status, Json(body)).into_response()
}
