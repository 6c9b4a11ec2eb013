//! The Assuan server gpg talks to in place of gpg-agent.
//!
//! One task per connection; each connection has its own state (the key
//! chosen by SIGKEY/SETKEY, the digest from SETHASH, the description).
//! Lines over the limit end the connection after an ERR (the stream can
//! no longer be trusted); every other bad input gets the ERR gpg-agent
//! would give and the connection lives on.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_protocol::assuan::{self, Line, LineError, code};
use mesh_protocol::keygrip::{self, Keygrip};
use mesh_protocol::sexp::Sexp;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::keystore::gpg::{GpgKeyError, GpgKeyring, hash_algorithm};

/// How many gpg connections may be open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The largest ciphertext an inquiry may return (the real agent's cap).
pub const MAX_INQUIRY: usize = 4096;

/// What every connection shares.
#[derive(Debug)]
pub struct Server {
    /// The keys.
    pub keys: Arc<GpgKeyring>,
    /// The version GETINFO reports (gpg's own, so it does not warn),
    /// read on first use.
    pub version: std::sync::OnceLock<String>,
    /// The socket served.
    pub socket: PathBuf,
    /// The only uid served.
    pub uid: u32,
}

/// Per-connection state.
#[derive(Default)]
struct Session {
    key: Option<Keygrip>,
    hash: Option<(u32, Vec<u8>)>,
}

/// Accept gpg connections until the future is dropped.
pub async fn serve(listener: UnixListener, server: Arc<Server>) {
    let uid = server.uid;
    crate::server::accept_loop(listener, "gpg-agent", MAX_CONNECTIONS, uid, move |stream| {
        let server = Arc::clone(&server);
        async move { Connection::new(stream, &server).run().await }
    })
    .await;
}

struct Connection<'a> {
    stream: UnixStream,
    buf: Zeroizing<Vec<u8>>,
    server: &'a Server,
    session: Session,
}

/// What a command leads to.
enum Outcome {
    /// Write this, keep going.
    Reply(Vec<u8>),
    /// Write this, then close.
    Close(Vec<u8>),
}

impl<'a> Connection<'a> {
    fn new(stream: UnixStream, server: &'a Server) -> Self {
        Connection {
            stream,
            buf: Zeroizing::new(Vec::with_capacity(1024)),
            server,
            session: Session::default(),
        }
    }

    async fn run(mut self) -> std::io::Result<()> {
        let greeting = format!("OK Pleased to meet you, process {}\n", std::process::id());
        self.stream.write_all(greeting.as_bytes()).await?;
        loop {
            let line = match self.read_line().await? {
                Some(Ok(line)) => line,
                Some(Err(LineError::TooLong)) => {
                    self.stream
                        .write_all(&assuan::err(code::ASS_LINE_TOO_LONG))
                        .await?;
                    return Ok(());
                }
                Some(Err(_)) => {
                    self.stream
                        .write_all(&assuan::err(code::ASS_SYNTAX))
                        .await?;
                    continue;
                }
                None => return Ok(()),
            };
            let outcome = match line {
                Line::Nothing => continue,
                Line::Command { name, args } => self.command(&name, &args).await?,
                // Data or END outside an inquiry.
                Line::Data(_) | Line::End | Line::Cancel => {
                    Outcome::Reply(assuan::err(code::ASS_UNKNOWN_CMD))
                }
            };
            match outcome {
                Outcome::Reply(bytes) => self.stream.write_all(&bytes).await?,
                Outcome::Close(bytes) => {
                    self.stream.write_all(&bytes).await?;
                    return Ok(());
                }
            }
        }
    }

    /// The next line; `None` at end of stream.
    async fn read_line(&mut self) -> std::io::Result<Option<Result<Line, LineError>>> {
        loop {
            match assuan::next_line(&self.buf) {
                Ok(Some((line, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(Ok(line)));
                }
                Ok(None) => {}
                Err(err) => return Ok(Some(Err(err))),
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
            zeroize::Zeroize::zeroize(&mut chunk);
        }
    }

    async fn command(&mut self, name: &str, args: &[u8]) -> std::io::Result<Outcome> {
        let args = String::from_utf8_lossy(args).into_owned();
        let ok = || Outcome::Reply(assuan::ok(""));
        let fail = |code| Outcome::Reply(assuan::err(code));
        Ok(match name {
            "RESET" => {
                self.session = Session::default();
                ok()
            }
            "NOP" | "CANCEL" | "OPTION" | "UPDATESTARTUPTTY" | "SETKEYDESC" | "KILLAGENT" => ok(),
            "BYE" => Outcome::Close(assuan::ok("closing connection")),
            "GETINFO" => self.getinfo(&args),
            "HAVEKEY" => self.havekey(&args),
            "KEYINFO" => self.keyinfo(&args),
            "SIGKEY" | "SETKEY" => match keygrip::from_hex(args.trim()) {
                Some(grip) => {
                    self.session.key = Some(grip);
                    ok()
                }
                None => fail(code::ASS_PARAMETER),
            },
            "SETHASH" => self.sethash(&args),
            "PKSIGN" => self.pksign(),
            "PKDECRYPT" => self.pkdecrypt().await?,
            "READKEY" => {
                let grip = args.split_whitespace().rfind(|a| !a.starts_with("--"));
                match grip.and_then(keygrip::from_hex) {
                    None => fail(code::ASS_PARAMETER),
                    Some(grip) => match self.server.keys.get(&grip) {
                        Some(key) => data(&key.public),
                        None => fail(code::NO_SECKEY),
                    },
                }
            }
            "SCD" => fail(code::NOT_SUPPORTED),
            _ => fail(code::ASS_UNKNOWN_CMD),
        })
    }

    fn getinfo(&self, args: &str) -> Outcome {
        let what = args.split_whitespace().next().unwrap_or_default();
        match what {
            "version" => data(
                self.server
                    .version
                    .get_or_init(crate::host::gpg::gpg_version)
                    .as_bytes(),
            ),
            "pid" => data(std::process::id().to_string().as_bytes()),
            "socket_name" => data(self.server.socket.to_string_lossy().as_bytes()),
            "cmd_has_option" | "restricted" | "ephemeral" => {
                Outcome::Reply(assuan::err(code::FALSE))
            }
            _ => Outcome::Reply(assuan::err(code::ASS_PARAMETER)),
        }
    }

    fn havekey(&self, args: &str) -> Outcome {
        let keys = &self.server.keys;
        let mut words = args.split_whitespace().peekable();
        if let Some(list) = words.peek().and_then(|w| w.strip_prefix("--list")) {
            let limit = match list.strip_prefix('=') {
                Some(n) => n.parse().unwrap_or(usize::MAX),
                None => usize::MAX,
            };
            let grips = keys.grips();
            if grips.len() > limit {
                return Outcome::Reply(assuan::err(code::TRUNCATED));
            }
            return data(&grips.concat());
        }
        let mut any = false;
        for word in words {
            match keygrip::from_hex(word) {
                Some(grip) => any |= keys.get(&grip).is_some(),
                None => return Outcome::Reply(assuan::err(code::ASS_PARAMETER)),
            }
        }
        if any {
            Outcome::Reply(assuan::ok(""))
        } else {
            Outcome::Reply(assuan::err(code::NO_SECKEY))
        }
    }

    fn keyinfo(&self, args: &str) -> Outcome {
        let line = |grip: &Keygrip| {
            assuan::status(
                "KEYINFO",
                &format!("{} D - - - C - - -", keygrip::to_hex(grip)),
            )
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.contains(&"--list") {
            let mut out: Vec<u8> = self.server.keys.grips().iter().flat_map(line).collect();
            out.extend(assuan::ok(""));
            return Outcome::Reply(out);
        }
        let Some(grip) = words
            .iter()
            .rfind(|w| !w.starts_with("--"))
            .and_then(|w| keygrip::from_hex(w))
        else {
            return Outcome::Reply(assuan::err(code::ASS_PARAMETER));
        };
        if self.server.keys.get(&grip).is_none() {
            return Outcome::Reply(assuan::err(code::NOT_FOUND));
        }
        let mut out = if words.contains(&"--data") {
            assuan::data_lines(format!("{} D - - - C - - -\n", keygrip::to_hex(&grip)).as_bytes())
        } else {
            line(&grip)
        };
        out.extend(assuan::ok(""));
        Outcome::Reply(out)
    }

    fn sethash(&mut self, args: &str) -> Outcome {
        let mut words = args.split_whitespace();
        let (algo, hex) = match words.next() {
            Some(name) if name.starts_with("--hash=") => {
                let algo = match name.trim_start_matches("--hash=") {
                    "sha1" => 2,
                    "rmd160" => 3,
                    "sha256" => 8,
                    "sha384" => 9,
                    "sha512" => 10,
                    "sha224" => 11,
                    _ => return Outcome::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM)),
                };
                (algo, words.next())
            }
            Some(number) => match number.parse::<u32>() {
                Ok(algo) => (algo, words.next()),
                Err(_) => return Outcome::Reply(assuan::err(code::ASS_PARAMETER)),
            },
            None => return Outcome::Reply(assuan::err(code::ASS_PARAMETER)),
        };
        let Some((len, _)) = hash_algorithm(algo) else {
            return Outcome::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM));
        };
        let digest = hex.and_then(keygrip::decode_hex);
        match digest {
            Some(digest) if digest.len() == len => {
                self.session.hash = Some((algo, digest));
                Outcome::Reply(assuan::ok(""))
            }
            _ => Outcome::Reply(assuan::err(code::ASS_PARAMETER)),
        }
    }

    fn pksign(&mut self) -> Outcome {
        let Some(key) = self
            .session
            .key
            .and_then(|grip| self.server.keys.get(&grip))
        else {
            return Outcome::Reply(assuan::err(code::NO_SECKEY));
        };
        let Some((algo, digest)) = &self.session.hash else {
            return Outcome::Reply(assuan::err(code::ASS_PARAMETER));
        };
        match key.sign(*algo, digest) {
            Ok(sig) => {
                tracing::info!(key = %key.label, "gpg signature made");
                data(&sig)
            }
            Err(GpgKeyError::BadInput) => Outcome::Reply(assuan::err(code::INV_DATA)),
            Err(_) => Outcome::Reply(assuan::err(code::NO_SECKEY)),
        }
    }

    async fn pkdecrypt(&mut self) -> std::io::Result<Outcome> {
        let Some(key) = self
            .session
            .key
            .and_then(|grip| self.server.keys.get(&grip))
        else {
            return Ok(Outcome::Reply(assuan::err(code::NO_SECKEY)));
        };
        let mut ask = assuan::status("INQUIRE_MAXLEN", &MAX_INQUIRY.to_string());
        ask.extend(assuan::inquire("CIPHERTEXT"));
        self.stream.write_all(&ask).await?;
        let mut ciphertext = Zeroizing::new(Vec::new());
        let mut too_large = false;
        loop {
            match self.read_line().await? {
                None => return Ok(Outcome::Close(Vec::new())),
                Some(Err(LineError::TooLong)) => {
                    return Ok(Outcome::Close(assuan::err(code::ASS_LINE_TOO_LONG)));
                }
                Some(Err(_)) => {
                    return Ok(Outcome::Reply(assuan::err(code::ASS_SYNTAX)));
                }
                Some(Ok(Line::Data(bytes))) => {
                    if ciphertext.len() + bytes.len() > MAX_INQUIRY {
                        too_large = true;
                    } else {
                        ciphertext.extend_from_slice(&bytes);
                    }
                }
                Some(Ok(Line::End)) => break,
                Some(Ok(Line::Cancel)) => {
                    return Ok(Outcome::Reply(assuan::err(code::ASS_CANCELED)));
                }
                Some(Ok(Line::Nothing)) => {}
                Some(Ok(Line::Command { .. })) => {
                    return Ok(Outcome::Reply(assuan::err(code::ASS_SYNTAX)));
                }
            }
        }
        if too_large {
            return Ok(Outcome::Reply(assuan::err(code::TOO_LARGE)));
        }
        let Ok(sexp) = Sexp::parse(&ciphertext) else {
            return Ok(Outcome::Reply(assuan::err(code::INV_SEXP)));
        };
        Ok(match key.decrypt(&sexp) {
            Ok(value) => {
                tracing::info!(key = %key.label, "gpg decryption");
                data(&value)
            }
            Err(GpgKeyError::BadInput) => Outcome::Reply(assuan::err(code::INV_DATA)),
            Err(_) => Outcome::Reply(assuan::err(code::NO_SECKEY)),
        })
    }
}

/// D lines with these bytes, then OK.
fn data(bytes: &[u8]) -> Outcome {
    let mut out = assuan::data_lines(bytes);
    out.extend(assuan::ok(""));
    Outcome::Reply(out)
}
