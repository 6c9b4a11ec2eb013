//! `mesh-service`: the Mesh service, as a library.
//!
//! It answers the Mesh service protocol ([`mesh_protocol::service`]) over
//! HTTP POST at `/.well-known/mmm/`: Hello, BindAccount, UnbindAccount,
//! Connect, Complete, Status, Download and Transact ([`handler`]). It is
//! untrusted by design: it stores and relays envelopes it cannot open, and
//! clients verify everything it returns. Accounts live in a [`Storage`]
//! ([`storage::RedbStorage`], one file, by default).
//!
//! Every refusal of a request is an HTTP status with a JSON `MeshResponse`
//! body, never a dropped connection; bodies over [`MAX_MESSAGE`] bytes are
//! refused unread. Connections are bounded ([`Connections`]): how many at
//! once, and how long a handshake and a request's header may take; the
//! accept loop outlives any `accept` error.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_protocol::service::{
    AUTH_HEADER, CAPABILITY_HEADER, MAX_MESSAGE, Reason, SERVICE_PATH, ServiceRequest,
    ServiceResponse, StatusOnly,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;

pub mod handler;
pub mod hostile;
pub mod storage;
pub mod tls;

pub use handler::{Limits, Service};
pub use hostile::Hostile;
pub use storage::{RedbStorage, Storage};

/// How long the accept loop waits after `accept` fails (EMFILE, ENFILE,
/// ECONNABORTED, ENOBUFS ...) before it tries again: out of descriptors,
/// trying at once would only spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the service allows each connection: how many at once, and how
/// long a client may take before it has said anything useful.
#[derive(Debug, Clone, Copy)]
pub struct Connections {
    /// Most connections served at once. One accepted over this is closed
    /// at once, unread.
    pub max: usize,
    /// Time a client has to complete its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a client has to send a request's whole header, counted from
    /// when the service starts waiting for it: an idle connection, new or
    /// kept alive, is closed after it.
    pub header_timeout: Duration,
}

impl Default for Connections {
    fn default() -> Connections {
        Connections {
            max: 512,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(20),
        }
    }
}

/// Where connections come from: a listening TCP socket, or a stand-in in
/// tests. `accept` must be cancel-safe (a connection is not lost when
/// the future is dropped unfinished), as [`TcpListener::accept`] is.
pub trait Listener: Send + 'static {
    /// A connection.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection and its peer's address.
    fn accept(&mut self) -> impl Future<Output = io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;

    fn accept(&mut self) -> impl Future<Output = io::Result<(TcpStream, SocketAddr)>> + Send {
        TcpListener::accept(self)
    }
}

/// Serve `service` over HTTP/1.1 on `listener` until `shutdown`
/// completes.
pub async fn run(
    listener: impl Listener,
    service: Service,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve(listener, None, service, connections, shutdown).await;
}

/// Serve `service` over TLS and HTTP/1.1 on `listener` until `shutdown`
/// completes. A failed or slow handshake drops only its connection.
pub async fn run_tls(
    listener: impl Listener,
    acceptor: tokio_rustls::TlsAcceptor,
    service: Service,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    serve(listener, Some(acceptor), service, connections, shutdown).await;
}

/// The accept loop: each connection a task in a `JoinSet` owned here (so
/// they end with it), at most `connections.max` at once. It returns only
/// at `shutdown`: a failed `accept` costs one connection and a short
/// pause, never the service.
async fn serve(
    mut listener: impl Listener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    service: Service,
    connections: Connections,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(Arc::new(service));
    let limit = Arc::new(Semaphore::new(connections.max));
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    // Under a flood, one warning when trouble starts, then debug lines
    // until it ends: the log is not a second thing to flood.
    let (mut failing, mut full) = (false, false);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(_) = tasks.join_next() => continue,
            () = &mut shutdown => return,
        };
        let (io, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                if failing {
                    tracing::debug!(error = %err, "accept failed again");
                } else {
                    tracing::warn!(error = %err, "accept failed; pausing before each next try");
                    failing = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut shutdown => return,
                }
            }
        };
        failing = false;
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            if full {
                tracing::debug!(%peer, "closing a connection over the cap");
            } else {
                tracing::warn!(
                    max = connections.max,
                    "at the connection cap; closing new ones"
                );
                full = true;
            }
            continue;
        };
        full = false;
        let span = tracing::debug_span!("connection", %peer);
        tasks.spawn(connection(io, permit, tls.clone(), app.clone(), connections).instrument(span));
    }
}

/// One connection: the TLS handshake if any (bounded in time), then
/// HTTP/1.1 with a header-read timeout. HTTP/2 is not offered: hyper's
/// HTTP/2 server has no timeout for a client that connects and then says
/// nothing, and a Mesh client sends one request at a time anyway.
async fn connection<S>(
    io: S,
    permit: OwnedSemaphorePermit,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    connections: Connections,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match tls {
        None => http(Admitted::new(io, permit), app, connections).await,
        Some(acceptor) => {
            match tokio::time::timeout(connections.handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(Admitted::new(tls, permit), app, connections).await,
                Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn http<S>(io: Admitted<S>, app: Router, connections: Connections)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(connections.header_timeout);
    let service = hyper_util::service::TowerToHyperService::new(app);
    if let Err(err) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %err, "connection ended");
    }
}

/// A connection holding its place under [`Connections::max`]. The place
/// is given back as soon as the service starts closing the connection
/// (shutdown or drop), before the peer can see it closed: a client that
/// saw the close finds the place free.
struct Admitted<S> {
    permit: Option<OwnedSemaphorePermit>,
    io: S,
}

impl<S> Admitted<S> {
    fn new(io: S, permit: OwnedSemaphorePermit) -> Admitted<S> {
        Admitted {
            permit: Some(permit),
            io,
        }
    }
}

impl<S> Drop for Admitted<S> {
    fn drop(&mut self) {
        // Before `io` is dropped (and closed), as fields drop after this.
        self.permit.take();
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.permit.take();
        Pin::new(&mut self.io).poll_shutdown(cx)
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
        last_time: None,
    });
    (status, Json(body)).into_response()
}
