//! `mesh-service`: parse arguments, set up logging, bind, then serve with
//! [`mesh_service::run`] until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// The Mesh service: stores and relays a Mesh's encrypted catalogs. It
/// never sees a private key or a plaintext catalog entry.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8088")]
    listen: SocketAddr,
    /// The store file (one redb file; made if missing).
    #[arg(long, default_value = "mesh-service.redb")]
    data: PathBuf,
    /// Most entries one account may hold.
    #[arg(long, default_value_t = 1_000_000)]
    max_entries: u64,
    /// Most connection requests waiting for an answer in one account; one
    /// more is refused.
    #[arg(long, default_value_t = mesh_service::Limits::default().pending_per_account)]
    max_pending: u64,
    /// Most connections served at once; one more is closed unread.
    #[arg(
        long,
        default_value_t = mesh_service::Connections::default().max,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
    )]
    max_connections: usize,
    /// Seconds a client has to complete its TLS handshake.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = mesh_service::Connections::default().handshake_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    handshake_timeout: u64,
    /// Seconds a client has to send a request's header (and the longest a
    /// connection may sit idle).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = mesh_service::Connections::default().header_timeout.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    header_timeout: u64,
    /// The TLS certificate chain (PEM); with --tls-key, serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve HTTPS with a new self-signed certificate, written (PEM) to this
    /// file for clients to trust with MESH_SERVICE_CA.
    #[arg(long, value_name = "CERT_OUT", conflicts_with = "tls_cert")]
    self_signed: Option<PathBuf>,
    /// Misbehave on purpose, to test that clients catch it.
    #[arg(long, value_enum, hide = true)]
    hostile: Option<mesh_service::Hostile>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("MESH_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mesh-service: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let storage = mesh_service::RedbStorage::open(&args.data)
            .with_context(|| format!("cannot open {}", args.data.display()))?;
        let limits = mesh_service::Limits {
            entries_per_account: args.max_entries,
            pending_per_account: args.max_pending,
            ..mesh_service::Limits::default()
        };
        let connections = mesh_service::Connections {
            max: args.max_connections,
            handshake_timeout: Duration::from_secs(args.handshake_timeout),
            header_timeout: Duration::from_secs(args.header_timeout),
        };
        let service = mesh_service::Service::new(Box::new(storage), limits, args.hostile);
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let acceptor = match (&args.tls_cert, &args.tls_key, &args.self_signed) {
            (Some(cert), Some(key), _) => Some(mesh_service::tls::from_files(cert, key)?),
            (_, _, Some(out)) => {
                let (acceptor, pem) = mesh_service::tls::self_signed()?;
                std::fs::write(out, pem)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                Some(acceptor)
            }
            _ => None,
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        // The one line a script or test reads to find the service.
        match acceptor {
            Some(acceptor) => {
                println!("mesh-service listening on https://{addr}/.well-known/mmm/");
                mesh_service::run_tls(listener, acceptor, service, connections, shutdown).await;
            }
            None => {
                println!("mesh-service listening on http://{addr}/.well-known/mmm/");
                mesh_service::run(listener, service, connections, shutdown).await;
            }
        }
        Ok(())
    })
}
