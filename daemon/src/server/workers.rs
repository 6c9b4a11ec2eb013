//! The threads agent connections are served on: one current-thread
//! runtime each, a connection placed on one of them and served there
//! start to finish, its socket registered with that thread's reactor.
//!
//! On the multi-thread runtime a request could be read by one worker and
//! answered by another, and each wake-up could rouse a second worker to
//! look for work to steal; here the thread that waits on the socket is
//! the one that answers, as in OpenSSH's agent. The account's work on
//! the main runtime (sync, the usage log) runs on other threads and
//! never holds a signature up. Connections go to the threads in turn,
//! so several clients use several cores.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tracing::Instrument as _;

/// The most threads, however many cores: each is a runtime, a stack, a
/// reactor and (glibc) a malloc arena of its own, some 300 KiB resident
/// in all (measured: two threads, 0.6-1 MiB more private memory than
/// none); one client at a time, what a person does, uses one.
const MAX_THREADS: usize = 2;

/// Threads serving connections; dropping this stops them, and with them
/// every connection they serve.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
    /// Dropped to stop the threads.
    _stop: Vec<oneshot::Sender<()>>,
}

impl Workers {
    /// One thread a core, up to [`MAX_THREADS`]. A thread that cannot be
    /// started is logged and done without: with none, connections are
    /// served on the caller's runtime.
    pub fn start() -> Workers {
        let wanted = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_THREADS);
        let (mut handles, mut stops) = (Vec::new(), Vec::new());
        for i in 0..wanted {
            match Self::thread(i) {
                Ok((handle, stop)) => {
                    handles.push(handle);
                    stops.push(stop);
                }
                Err(e) => tracing::warn!(error = %e, "cannot start an agent thread"),
            }
        }
        Workers {
            handles,
            next: AtomicUsize::new(0),
            _stop: stops,
        }
    }

    fn thread(i: usize) -> std::io::Result<(Handle, oneshot::Sender<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("meshd-agent-{i}"))
            .spawn(move || {
                // Ends when `stop` is dropped; dropping the runtime then
                // drops every connection still on it.
                let _ = runtime.block_on(stopped);
            })?;
        Ok((handle, stop))
    }

    /// Serve the connection on `stream` with `serve`, on the next thread,
    /// in the current span; completes when `serve` does. Dropping the
    /// returned future ends the connection.
    pub async fn serve<F, Fut, E>(&self, stream: UnixStream, serve: F) -> Result<(), E>
    where
        F: FnOnce(UnixStream) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: From<std::io::Error> + Send + 'static,
    {
        if self.handles.is_empty() {
            return serve(stream).await;
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        // Taken off this runtime's reactor, put on the thread's.
        let stream = stream.into_std()?;
        let task = self.handles[at].spawn(
            async move {
                let _serving = Serving::start();
                let stream = UnixStream::from_std(stream)?;
                serve(stream).await
            }
            .instrument(tracing::Span::current()),
        );
        let abort = AbortOnDrop(task.abort_handle());
        let result = task.await;
        drop(abort);
        match result {
            Ok(served) => served,
            // Aborted (the daemon is stopping) or a panic, already
            // reported by the hook: the connection is gone either way.
            Err(e) => Err(std::io::Error::other(e).into()),
        }
    }
}

/// Aborts a task on another runtime when the future awaiting it is
/// dropped (the accept loop's `JoinSet` going away).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

thread_local! {
    /// How many connections this thread serves now: counted on the
    /// agent threads only (a connection's task never leaves its
    /// thread's runtime), 0 elsewhere.
    static SERVING: Cell<usize> = const { Cell::new(0) };
}

/// One connection served on this thread, while it lives.
struct Serving;

impl Serving {
    fn start() -> Serving {
        SERVING.set(SERVING.get() + 1);
        Serving
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        SERVING.set(SERVING.get().saturating_sub(1));
    }
}

/// How long an agent thread serving one connection stays awake for the
/// client's next bytes: longer than a client takes to read an answer
/// and send its next request (gpg's SIGKEY, SETHASH, PKSIGN; ssh's list
/// of keys, then a signature), far shorter than anything a person sees.
const FOLLOW_UP: Duration = Duration::from_micros(50);

/// Read a connection's next bytes into `buf`'s spare room (it must have
/// some; it is never reallocated): at once if they come within
/// [`FOLLOW_UP`] (see [`follow_up`]), else when they come. The bytes
/// read, 0 at the end of the stream.
pub async fn read(stream: &mut UnixStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use tokio::io::AsyncReadExt as _;
    match follow_up(stream, buf)? {
        Some(read) => Ok(read),
        None => stream.read_buf(buf).await,
    }
}

/// The client's next bytes, if they come within [`FOLLOW_UP`], read
/// without the thread going to sleep: into `buf`'s spare room (it must
/// have some; it is never reallocated). The bytes read (0 at the end of
/// the stream), or `None` if nothing came, and at once when this thread
/// serves other connections too (they must not wait on this one) or is
/// not an agent thread.
///
/// Waking a sleeping thread is what a round trip costs here: on a
/// virtual machine whose idle cores halt, a wake-up across cores was
/// 50-60 us of a 55 us echo round trip, and 6 us with the server's thread
/// polling (C echo server and client on two pinned cores, this machine);
/// on one core, polling cost 1.7 us more. gpg signs in three round trips.
/// The thread yields between tries, so a client on the same core runs.
fn follow_up(stream: &UnixStream, buf: &mut Vec<u8>) -> std::io::Result<Option<usize>> {
    use rustix::io::Errno;
    use rustix::net::{RecvFlags, recv};
    if SERVING.get() != 1 {
        return Ok(None);
    }
    let until = Instant::now() + FOLLOW_UP;
    loop {
        match recv(
            stream,
            rustix::buffer::spare_capacity(buf),
            RecvFlags::DONTWAIT,
        ) {
            Ok((read, _)) => return Ok(Some(read)),
            Err(Errno::AGAIN | Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= until {
            return Ok(None);
        }
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt as _;

    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_connection_reads_what_comes_without_sleeping_and_others_never_wait() {
        let (ours, mut client) = UnixStream::pair().expect("a socket pair");
        let mut buf = Vec::with_capacity(64);
        // Not an agent thread's connection: no waiting at all.
        client.write_all(b"early").await.expect("written");
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), None);
        assert!(buf.is_empty());

        let serving = Serving::start();
        // What is there already is read, after what the buffer holds.
        buf.extend_from_slice(b">");
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), Some(5));
        assert_eq!(buf, b">early");
        // Nothing comes: given up after the wait, nothing read.
        let started = Instant::now();
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), None);
        assert!(started.elapsed() >= FOLLOW_UP);
        // A second connection on the thread: nobody waits on one, nor
        // reads past the runtime (the bytes stay for its reactor).
        let second = Serving::start();
        client.write_all(b"later").await.expect("written");
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), None);
        assert_eq!(buf, b">early");
        drop(second);
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), Some(5));
        assert_eq!(buf, b">earlylater");
        // The client gone: the end of the stream.
        drop(client);
        assert_eq!(follow_up(&ours, &mut buf).expect("reads"), Some(0));
        drop(serving);
        assert_eq!(SERVING.get(), 0);
    }
}
