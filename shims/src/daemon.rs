//! Talk to `meshd` over its control socket, start it, stop it. Every
//! connection is checked first ([`mesh_ipc::trust`]).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use mesh_ipc::control::{self, DaemonStatus, ErrorKind, FrameError, Request, Response};
use mesh_ipc::paths::Paths;
use mesh_ipc::trust::{self, TrustError};

/// How long [`start`] waits for a new daemon to answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a request may wait for the daemon's answer: longer than the
/// daemon gives the user to confirm an export (60 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(75);

/// Why `meshd` could not be reached, started or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Nothing answers on the control socket.
    #[error("meshd is not running (nothing answers on {})", .0.display())]
    NotRunning(PathBuf),
    /// The daemon closed the connection without an answer: it stopped
    /// (or died) with the request. Whether the request was done is not
    /// known, so it is not sent again.
    #[error("meshd closed the connection without answering")]
    NoAnswer,
    /// The daemon refused the request.
    #[error("meshd refused: {message}")]
    Refused {
        /// What kind of refusal.
        kind: ErrorKind,
        /// Its one line.
        message: String,
    },
    /// The daemon answered something that does not fit the request.
    #[error("meshd gave an unexpected answer")]
    Unexpected,
    /// The exchange failed on the wire.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// `meshd` could not be started, or died at once.
    #[error("cannot start meshd: {0}")]
    Start(String),
    /// The runtime directory, or the process on the control socket, is
    /// not to be trusted: nothing was sent.
    #[error("refusing to talk to meshd: {0}")]
    Untrusted(TrustError),
    /// The daemon did not stop or start in time.
    #[error("meshd did not {0} within {1:?}")]
    Timeout(&'static str, Duration),
}

/// Send one request and return the answer.
///
/// The connection is made through [`mesh_ipc::trust::connect`]: a runtime
/// directory that is not ours alone, or a listener of another user, is
/// [`DaemonError::Untrusted`] and gets nothing. A daemon that is gone
/// answers in many ways: no directory or socket file, a socket nobody
/// listens on (refused), or one whose listener died while we were
/// connecting or sending (reset, broken pipe). Each is
/// [`DaemonError::NotRunning`]. A connection closed after the request was
/// sent is [`DaemonError::NoAnswer`]: the request may have been done.
pub fn request(paths: &Paths, request: &Request) -> Result<Response, DaemonError> {
    let socket = paths.control_socket();
    let uid = rustix::process::geteuid().as_raw();
    let gone = |err: &io::Error| {
        matches!(
            err.kind(),
            io::ErrorKind::NotFound
                | io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
        )
    };
    let not_running = |err: FrameError| match err {
        FrameError::Io(e) if gone(&e) => DaemonError::NotRunning(socket.clone()),
        other => DaemonError::Frame(other),
    };
    let mut stream = trust::connect(&socket, uid).map_err(|e| match e {
        TrustError::Io { source, .. } => not_running(source.into()),
        untrusted => DaemonError::Untrusted(untrusted),
    })?;
    stream
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(FrameError::Io)?;
    control::write_frame(&mut stream, request).map_err(not_running)?;
    match control::read_frame(&mut stream).map_err(not_running)? {
        Some(Response::Error { kind, message }) => Err(DaemonError::Refused { kind, message }),
        Some(response) => Ok(response),
        None => Err(DaemonError::NoAnswer),
    }
}

/// Ask the running daemon for its status. A daemon that closes the
/// connection without answering this is not running (it was killed, or
/// is stopping).
pub fn status(paths: &Paths) -> Result<DaemonStatus, DaemonError> {
    match request(paths, &Request::Status) {
        Ok(Response::Status(status)) => Ok(status),
        Ok(_) => Err(DaemonError::Unexpected),
        Err(DaemonError::NoAnswer) => Err(DaemonError::NotRunning(paths.control_socket())),
        Err(e) => Err(e),
    }
}

/// Whether [`start`] found a daemon running or started one.
#[derive(Debug)]
pub enum Started {
    /// A daemon was answering already.
    AlreadyRunning(DaemonStatus),
    /// A new daemon was started and answers.
    Started(DaemonStatus),
}

/// Make sure `meshd` runs: if none answers, start `program` in the
/// background, detached from this terminal, with its log appended to
/// [`Paths::daemon_log`], and wait until it answers.
pub fn start(paths: &Paths, program: &Path) -> Result<Started, DaemonError> {
    match status(paths) {
        Ok(status) => return Ok(Started::AlreadyRunning(status)),
        Err(DaemonError::NotRunning(_)) => {}
        Err(err) => return Err(err),
    }
    let log_path = paths.daemon_log();
    let log = open_log(&log_path)
        .map_err(|err| DaemonError::Start(format!("{}: {err}", log_path.display())))?;
    let mut child = Command::new(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|err| DaemonError::Start(format!("{}: {err}", program.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match status(paths) {
            Ok(status) => return Ok(Started::Started(status)),
            Err(DaemonError::NotRunning(_)) => {}
            Err(err) => return Err(err),
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let why = last_line(&log_path).unwrap_or_else(|| exit.to_string());
            return Err(DaemonError::Start(format!(
                "{why} (log: {})",
                log_path.display()
            )));
        }
        if Instant::now() > deadline {
            return Err(DaemonError::Timeout("answer", START_TIMEOUT));
        }
        sleep(Duration::from_millis(20));
    }
}

/// Ask the daemon to stop and wait until its control socket is gone.
/// Returns the status it had, or `None` if none was running.
pub fn stop(paths: &Paths) -> Result<Option<DaemonStatus>, DaemonError> {
    let status = match status(paths) {
        Ok(status) => status,
        Err(DaemonError::NotRunning(_)) => return Ok(None),
        Err(err) => return Err(err),
    };
    match request(paths, &Request::Shutdown)? {
        Response::ShuttingDown => {}
        _ => return Err(DaemonError::Unexpected),
    }
    // Stopped once nothing listens: the socket is gone, or (when a service
    // manager made it and keeps the file) connecting is refused.
    let deadline = Instant::now() + START_TIMEOUT;
    let socket = paths.control_socket();
    while socket.exists() && UnixStream::connect(&socket).is_ok() {
        if Instant::now() > deadline {
            return Err(DaemonError::Timeout("stop", START_TIMEOUT));
        }
        sleep(Duration::from_millis(20));
    }
    Ok(Some(status))
}

/// The `meshd` to start: the one installed beside the running program,
/// else whichever `meshd` is on `PATH`.
pub fn meshd_program() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("meshd")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("meshd"))
}

/// Open the daemon log for appending, making its directory (0700) and the
/// file (0600) if need be.
fn open_log(path: &Path) -> io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// The last non-empty line of a log file.
fn last_line(path: &Path) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .map(str::to_owned)
}
