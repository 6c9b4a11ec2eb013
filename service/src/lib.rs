//! `mesh-service`: the Mesh service, as a library.
//!
//! It answers the Mesh service protocol ([`mesh_protocol::service`]) over
//! HTTP POST at `/.well-known/mmm/`. The service is untrusted by design: it
//! will store and relay only envelopes it cannot open, and clients verify
//! everything it returns. This build answers Hello; accounts, connection
//! and catalog transactions, the embedded store and TLS join it here.
//!
//! Every refusal is an HTTP status with a JSON `MeshResponse` body, never a
//! dropped connection; bodies over [`MAX_MESSAGE`] bytes are refused
//! unread.

use std::future::Future;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use mesh_protocol::service::{
    HelloResponse, MAX_MESSAGE, SERVICE_PATH, ServiceRequest, ServiceResponse, StatusOnly,
};
use tokio::net::TcpListener;

/// Serve the Mesh service on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The service's routes: the one protocol path, and JSON 404s elsewhere.
pub fn router() -> Router {
    Router::new()
        .route(SERVICE_PATH, post(transaction))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "no such resource; POST to /.well-known/mmm/",
            )
        })
}

/// Dispatch one transaction.
async fn transaction(body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, MAX_MESSAGE).await else {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body over {MAX_MESSAGE} bytes"),
        );
    };
    let request = match serde_json::from_slice::<ServiceRequest>(&bytes) {
        Ok(request) => request,
        Err(err) if err.is_data() => {
            return refuse(
                StatusCode::NOT_FOUND,
                "unknown transaction or malformed fields",
            );
        }
        Err(_) => return refuse(StatusCode::BAD_REQUEST, "request body is not a JSON object"),
    };
    match request {
        ServiceRequest::Hello(_) => {
            tracing::debug!("hello");
            let hello = ServiceResponse::MeshHelloResponse(HelloResponse::current());
            (StatusCode::OK, Json(hello)).into_response()
        }
    }
}

/// A refusal: the HTTP status, and the same status with a reason in JSON.
fn refuse(status: StatusCode, reason: &str) -> Response {
    let body = ServiceResponse::MeshResponse(StatusOnly {
        status: status.as_u16(),
        status_description: reason.to_owned(),
    });
    (status, Json(body)).into_response()
}
