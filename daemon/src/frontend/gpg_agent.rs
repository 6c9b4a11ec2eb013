//! The Assuan server gpg talks to in place of gpg-agent.
//!
//! A [`Session`] is the protocol, sans I/O: lines in, replies out, with
//! its own state (the key chosen by SIGKEY/SETKEY, the digest from
//! SETHASH, and an inquiry under way: PKDECRYPT's INQUIRE CIPHERTEXT is a
//! state of the session, not a read in the middle of a command). The
//! driver (one task per connection) only reads lines and writes what the
//! session answers. Lines over the limit end the connection after an ERR
//! (the stream can no longer be trusted); every other bad input gets the
//! ERR gpg-agent would give and the connection lives on.

use std::path::PathBuf;
use std::sync::Arc;

use mesh_protocol::agent::assuan::{self, Line, LineError, code};
use mesh_protocol::agent::keygrip::{self, Keygrip};
use mesh_protocol::agent::sexp::Sexp;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{UnixListener, UnixStream};
use zeroize::Zeroizing;

use crate::keystore::gpg::{
    GenkeyError, GpgKey, GpgKeyError, GpgKeyring, ImportError, hash_algorithm,
};
use crate::keystore::transfer::{self, Transfer, TransferError};
use crate::server::workers::Workers;

/// How many gpg connections may be open at once.
pub const MAX_CONNECTIONS: usize = 64;

/// The largest ciphertext an inquiry may return (the real agent's cap).
pub const MAX_INQUIRY: usize = 4096;

/// The gpg-agent version GETINFO reports: that of the protocol served (its
/// answers follow gpg-agent 2.4's), not of whichever gpg is first on
/// meshd's PATH. A gpg newer than it says so, truly.
pub const SERVED_VERSION: &str = "2.4.8";

/// How long, in milliseconds, the S2K count is calibrated to take, as
/// gpg-agent's default `--s2k-calibration`.
pub const S2K_TIME_MS: u64 = 100;

/// The iterated and salted S2K count (RFC 4880 §3.7.1.3) that hashes for
/// about [`S2K_TIME_MS`] on this machine with SHA-1, measured as
/// gpg-agent measures it: double the count until one run takes longer,
/// scale to the target, round down to 1024, never under 65536. gpg uses
/// it for symmetric encryption (`gpg -c`); without it gpg falls back to
/// 65536, about a thousand times weaker.
pub fn calibrated_s2k_count() -> u64 {
    use sha1::Digest as _;
    const FLOOR: u64 = 65536;
    const CEILING: u64 = 65_011_712;
    let block = b"123456789abcdef0saltsalt".repeat(1024);
    let time = |count: u64| {
        let start = std::time::Instant::now();
        let mut hash = sha1::Sha1::new();
        let mut left = count;
        while left > 0 {
            let take = usize::try_from(left.min(block.len() as u64)).unwrap_or(block.len());
            hash.update(&block[..take]);
            left -= take as u64;
        }
        std::hint::black_box(hash.finalize());
        start.elapsed().as_secs_f64() * 1000.0
    };
    let mut count = FLOOR;
    let mut ms = time(count);
    while ms <= S2K_TIME_MS as f64 && count < CEILING {
        count *= 2;
        ms = time(count);
    }
    let scaled = (count as f64 / ms.max(0.001) * S2K_TIME_MS as f64) as u64;
    (scaled / 1024 * 1024).clamp(FLOOR, CEILING)
}

/// The largest `(genkey ...)` GENKEY takes (gpg-agent's MAXLEN_KEYPARAM).
pub const MAX_KEYPARAM: usize = 1024;

/// The longest passphrase taken (gpg-agent's MAX_PASSPHRASE_LEN).
pub const MAX_PASSPHRASE: usize = 255;

/// Where keys made or imported through gpg go: into the account, once
/// gpg has written their certificate, by the task [`settle`] runs.
pub struct Adds {
    /// Why this device may not add keys to the account, if it may not.
    pub refusal: Box<dyn Fn() -> Option<&'static str> + Send + Sync>,
    /// Wakes the task that hands the pending keys to the account.
    pub settle: tokio::sync::mpsc::UnboundedSender<()>,
}

impl std::fmt::Debug for Adds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adds").finish_non_exhaustive()
    }
}

/// What every connection shares.
#[derive(Debug)]
pub struct Server {
    /// The keys.
    pub keys: Arc<GpgKeyring>,
    /// The S2K count GETINFO reports, calibrated on first use.
    pub s2k_count: std::sync::OnceLock<u64>,
    /// The socket served.
    pub socket: PathBuf,
    /// The only uid served.
    pub uid: u32,
    /// Where passphrases are asked for when gpg does not answer them
    /// itself (`--pinentry-mode loopback`).
    pub askpass: crate::keystore::confirm::Askpass,
    /// Where each signature and decryption is reported (the usage log).
    pub usage: super::UsageLog,
    /// Where keys gpg makes or imports go; `None`: nowhere, refused.
    pub adds: Option<Adds>,
    /// The account's other devices, asked to confirm a use of a
    /// confirm-marked key when nobody is here.
    pub approvals: Option<super::approval::Remote>,
}

/// Accept gpg connections until the future is dropped, each served on
/// one of `workers`' threads.
pub async fn serve(listener: UnixListener, server: Arc<Server>, workers: Arc<Workers>) {
    let uid = server.uid;
    crate::server::accept_loop(listener, "gpg-agent", MAX_CONNECTIONS, uid, move |stream| {
        let (server, workers) = (Arc::clone(&server), Arc::clone(&workers));
        async move {
            let driven = Arc::clone(&server);
            let serve = |stream| async move { drive(stream, &driven).await };
            let result = workers.serve(stream, serve).await;
            // gpg has finished: the certificates of the keys it made or
            // imported are in its keyring by now.
            if let Some(adds) = &server.adds
                && server.keys.has_unstored()
            {
                let _ = adds.settle.send(());
            }
            result
        }
    })
    .await;
}

/// Hand the keys gpg made or imported to the account, each with its
/// certificate, each time a connection that added one ends: gpg writes
/// the certificate (user IDs, self-signatures) to its keyring only after
/// the agent has the keys, so it is read back from there (`gpg
/// --export`). A key whose certificate is not there yet waits for the
/// next wake; it is served meanwhile. Ends when every sender is gone.
pub async fn settle(
    keys: Arc<GpgKeyring>,
    account: crate::account::Handle,
    home: PathBuf,
    mut wake: tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use sequoia_openpgp::parse::Parse as _;
    while wake.recv().await.is_some() {
        while wake.try_recv().is_ok() {}
        if !keys.has_unstored() {
            continue;
        }
        let Some(keyring) = crate::host::gpg::export(&home).await else {
            continue;
        };
        let Ok(certs) = sequoia_openpgp::cert::CertParser::from_bytes(&keyring) else {
            continue;
        };
        for cert in certs.flatten() {
            let Some((cert, grips)) = keys.with_secrets(cert) else {
                continue;
            };
            let name = name_for(&account, &cert);
            let fingerprint = cert.fingerprint().to_hex();
            match account
                .run(crate::account::Command::OpenpgpPut {
                    cert: Box::new(cert),
                    name: Some(name.clone()),
                    // A certificate the account has keeps its setting.
                    confirm: None,
                })
                .await
            {
                Ok(_) => {
                    tracing::info!(%name, %fingerprint, "a key made or imported by gpg is in the Mesh");
                    keys.mark_stored(&grips);
                }
                Err(e) => {
                    tracing::warn!(%fingerprint, error = %e, "cannot put a key gpg made or imported in the Mesh");
                }
            }
        }
    }
}

/// The name for a certificate in the account: the one it has there,
/// else its email address unless another certificate has that name,
/// else its fingerprint.
fn name_for(account: &crate::account::Handle, cert: &sequoia_openpgp::Cert) -> String {
    let fingerprint = cert.fingerprint().to_hex();
    let view = account.view();
    let rows: &[_] = view.openpgp.as_deref().unwrap_or_default();
    if let Some((row, _)) = rows.iter().find(|(row, _)| row.fingerprint == fingerprint) {
        return row.name.clone();
    }
    cert.userids()
        .find_map(|u| u.userid().email().ok().flatten().map(str::to_owned))
        .filter(|email| {
            mesh_protocol::application::valid_name(email)
                && !rows.iter().any(|(row, _)| &row.name == email)
        })
        .unwrap_or(fingerprint)
}

/// The connection driver: greet, then feed the session each line read
/// and write what it answers, until it closes or the peer leaves.
async fn drive(mut stream: UnixStream, server: &Server) -> std::io::Result<()> {
    let mut session = Session::new(server);
    session.client = super::Client::of(&stream);
    stream.write_all(&session.greeting()).await?;
    // Lines may carry ciphertexts: wipe what was read when done. Bytes are
    // read straight into it, with no buffer of their own to wipe after
    // each read (a wipe of 4 KiB, byte by byte, three times a PKSIGN,
    // was some 6% of meshd's user-space time), and it never grows, so no
    // reallocation leaves an unwiped copy: complete lines are taken out
    // before each read, and what is left of a line is at most
    // [`assuan::MAX_LINE`] bytes, far less than its capacity.
    let mut buf = Zeroizing::new(Vec::with_capacity(READ_SIZE));
    loop {
        let line = loop {
            match assuan::next_line(&buf) {
                Ok(Some((line, used))) => {
                    buf.drain(..used);
                    break Ok(line);
                }
                Ok(None) => {}
                Err(LineError::TooLong) => break Err(LineError::TooLong),
                Err(err) => {
                    // A whole line that does not parse: answer it and
                    // go past it.
                    let end = buf
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(buf.len(), |at| at + 1);
                    buf.drain(..end);
                    break Err(err);
                }
            }
            // (`next_line` has said TooLong of anything longer.)
            debug_assert!(buf.len() <= assuan::MAX_LINE);
            // Into the spare room only: a full Vec would reallocate.
            if buf.len() == buf.capacity() {
                break Err(LineError::TooLong);
            }
            if crate::server::workers::read(&mut stream, &mut buf).await? == 0 {
                return Ok(());
            }
        };
        let mut step = session.feed(line);
        // Some steps lead to others (a passphrase, then opening the key;
        // a confirmation, then the signature).
        while matches!(
            step,
            Step::AskImportPassphrase { .. } | Step::Open(_) | Step::Confirm { .. }
        ) {
            step = advance(&mut session, server, step).await;
        }
        match step {
            Step::Wait => {}
            Step::Reply(bytes) => stream.write_all(&bytes).await?,
            Step::AskPassphrase { prompt, data } => {
                let passphrase = server.askpass.passphrase(&prompt).await;
                let answer =
                    Session::passphrase_answer(passphrase.as_ref().map(|p| p.as_bytes()), data);
                stream.write_all(&Zeroizing::new(answer)).await?;
            }
            Step::AskImportPassphrase { .. } | Step::Open(_) | Step::Confirm { .. } => {}
            Step::Generate(params) => {
                let keys = Arc::clone(&server.keys);
                let made = tokio::task::spawn_blocking(move || keys.generate(&params))
                    .await
                    .unwrap_or(Err(GenkeyError::Failed));
                stream.write_all(&session.generated(made)).await?;
            }
            Step::Close(bytes) => {
                stream.write_all(&bytes).await?;
                return Ok(());
            }
        }
    }
}

/// How much a connection reads at once, and all its buffer holds.
const READ_SIZE: usize = 4096;

/// Take an import one step on: ask for its passphrase, or open the key
/// (the S2K hashes for about 100 ms: not on the async threads); or ask
/// before a confirm-marked key is used (the user here, or the account's
/// other devices).
async fn advance(session: &mut Session<'_>, server: &Server, step: Step) -> Step {
    match step {
        Step::Confirm { prompt, question } => {
            let remote = server.approvals.as_ref();
            let approved =
                super::approval::confirm(&server.askpass, remote, &prompt, || *question).await;
            session.confirmed(approved)
        }
        Step::AskImportPassphrase { prompt } => {
            let passphrase = server.askpass.passphrase(&prompt).await;
            session.with_passphrase(passphrase.map(|p| Zeroizing::new(p.as_bytes().to_vec())))
        }
        Step::Open(opening) => {
            let keys = Arc::clone(&server.keys);
            match tokio::task::spawn_blocking(move || opening.run(&keys)).await {
                Ok(opened) => session.opened(opened),
                Err(_) => Step::Reply(assuan::err(code::BAD_SECKEY)),
            }
        }
        other => other,
    }
}

/// What the session says to one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to write yet (an empty line, inquiry data).
    Wait,
    /// Write this, keep going.
    Reply(Vec<u8>),
    /// Write this, then close.
    Close(Vec<u8>),
    /// Ask the user for a passphrase (askpass) with this prompt, then
    /// answer with [`Session::passphrase_answer`].
    AskPassphrase {
        /// The question.
        prompt: String,
        /// Answer as D lines (`--data`) rather than hex in the OK line.
        data: bool,
    },
    /// Ask the user (askpass) for the passphrase of the key being
    /// imported, then go on with [`Session::with_passphrase`].
    AskImportPassphrase {
        /// The question.
        prompt: String,
    },
    /// Open the key being imported (slow: the S2K), then go on with
    /// [`Session::opened`].
    Open(Opening),
    /// Make a key as `(genkey ...)` says (slow for RSA: off the async
    /// threads), then answer with [`Session::generated`].
    Generate(Sexp),
    /// Ask before a confirm-marked key signs or decrypts (askpass with
    /// this prompt, or the account's other devices with this question),
    /// then go on with [`Session::confirmed`].
    Confirm {
        /// The question for askpass.
        prompt: String,
        /// The question for the account's other devices.
        question: Box<crate::account::Question>,
    },
}

/// A use of a confirm-marked key, waiting for the answer.
enum Pending {
    /// PKSIGN: the key and the digest.
    Sign {
        grip: Keygrip,
        algo: u32,
        digest: Vec<u8>,
    },
    /// PKDECRYPT: the key and the ciphertext gpg sent.
    Decrypt {
        grip: Keygrip,
        inquiry: Inquiry,
        kem: bool,
    },
}

/// An inquiry gpg is answering.
#[derive(Default)]
struct Inquiry {
    /// What it answers: PKDECRYPT's ciphertext, or a passphrase.
    asked: Asked,
    ciphertext: Zeroizing<Vec<u8>>,
    too_large: bool,
}

/// What an inquiry asks gpg for.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// `INQUIRE CIPHERTEXT` (PKDECRYPT).
    #[default]
    Ciphertext,
    /// `INQUIRE PASSPHRASE` (GET_PASSPHRASE in loopback mode): answer
    /// as D lines or as hex.
    Passphrase { data: bool },
    /// `INQUIRE CIPHERTEXT` (PKDECRYPT --kem=PGP).
    KemCiphertext,
    /// `INQUIRE KEYDATA` (IMPORT_KEY): the wrapped key.
    KeyData { force: bool },
    /// `INQUIRE PASSPHRASE` in loopback mode, for the key being imported.
    ImportPassphrase,
    /// `INQUIRE KEYPARAM` (GENKEY): then ask NEWPASSWD, or not.
    KeyParam { new_passphrase: bool },
    /// `INQUIRE NEWPASSWD` (GENKEY --inq-passwd).
    NewPassphrase,
}

impl Asked {
    /// The most an answer may hold.
    fn limit(self) -> usize {
        match self {
            Asked::Ciphertext | Asked::KemCiphertext => MAX_INQUIRY,
            Asked::KeyData { .. } => transfer::MAX_KEYDATA,
            Asked::KeyParam { .. } => MAX_KEYPARAM,
            Asked::Passphrase { .. } | Asked::ImportPassphrase | Asked::NewPassphrase => {
                MAX_PASSPHRASE
            }
        }
    }
}

/// One gpg connection's protocol state.
pub struct Session<'a> {
    server: &'a Server,
    key: Option<Keygrip>,
    hash: Option<(u32, Vec<u8>)>,
    /// PKDECRYPT's INQUIRE CIPHERTEXT, while gpg answers it.
    inquiry: Option<Inquiry>,
    /// `OPTION pinentry-mode=loopback`: gpg answers passphrase questions.
    loopback: bool,
    /// The process at the other end, for the usage log.
    client: super::Client,
    /// KEYWRAP_KEY --import: the AES key IMPORT_KEY's key is wrapped with.
    import_wrap: Option<Zeroizing<[u8; 16]>>,
    /// SETKEYDESC: what to ask the passphrase of an imported key with.
    description: Option<String>,
    /// A key IMPORT_KEY read, waiting for its passphrase.
    importing: Option<Transfer>,
    /// The cache nonce IMPORT_KEY named.
    import_nonce: Option<String>,
    /// The passphrase that opened the last imported key, and the nonce
    /// gpg was given for it: this connection's only cache.
    import_cache: Option<(String, Zeroizing<Vec<u8>>)>,
    /// GENKEY's parameters, waiting for the NEWPASSWD answer.
    genkey: Option<Sexp>,
    /// A use of a confirm-marked key, waiting for the user's answer.
    confirming: Option<Pending>,
}

impl std::fmt::Debug for Session<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("inquiring", &self.inquiry.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Session<'a> {
    /// A new connection's session.
    pub fn new(server: &'a Server) -> Self {
        Session {
            server,
            key: None,
            hash: None,
            inquiry: None,
            loopback: false,
            client: super::Client::default(),
            import_wrap: None,
            description: None,
            importing: None,
            import_nonce: None,
            import_cache: None,
            genkey: None,
            confirming: None,
        }
    }

    /// The line the agent greets with.
    pub fn greeting(&self) -> Vec<u8> {
        format!("OK Pleased to meet you, process {}\n", std::process::id()).into_bytes()
    }

    /// Take one line (or the reason it is not one).
    pub fn feed(&mut self, line: Result<Line, LineError>) -> Step {
        let line = match line {
            Ok(line) => line,
            Err(LineError::TooLong) => return Step::Close(assuan::err(code::ASS_LINE_TOO_LONG)),
            Err(_) => {
                self.inquiry = None;
                return Step::Reply(assuan::err(code::ASS_SYNTAX));
            }
        };
        if self.inquiry.is_some() {
            return self.inquired(line);
        }
        match line {
            Line::Nothing => Step::Wait,
            Line::Command { name, args } => self.command(&name, &args),
            // Data or END outside an inquiry.
            Line::Data(_) | Line::End | Line::Cancel => {
                Step::Reply(assuan::err(code::ASS_UNKNOWN_CMD))
            }
        }
    }

    fn command(&mut self, name: &str, args: &[u8]) -> Step {
        let args = String::from_utf8_lossy(args).into_owned();
        let ok = || Step::Reply(assuan::ok(""));
        let fail = |code| Step::Reply(assuan::err(code));
        match name {
            "RESET" => {
                self.key = None;
                self.hash = None;
                ok()
            }
            "OPTION" => {
                if let Some(mode) = args.trim().strip_prefix("pinentry-mode=") {
                    self.loopback = mode == "loopback";
                }
                ok()
            }
            "GET_PASSPHRASE" => self.get_passphrase(&args),
            "CLEAR_PASSPHRASE" => ok(),
            "SETKEYDESC" => {
                let bytes = assuan::plus_decode(args.trim().as_bytes()).unwrap_or_default();
                self.description = Some(String::from_utf8_lossy(&bytes).into_owned());
                ok()
            }
            "NOP" | "CANCEL" | "UPDATESTARTUPTTY" | "KILLAGENT" => ok(),
            "KEYWRAP_KEY" => self.keywrap_key(&args),
            // `gpg --quick-add-key` first checks the primary key's
            // passphrase; the Mesh's keys have none to check.
            "PASSWD" if args.split_whitespace().any(|w| w == "--verify") => {
                match args
                    .split_whitespace()
                    .rfind(|a| !a.starts_with("--"))
                    .and_then(keygrip::from_hex)
                {
                    Some(grip) if self.server.keys.get(&grip).is_some() => ok(),
                    Some(_) => fail(code::NO_SECKEY),
                    None => fail(code::ASS_PARAMETER),
                }
            }
            "PASSWD" => fail(code::NOT_SUPPORTED),
            "IMPORT_KEY" => self.import_key(&args),
            "GENKEY" => self.genkey(&args),
            "BYE" => Step::Close(assuan::ok("closing connection")),
            "GETINFO" => self.getinfo(&args),
            "HAVEKEY" => self.havekey(&args),
            "KEYINFO" => self.keyinfo(&args),
            "SIGKEY" | "SETKEY" => match keygrip::from_hex(args.trim()) {
                Some(grip) => {
                    self.key = Some(grip);
                    ok()
                }
                None => fail(code::ASS_PARAMETER),
            },
            "SETHASH" => self.sethash(&args),
            "PKSIGN" => self.pksign(),
            "PKDECRYPT" => self.pkdecrypt(&args),
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
            // No smartcards here: said at once, as gpg-agent says it
            // with its scdaemon disabled (`gpg --card-status`).
            "SCD" | "LEARN" => fail(code::NO_SCDAEMON),
            _ => fail(code::ASS_UNKNOWN_CMD),
        }
    }

    fn getinfo(&self, args: &str) -> Step {
        let what = args.split_whitespace().next().unwrap_or_default();
        match what {
            "version" => data(SERVED_VERSION.as_bytes()),
            "s2k_count" | "s2k_count_cal" => data(
                self.server
                    .s2k_count
                    .get_or_init(calibrated_s2k_count)
                    .to_string()
                    .as_bytes(),
            ),
            "s2k_time" => data(S2K_TIME_MS.to_string().as_bytes()),
            "pid" => data(std::process::id().to_string().as_bytes()),
            "socket_name" => data(self.server.socket.to_string_lossy().as_bytes()),
            // gpg asks before GET_PASSPHRASE (and fails "Not supported"
            // on a no); the options are taken (a repeat is not asked).
            "cmd_has_option" => {
                let mut words = args.split_whitespace().skip(1);
                match (words.next(), words.next()) {
                    (Some("GET_PASSPHRASE"), Some("repeat" | "newsymkey")) => {
                        Step::Reply(assuan::ok(""))
                    }
                    _ => Step::Reply(assuan::err(code::FALSE)),
                }
            }
            "restricted" | "ephemeral" => Step::Reply(assuan::err(code::FALSE)),
            _ => Step::Reply(assuan::err(code::ASS_PARAMETER)),
        }
    }

    fn havekey(&self, args: &str) -> Step {
        let keys = &self.server.keys;
        let mut words = args.split_whitespace().peekable();
        // `--info <grip>`: how the key is kept. Nothing gpg knows of
        // protects the Mesh's keys: "clear", as an unprotected key.
        if words.peek() == Some(&"--info") {
            return match words.nth(1).and_then(keygrip::from_hex) {
                None => Step::Reply(assuan::err(code::ASS_PARAMETER)),
                Some(grip) if keys.get(&grip).is_none() => {
                    Step::Reply(assuan::err(code::NO_SECKEY))
                }
                Some(_) => {
                    let mut out = assuan::status("KEYFILEINFO", "clear");
                    out.extend(assuan::ok(""));
                    Step::Reply(out)
                }
            };
        }
        if let Some(list) = words.peek().and_then(|w| w.strip_prefix("--list")) {
            let limit = match list.strip_prefix('=') {
                Some(n) => n.parse().unwrap_or(usize::MAX),
                None => usize::MAX,
            };
            let grips = keys.grips();
            if grips.len() > limit {
                return Step::Reply(assuan::err(code::TRUNCATED));
            }
            return data(&grips.concat());
        }
        let mut any = false;
        for word in words {
            match keygrip::from_hex(word) {
                Some(grip) => any |= keys.get(&grip).is_some(),
                None => return Step::Reply(assuan::err(code::ASS_PARAMETER)),
            }
        }
        if any {
            Step::Reply(assuan::ok(""))
        } else {
            Step::Reply(assuan::err(code::NO_SECKEY))
        }
    }

    /// KEYINFO `[--[ssh-]list] [--data] [--ssh-fpr[=algo]] [--with-ssh]
    /// [--need-attr=NAME] [<grip>]`: each key as gpg-agent describes a
    /// software key without a passphrase. None is one of gpg-agent's SSH
    /// keys (meshd's SSH agent serves the Mesh's), and none has
    /// attributes, so `--ssh-list` and `--need-attr` find nothing.
    fn keyinfo(&self, args: &str) -> Step {
        let words: Vec<&str> = args.split_whitespace().collect();
        let has = |option: &str| words.contains(&option);
        let need_attr = words.iter().any(|w| w.starts_with("--need-attr"));
        let describe = |grips: &[Keygrip]| {
            let infos = grips
                .iter()
                .map(|grip| format!("{} D - - - C - - -", keygrip::to_hex(grip)));
            let mut out = if has("--data") {
                assuan::data_lines(infos.map(|i| i + "\n").collect::<String>().as_bytes())
            } else {
                infos.flat_map(|i| assuan::status("KEYINFO", &i)).collect()
            };
            out.extend(assuan::ok(""));
            Step::Reply(out)
        };
        if has("--ssh-list") {
            return describe(&[]);
        }
        if has("--list") {
            return describe(&if need_attr {
                Vec::new()
            } else {
                self.server.keys.grips()
            });
        }
        let Some(grip) = words
            .iter()
            .rfind(|w| !w.starts_with("--"))
            .and_then(|w| keygrip::from_hex(w))
        else {
            return Step::Reply(assuan::err(code::ASS_PARAMETER));
        };
        if need_attr || self.server.keys.get(&grip).is_none() {
            return Step::Reply(assuan::err(code::NOT_FOUND));
        }
        describe(&[grip])
    }

    fn sethash(&mut self, args: &str) -> Step {
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
                    _ => return Step::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM)),
                };
                (algo, words.next())
            }
            Some(number) => match number.parse::<u32>() {
                Ok(algo) => (algo, words.next()),
                Err(_) => return Step::Reply(assuan::err(code::ASS_PARAMETER)),
            },
            None => return Step::Reply(assuan::err(code::ASS_PARAMETER)),
        };
        let Some((len, _)) = hash_algorithm(algo) else {
            return Step::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM));
        };
        let digest = hex.and_then(keygrip::decode_hex);
        match digest {
            Some(digest) if digest.len() == len => {
                self.hash = Some((algo, digest));
                Step::Reply(assuan::ok(""))
            }
            _ => Step::Reply(assuan::err(code::ASS_PARAMETER)),
        }
    }

    fn pksign(&mut self) -> Step {
        let Some((grip, key)) = self
            .key
            .and_then(|grip| Some((grip, self.server.keys.get(&grip)?)))
        else {
            return Step::Reply(assuan::err(code::NO_SECKEY));
        };
        let Some((algo, digest)) = self.hash.clone() else {
            return Step::Reply(assuan::err(code::ASS_PARAMETER));
        };
        if key.confirm {
            self.confirming = Some(Pending::Sign { grip, algo, digest });
            return self.ask_first(&key, &grip, "gpg sign", "sign");
        }
        self.sign(&key, &grip, algo, &digest, false)
    }

    /// Ask before `key` is used (for `operation`, as the usage log names
    /// it; `verb`, as the prompt does); the use waits in `confirming`.
    fn ask_first(&self, key: &GpgKey, grip: &Keygrip, operation: &str, verb: &str) -> Step {
        let grip = keygrip::to_hex(grip);
        let program = self.client.program.as_deref().unwrap_or("a program");
        let prompt = format!(
            "Allow {program} to {verb} with OpenPGP key {}?\nKeygrip {grip}.",
            key.label
        );
        Step::Confirm {
            prompt,
            question: Box::new(crate::account::Question {
                operation: operation.to_owned(),
                key: key.label.clone(),
                fingerprint: grip,
                host: None,
                user: None,
                program: self.client.program.clone(),
                expires_in: std::time::Duration::ZERO,
            }),
        }
    }

    /// The answer to [`Step::Confirm`] has come: use the key on a yes,
    /// answer gpg-agent's "Operation cancelled" (as to a cancelled
    /// pinentry) on a no.
    pub fn confirmed(&mut self, approved: bool) -> Step {
        let Some(pending) = self.confirming.take() else {
            return Step::Reply(assuan::err(code::ASS_PARAMETER));
        };
        let (Pending::Sign { grip, .. } | Pending::Decrypt { grip, .. }) = &pending;
        let Some(key) = self.server.keys.get(grip) else {
            return Step::Reply(assuan::err(code::NO_SECKEY));
        };
        if !approved {
            tracing::info!(key = %key.label, grip = %keygrip::to_hex(grip), "use of gpg key denied");
            return Step::Reply(assuan::err(code::CANCELED));
        }
        match pending {
            Pending::Sign { grip, algo, digest } => self.sign(&key, &grip, algo, &digest, true),
            Pending::Decrypt { grip, inquiry, kem } => {
                Step::Reply(self.decrypt(&key, &grip, &inquiry, kem, true))
            }
        }
    }

    /// Sign, and note the use (`confirmed`: the user said yes first).
    fn sign(
        &self,
        key: &GpgKey,
        grip: &Keygrip,
        algo: u32,
        digest: &[u8],
        confirmed: bool,
    ) -> Step {
        match key.sign(algo, digest) {
            Ok(sig) => {
                // Each use is in the usage log already; a line per
                // signature at info cost a write to stderr (the journal)
                // on the hot path.
                tracing::debug!(key = %key.label, "gpg signature made");
                super::note_use(
                    &self.server.usage,
                    &self.client,
                    "gpg sign",
                    &key.label,
                    keygrip::to_hex(grip),
                    None,
                    confirmed,
                );
                data(&sig)
            }
            Err(GpgKeyError::BadInput) => Step::Reply(assuan::err(code::INV_DATA)),
            Err(e @ GpgKeyError::DigestTooShort(_)) => {
                tracing::warn!(key = %key.label, error = %e, "gpg signature refused");
                Step::Reply(assuan::err(code::INV_LENGTH))
            }
            Err(_) => Step::Reply(assuan::err(code::NO_SECKEY)),
        }
    }

    /// GET_PASSPHRASE `[--data] [--check] [--no-ask] [--repeat[=N]]
    /// [--qualitybar] [--newsymkey] <cache id> [<error> <prompt>
    /// <description>]`, for symmetric encryption (`gpg -c`, `gpg -d`):
    /// in loopback mode gpg is asked (`INQUIRE PASSPHRASE`), else the user
    /// through askpass. Nothing is cached: each use asks again.
    fn get_passphrase(&mut self, args: &str) -> Step {
        let mut data = false;
        let mut no_ask = false;
        let mut words = Vec::new();
        for word in args.split_whitespace() {
            match word {
                "--data" => data = true,
                "--no-ask" => no_ask = true,
                "--check" | "--qualitybar" | "--newsymkey" => {}
                w if w.starts_with("--repeat") => {}
                w => words.push(w),
            }
        }
        if words.is_empty() {
            return Step::Reply(assuan::err(code::ASS_PARAMETER));
        }
        if no_ask {
            return Step::Reply(assuan::err(code::NO_DATA));
        }
        if self.loopback {
            self.inquiry = Some(Inquiry {
                asked: Asked::Passphrase { data },
                ..Inquiry::default()
            });
            return Step::Reply(assuan::inquire("PASSPHRASE"));
        }
        // The description (percent-escaped, `+` for space) as the question.
        let unescape = |w: &str| {
            let bytes = assuan::percent_decode(w.replace('+', " ").as_bytes()).unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let prompt = match (words.get(2), words.get(3)) {
            (_, Some(description)) if *description != "X" => unescape(description),
            (Some(prompt), _) if *prompt != "X" => unescape(prompt),
            _ => "Passphrase:".to_owned(),
        };
        Step::AskPassphrase { prompt, data }
    }

    /// The answer to GET_PASSPHRASE once the passphrase is known (or not).
    pub fn passphrase_answer(passphrase: Option<&[u8]>, data: bool) -> Vec<u8> {
        match passphrase {
            None => assuan::err(code::NO_PIN_ENTRY),
            Some(passphrase) if data => {
                let mut out = assuan::data_lines(passphrase);
                out.extend(assuan::ok(""));
                out
            }
            Some(passphrase) => {
                let hex: Zeroizing<String> =
                    Zeroizing::new(passphrase.iter().map(|b| format!("{b:02X}")).collect());
                assuan::ok(&hex)
            }
        }
    }

    /// PKDECRYPT: ask gpg for the ciphertext; the answer comes in
    /// [`Session::inquired`].
    /// PKDECRYPT `[--kem[=PGP|PQC-PGP|CMS]]`: gpg 2.5 sends `--kem=PGP`
    /// for every ECDH key and leaves the KDF and key unwrapping to the
    /// agent. Only the OpenPGP ECC KEM is served (no ML-KEM keys here,
    /// nor gpgsm's CMS).
    fn pkdecrypt(&mut self, args: &str) -> Step {
        let kem = match args.split_whitespace().find(|w| w.starts_with("--kem")) {
            None => false,
            Some("--kem=PGP") => true,
            Some("--kem" | "--kem=PQC-PGP" | "--kem=CMS") => {
                return Step::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM));
            }
            Some(_) => return Step::Reply(assuan::err(code::ASS_PARAMETER)),
        };
        if self
            .key
            .and_then(|grip| self.server.keys.get(&grip))
            .is_none()
        {
            return Step::Reply(assuan::err(code::NO_SECKEY));
        }
        self.inquiry = Some(Inquiry {
            asked: if kem {
                Asked::KemCiphertext
            } else {
                Asked::Ciphertext
            },
            ..Inquiry::default()
        });
        let mut ask = assuan::status("INQUIRE_MAXLEN", &MAX_INQUIRY.to_string());
        ask.extend(assuan::inquire("CIPHERTEXT"));
        Step::Reply(ask)
    }

    /// A line while gpg answers the inquiry.
    fn inquired(&mut self, line: Line) -> Step {
        let Some(inquiry) = &mut self.inquiry else {
            return Step::Wait;
        };
        match line {
            Line::Nothing => Step::Wait,
            Line::Data(bytes) => {
                if inquiry.ciphertext.len() + bytes.len() > inquiry.asked.limit() {
                    inquiry.too_large = true;
                } else {
                    inquiry.ciphertext.extend_from_slice(&bytes);
                }
                Step::Wait
            }
            Line::Cancel => {
                self.end_inquiry();
                Step::Reply(assuan::err(code::ASS_CANCELED))
            }
            Line::Command { .. } => {
                self.end_inquiry();
                Step::Reply(assuan::err(code::ASS_SYNTAX))
            }
            Line::End => {
                let inquiry = self.inquiry.take().unwrap_or_default();
                match inquiry.asked {
                    Asked::Ciphertext => self.pkdecrypt_with(inquiry, false),
                    Asked::KemCiphertext => self.pkdecrypt_with(inquiry, true),
                    _ if inquiry.too_large => {
                        self.end_inquiry();
                        Step::Reply(assuan::err(code::TOO_LARGE))
                    }
                    Asked::Passphrase { data } => {
                        Step::Reply(Self::passphrase_answer(Some(&inquiry.ciphertext), data))
                    }
                    Asked::KeyData { force } => self.keydata(&inquiry.ciphertext, force),
                    Asked::ImportPassphrase => {
                        self.with_passphrase(Some(inquiry.ciphertext.clone()))
                    }
                    Asked::KeyParam { new_passphrase } => {
                        let Some(params) =
                            crate::keystore::gpg::parse_keyparam(&inquiry.ciphertext)
                        else {
                            return Step::Reply(assuan::err(code::INV_SEXP));
                        };
                        if new_passphrase {
                            self.genkey = Some(params);
                            self.inquiry = Some(Inquiry {
                                asked: Asked::NewPassphrase,
                                ..Inquiry::default()
                            });
                            return Step::Reply(assuan::inquire("NEWPASSWD"));
                        }
                        Step::Generate(params)
                    }
                    // The Mesh keeps its keys sealed with the account's
                    // keys; a passphrase of gpg's would be a second lock
                    // that the other devices could not open. It is
                    // dropped (wiped) unused.
                    Asked::NewPassphrase => match self.genkey.take() {
                        Some(params) => Step::Generate(params),
                        None => Step::Reply(assuan::err(code::ASS_PARAMETER)),
                    },
                }
            }
        }
    }

    /// PKDECRYPT's ciphertext has come: decrypt, after asking first for
    /// a confirm-marked key.
    fn pkdecrypt_with(&mut self, inquiry: Inquiry, kem: bool) -> Step {
        if inquiry.too_large {
            return Step::Reply(assuan::err(code::TOO_LARGE));
        }
        let Some((grip, key)) = self
            .key
            .and_then(|grip| Some((grip, self.server.keys.get(&grip)?)))
        else {
            return Step::Reply(assuan::err(code::NO_SECKEY));
        };
        // Nothing is asked about input that is no ciphertext.
        if Sexp::parse(&inquiry.ciphertext).is_err() {
            return Step::Reply(assuan::err(code::INV_SEXP));
        }
        if key.confirm {
            let step = self.ask_first(&key, &grip, "gpg decrypt", "decrypt");
            self.confirming = Some(Pending::Decrypt { grip, inquiry, kem });
            return step;
        }
        Step::Reply(self.decrypt(&key, &grip, &inquiry, kem, false))
    }

    /// Decrypt, and note the use (`confirmed`: the user said yes first).
    fn decrypt(
        &self,
        key: &GpgKey,
        grip: &Keygrip,
        inquiry: &Inquiry,
        kem: bool,
        confirmed: bool,
    ) -> Vec<u8> {
        let Ok(sexp) = Sexp::parse(&inquiry.ciphertext) else {
            return assuan::err(code::INV_SEXP);
        };
        let value = if kem {
            key.kem_decrypt(&sexp)
        } else {
            key.decrypt(&sexp)
        };
        match value {
            Ok(value) => {
                tracing::debug!(key = %key.label, "gpg decryption");
                super::note_use(
                    &self.server.usage,
                    &self.client,
                    "gpg decrypt",
                    &key.label,
                    keygrip::to_hex(grip),
                    None,
                    confirmed,
                );
                let mut out = assuan::data_lines(&value);
                out.extend(assuan::ok(""));
                out
            }
            Err(GpgKeyError::BadInput) => assuan::err(code::INV_DATA),
            Err(_) => assuan::err(code::NO_SECKEY),
        }
    }
}

impl Session<'_> {
    /// Forget what a broken-off inquiry was for.
    fn end_inquiry(&mut self) {
        self.inquiry = None;
        self.importing = None;
        self.genkey = None;
    }

    /// Why keys may not be added here, if they may not.
    fn refusal(&self) -> Option<&'static str> {
        match &self.server.adds {
            None => Some("keys cannot be added to the Mesh here"),
            Some(adds) => (adds.refusal)(),
        }
    }

    /// KEYWRAP_KEY `--import|--export [--clear]`: a fresh AES-128 key for
    /// IMPORT_KEY to unwrap with. Export is not offered: the Mesh's keys
    /// leave it only through `mesh`.
    fn keywrap_key(&mut self, args: &str) -> Step {
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.contains(&"--import") {
            if words.contains(&"--clear") {
                self.import_wrap = None;
                return Step::Reply(assuan::ok(""));
            }
            let mut key = Zeroizing::new([0u8; 16]);
            if openssl::rand::rand_bytes(&mut key[..]).is_err() {
                return Step::Reply(assuan::err(code::NOT_SUPPORTED));
            }
            let mut out = Zeroizing::new(assuan::data_lines(&key[..]));
            out.extend(assuan::ok(""));
            self.import_wrap = Some(key);
            return Step::Reply(out.to_vec());
        }
        if words.contains(&"--export") {
            return Step::Reply(assuan::err(code::NOT_SUPPORTED));
        }
        Step::Reply(assuan::err(code::ASS_PARAMETER))
    }

    /// IMPORT_KEY `[--unattended] [--force] [--timestamp=<iso>]
    /// [<cache nonce>]`: ask for the wrapped key (INQUIRE KEYDATA).
    fn import_key(&mut self, args: &str) -> Step {
        if self.import_wrap.is_none() {
            return Step::Reply(assuan::err(code::MISSING_KEY));
        }
        let force = args.split_whitespace().any(|w| w == "--force");
        self.import_nonce = args
            .split_whitespace()
            .find(|w| !w.starts_with("--"))
            .map(str::to_owned);
        self.inquiry = Some(Inquiry {
            asked: Asked::KeyData { force },
            ..Inquiry::default()
        });
        Step::Reply(assuan::inquire("KEYDATA"))
    }

    /// The wrapped key has come: unwrap and read it, then ask for its
    /// passphrase if it has one.
    fn keydata(&mut self, wrapped: &[u8], force: bool) -> Step {
        let Some(kek) = &self.import_wrap else {
            return Step::Reply(assuan::err(code::MISSING_KEY));
        };
        if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
            return Step::Reply(assuan::err(code::INV_LENGTH));
        }
        let Ok(kek) = openssl::aes::AesKey::new_decrypt(&kek[..]) else {
            return Step::Reply(assuan::err(code::INV_LENGTH));
        };
        let mut plain = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
        // RFC 3394 with its default IV, as Libgcrypt's AESWRAP.
        if openssl::aes::unwrap_key(&kek, None, &mut plain, wrapped).is_err() {
            return Step::Reply(assuan::err(code::BAD_SECKEY));
        }
        let read = match transfer::decode(&plain) {
            Ok(read) => read,
            Err(e) => return Step::Reply(transfer_err(&e)),
        };
        // Refused early, before a passphrase is asked for nothing.
        match crate::keystore::gpg::grip_of(read.public()) {
            None => return Step::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM)),
            // A key served already is no news, even where keys may not
            // be added: gpg says "secret keys unchanged".
            Some(grip) if !force && self.server.keys.get(&grip).is_some() => {
                return Step::Reply(assuan::err(code::EEXIST));
            }
            Some(_) => {}
        }
        if let Some(why) = self.refusal() {
            tracing::warn!("gpg key import refused: {why}");
            return Step::Reply(assuan::err(code::FORBIDDEN));
        }
        if !read.protected() {
            return self.opened(
                Opening::new(read, Zeroizing::new(Vec::new()), true).run(&self.server.keys),
            );
        }
        // The passphrase of the key before, if gpg names it (the keys of
        // one certificate usually share one).
        if let Some((nonce, passphrase)) = &self.import_cache
            && self.import_nonce.as_deref() == Some(nonce.as_str())
        {
            return Step::Open(Opening::new(read, passphrase.clone(), true));
        }
        self.importing = Some(read);
        self.ask_import_passphrase()
    }

    /// Ask for the passphrase of the key being imported: of gpg in
    /// loopback mode, else of the user.
    fn ask_import_passphrase(&mut self) -> Step {
        if self.loopback {
            self.inquiry = Some(Inquiry {
                asked: Asked::ImportPassphrase,
                ..Inquiry::default()
            });
            let mut ask = assuan::status("INQUIRE_MAXLEN", &MAX_PASSPHRASE.to_string());
            ask.extend(assuan::inquire("PASSPHRASE"));
            return Step::Reply(ask);
        }
        let prompt = self
            .description
            .clone()
            .unwrap_or_else(|| "Passphrase of the OpenPGP secret key to import:".to_owned());
        Step::AskImportPassphrase { prompt }
    }

    /// The passphrase for the key being imported has come (`None`: none
    /// could be asked for).
    pub fn with_passphrase(&mut self, passphrase: Option<Zeroizing<Vec<u8>>>) -> Step {
        let Some(read) = self.importing.take() else {
            return Step::Reply(assuan::err(code::ASS_PARAMETER));
        };
        match passphrase {
            None => Step::Reply(assuan::err(code::NO_PIN_ENTRY)),
            Some(passphrase) => Step::Open(Opening::new(read, passphrase, false)),
        }
    }

    /// The key being imported is open (or not): serve it until it is in
    /// the Mesh. A passphrase that opened it is kept for the next key of
    /// this connection under a nonce gpg is told (`S CACHE_NONCE`); a
    /// kept one that does not is followed by a question.
    pub fn opened(&mut self, opened: Opened) -> Step {
        let Opened {
            transfer: read,
            passphrase,
            kept,
            result,
        } = opened;
        let grip = match result {
            Ok(grip) => grip,
            Err(ImportError::Transfer(TransferError::BadPassphrase)) if kept => {
                self.importing = Some(read);
                return self.ask_import_passphrase();
            }
            Err(ImportError::Transfer(e)) => return Step::Reply(transfer_err(&e)),
            Err(ImportError::Key(GpgKeyError::Unsupported)) => {
                return Step::Reply(assuan::err(code::UNSUPPORTED_ALGORITHM));
            }
            Err(ImportError::Key(_)) => return Step::Reply(assuan::err(code::BAD_SECKEY)),
        };
        tracing::info!(grip = %keygrip::to_hex(&grip), "gpg imported a secret key");
        let mut out = Vec::new();
        if read.protected() && !kept {
            let mut nonce = [0u8; 12];
            if openssl::rand::rand_bytes(&mut nonce).is_ok() {
                let nonce: String = nonce.iter().map(|b| format!("{b:02X}")).collect();
                out.extend(assuan::status("CACHE_NONCE", &nonce));
                self.import_cache = Some((nonce, passphrase));
            }
        }
        out.extend(assuan::ok(""));
        Step::Reply(out)
    }

    /// GENKEY `[--no-protection] [--preset] [--timestamp=<iso>]
    /// [--inq-passwd] [--passwd-nonce=<s>] [<cache nonce>]`: ask for the
    /// parameters (INQUIRE KEYPARAM).
    fn genkey(&mut self, args: &str) -> Step {
        if let Some(why) = self.refusal() {
            tracing::warn!("gpg key generation refused: {why}");
            return Step::Reply(assuan::err(code::FORBIDDEN));
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let new_passphrase = words.contains(&"--inq-passwd") && !words.contains(&"--no-protection");
        self.inquiry = Some(Inquiry {
            asked: Asked::KeyParam { new_passphrase },
            ..Inquiry::default()
        });
        let mut ask = assuan::status("INQUIRE_MAXLEN", &MAX_KEYPARAM.to_string());
        ask.extend(assuan::inquire("KEYPARAM"));
        Step::Reply(ask)
    }

    /// GENKEY's answer: the new key's public key, as READKEY gives it.
    pub fn generated(&mut self, made: Result<Vec<u8>, GenkeyError>) -> Vec<u8> {
        match made {
            Ok(public) => {
                let mut out = assuan::data_lines(&public);
                out.extend(assuan::ok(""));
                out
            }
            Err(GenkeyError::Malformed) => assuan::err(code::INV_SEXP),
            Err(GenkeyError::Unsupported) => assuan::err(code::UNSUPPORTED_ALGORITHM),
            Err(_) => assuan::err(code::NOT_SUPPORTED),
        }
    }
}

/// A key to open with a passphrase, off the async threads.
pub struct Opening {
    transfer: Transfer,
    passphrase: Zeroizing<Vec<u8>>,
    kept: bool,
}

impl std::fmt::Debug for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opening").finish_non_exhaustive()
    }
}

impl PartialEq for Opening {
    /// The same opening (for comparing [`Step`]s in tests).
    fn eq(&self, other: &Opening) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Opening {}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened")
            .field("opened", &self.result.is_ok())
            .finish_non_exhaustive()
    }
}

/// An [`Opening`] done.
pub struct Opened {
    transfer: Transfer,
    passphrase: Zeroizing<Vec<u8>>,
    kept: bool,
    result: Result<Keygrip, ImportError>,
}

impl Opening {
    /// `kept`: the passphrase is the one kept from the key before.
    fn new(transfer: Transfer, passphrase: Zeroizing<Vec<u8>>, kept: bool) -> Opening {
        Opening {
            transfer,
            passphrase,
            kept,
        }
    }

    /// Open the key (slow for a protected key) and have `keys` serve it.
    pub fn run(self, keys: &GpgKeyring) -> Opened {
        let result = keys.import(&self.transfer, &self.passphrase);
        Opened {
            transfer: self.transfer,
            passphrase: self.passphrase,
            kept: self.kept,
            result,
        }
    }
}

/// The ERR for a transferred key not taken.
fn transfer_err(e: &TransferError) -> Vec<u8> {
    match e {
        TransferError::Unsupported(what) => {
            tracing::warn!("gpg import of an unsupported key refused: {what}");
            assuan::err(code::UNSUPPORTED_ALGORITHM)
        }
        TransferError::BadPassphrase => assuan::err(code::BAD_PASSPHRASE),
        _ => assuan::err(code::BAD_SECKEY),
    }
}

/// D lines with these bytes, then OK.
fn data(bytes: &[u8]) -> Step {
    let mut out = assuan::data_lines(bytes);
    out.extend(assuan::ok(""));
    Step::Reply(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_s2k_count_is_a_count_gpg_can_use() {
        let count = calibrated_s2k_count();
        assert!((65536..=65_011_712).contains(&count), "{count}");
        assert_eq!(count % 1024, 0);
    }

    use super::*;
    use mesh_protocol::agent::assuan::Line;
    use sequoia_openpgp::cert::CipherSuite;
    use tokio::io::AsyncReadExt as _;

    /// A server holding a Cv25519 certificate's signing and encryption
    /// subkeys, reporting gpg 2.2.40.
    fn server() -> (Server, Keygrip, Keygrip) {
        let keys = crate::keystore::gpg::test_keys(CipherSuite::Cv25519);
        let (sign, encrypt) = (keys[0].grip, keys[1].grip);
        let ring = GpgKeyring::default();
        ring.set(keys);
        let server = Server {
            keys: Arc::new(ring),
            s2k_count: std::sync::OnceLock::from(1_048_576),
            socket: "/run/user/1000/gnupg/S.gpg-agent".into(),
            uid: 1000,
            askpass: crate::keystore::confirm::Askpass::from_env(|_| None),
            usage: None,
            adds: None,
            approvals: None,
        };
        (server, sign, encrypt)
    }

    /// Feed `line` (as gpg writes it, newline included) and return what
    /// the session answers.
    fn say(session: &mut Session<'_>, line: &str) -> Step {
        let bytes = line.as_bytes();
        match assuan::next_line(bytes) {
            Ok(Some((line, used))) => {
                assert_eq!(used, bytes.len(), "one line at a time");
                session.feed(Ok(line))
            }
            Ok(None) => panic!("not a whole line: {line:?}"),
            Err(err) => session.feed(Err(err)),
        }
    }

    fn reply(step: Step) -> String {
        match step {
            Step::Reply(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn get_passphrase_asks_gpg_in_loopback_mode_and_askpass_otherwise() {
        let (server, _, _) = server();
        let mut session = Session::new(&server);
        // gpg asks first whether GET_PASSPHRASE takes --repeat.
        let asked = "GETINFO cmd_has_option GET_PASSPHRASE repeat\n";
        assert_eq!(reply(say(&mut session, asked)), "OK\n");
        let other = "GETINFO cmd_has_option EXPORT_KEY mode1003\n";
        assert_eq!(
            reply(say(&mut session, other)),
            "ERR 67109120 False <GPG Agent>\n"
        );
        // Without loopback: the driver asks askpass, with the description.
        match say(
            &mut session,
            "GET_PASSPHRASE --data --repeat=1 S0123 X X Enter+passphrase%0A\n",
        ) {
            Step::AskPassphrase { prompt, data } => {
                assert_eq!(prompt, "Enter passphrase\n");
                assert!(data);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reply(say(&mut session, "GET_PASSPHRASE --no-ask S0123 X X X\n")),
            "ERR 67108922 No data <GPG Agent>\n"
        );
        assert_eq!(
            reply(say(&mut session, "GET_PASSPHRASE\n")),
            "ERR 67109144 IPC parameter error <GPG Agent>\n"
        );
        // Loopback: gpg is asked, and its answer comes back.
        assert_eq!(
            reply(say(&mut session, "OPTION pinentry-mode=loopback\n")),
            "OK\n"
        );
        assert_eq!(
            reply(say(&mut session, "GET_PASSPHRASE --data S0123 X X X\n")),
            "INQUIRE PASSPHRASE\n"
        );
        assert!(matches!(
            say(&mut session, "D battery%25staple\n"),
            Step::Wait
        ));
        assert_eq!(
            reply(say(&mut session, "END\n")),
            "D battery%25staple\nOK\n"
        );
        assert_eq!(
            reply(say(&mut session, "GET_PASSPHRASE S0123 X X X\n")),
            "INQUIRE PASSPHRASE\n"
        );
        assert!(matches!(say(&mut session, "D pw\n"), Step::Wait));
        assert_eq!(reply(say(&mut session, "END\n")), "OK 7077\n");
        assert_eq!(
            Session::passphrase_answer(None, true),
            b"ERR 67108949 No pinentry <GPG Agent>\n"
        );
    }

    /// gpg 2.2.40's `gpg --detach-sign` and `gpg -d`, as captured in
    /// research/gpg-agent.md, with this server's keygrips.
    #[test]
    fn gpg_sign_and_decrypt_transcripts() {
        let (server, sign, encrypt) = server();
        let (sign_hex, enc_hex) = (keygrip::to_hex(&sign), keygrip::to_hex(&encrypt));
        let mut session = Session::new(&server);
        assert!(
            session
                .greeting()
                .starts_with(b"OK Pleased to meet you, process ")
        );
        for (line, answer) in [
            ("RESET\n", "OK\n".to_owned()),
            ("OPTION ttytype=xterm\n", "OK\n".to_owned()),
            ("GETINFO version\n", "D 2.4.8\nOK\n".to_owned()),
            ("GETINFO s2k_count\n", "D 1048576\nOK\n".to_owned()),
            ("GETINFO s2k_time\n", "D 100\nOK\n".to_owned()),
            ("OPTION allow-pinentry-notify\n", "OK\n".to_owned()),
            ("OPTION agent-awareness=2.1.0\n", "OK\n".to_owned()),
            (
                &format!("HAVEKEY {sign_hex} {enc_hex}\n"),
                "OK\n".to_owned(),
            ),
            (
                &format!("KEYINFO {sign_hex}\n"),
                format!("S KEYINFO {sign_hex} D - - - C - - -\nOK\n"),
            ),
            ("RESET\n", "OK\n".to_owned()),
            (&format!("SIGKEY {sign_hex}\n"), "OK\n".to_owned()),
            (
                "SETKEYDESC Please+enter+the+passphrase%0A%22Ed+Test+<ed@example.org>%22\n",
                "OK\n".to_owned(),
            ),
            (
                "SETHASH 8 5CB5BF2DE907A754A81EB22A5E4A10D6D5526F5AAE3E1956CA3E71CC29F491A2\n",
                "OK\n".to_owned(),
            ),
        ] {
            assert_eq!(reply(say(&mut session, line)), answer, "{line}");
        }
        let signed = reply(say(&mut session, "PKSIGN\n"));
        assert!(
            signed.starts_with("D (7:sig-val(5:eddsa(1:r32:"),
            "{signed}"
        );
        assert!(signed.ends_with(")))\nOK\n"), "{signed}");

        // gpg -d: the ciphertext comes as the answer to an inquiry.
        for (line, answer) in [
            (format!("HAVEKEY {enc_hex}\n"), "OK\n"),
            ("RESET\n".to_owned(), "OK\n"),
            (format!("SETKEY {enc_hex}\n"), "OK\n"),
            (
                "PKDECRYPT\n".to_owned(),
                "S INQUIRE_MAXLEN 4096\nINQUIRE CIPHERTEXT\n",
            ),
        ] {
            assert_eq!(reply(say(&mut session, &line)), answer, "{line}");
        }
        let ephemeral = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
        let mut ciphertext = b"(7:enc-val(4:ecdh(1:s49:".to_vec();
        ciphertext.extend_from_slice(&[1u8; 49]);
        ciphertext.extend_from_slice(b")(1:e33:\x40");
        ciphertext.extend_from_slice(ephemeral.as_bytes());
        ciphertext.extend_from_slice(b")))");
        let mut data = assuan::data_lines(&ciphertext);
        data.truncate(data.len() - 1); // data_lines ends each line; feed them one by one
        for line in data.split(|b| *b == b'\n') {
            let mut line = line.to_vec();
            line.push(b'\n');
            let (parsed, _) = assuan::next_line(&line).expect("valid").expect("whole");
            assert_eq!(session.feed(Ok(parsed)), Step::Wait);
        }
        let value = reply(say(&mut session, "END\n"));
        assert!(value.starts_with("D (5:value33:"), "{value:?}");
        assert!(value.ends_with(")\nOK\n"), "{value:?}");
        // The session is back to commands.
        assert_eq!(reply(say(&mut session, "NOP\n")), "OK\n");
        assert!(matches!(say(&mut session, "BYE\n"), Step::Close(_)));
    }

    #[test]
    fn an_inquiry_ends_on_cancel_a_command_or_too_much_data() {
        let (server, _, encrypt) = server();
        let mut session = Session::new(&server);
        let setkey = format!("SETKEY {}\n", keygrip::to_hex(&encrypt));
        let canceled = reply(Session::new(&server).feed(Ok(Line::Cancel)));
        assert_eq!(
            canceled,
            String::from_utf8_lossy(&assuan::err(code::ASS_UNKNOWN_CMD))
        );

        reply(say(&mut session, &setkey));
        reply(say(&mut session, "PKDECRYPT\n"));
        assert_eq!(
            reply(say(&mut session, "CAN\n")),
            String::from_utf8_lossy(&assuan::err(code::ASS_CANCELED))
        );
        reply(say(&mut session, "PKDECRYPT\n"));
        assert_eq!(
            reply(say(&mut session, "GETINFO pid\n")),
            String::from_utf8_lossy(&assuan::err(code::ASS_SYNTAX))
        );
        reply(say(&mut session, "PKDECRYPT\n"));
        let chunk = format!("D {}\n", "A".repeat(900));
        for _ in 0..5 {
            assert_eq!(say(&mut session, &chunk), Step::Wait);
        }
        assert_eq!(
            reply(say(&mut session, "END\n")),
            String::from_utf8_lossy(&assuan::err(code::TOO_LARGE))
        );
        // Without a key: no inquiry at all.
        let mut fresh = Session::new(&server);
        assert_eq!(
            reply(say(&mut fresh, "PKDECRYPT\n")),
            String::from_utf8_lossy(&assuan::err(code::NO_SECKEY))
        );
        // An overlong line closes the connection, inquiry or not.
        let long = format!("D {}\n", "X".repeat(1100));
        assert!(matches!(say(&mut session, &long), Step::Close(_)));
    }

    #[tokio::test]
    async fn the_driver_answers_a_bad_line_once_and_goes_on() {
        let (server, _, _) = server();
        let (mut client, stream) = UnixStream::pair().expect("a pair");
        let driver = tokio::spawn(async move { drive(stream, &server).await });
        client
            .write_all(b"D bad%ZZescape\nNOP\nBYE\n")
            .await
            .expect("sent");
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.expect("read");
        let lines: Vec<&str> = answer.lines().collect();
        assert!(lines[0].starts_with("OK Pleased to meet you"), "{answer}");
        assert_eq!(
            lines[1..],
            [
                String::from_utf8_lossy(&assuan::err(code::ASS_SYNTAX)).trim_end(),
                "OK",
                "OK closing connection"
            ],
            "{answer}"
        );
        driver.await.expect("ends").expect("cleanly");
    }

    /// A server whose keys are marked for confirmation, asking through
    /// `askpass`, with a usage log.
    fn confirming_server(
        askpass: crate::keystore::confirm::Askpass,
    ) -> (
        Server,
        Keygrip,
        Keygrip,
        tokio::sync::mpsc::Receiver<mesh_protocol::application::Usage>,
    ) {
        let (mut server, _, _) = server();
        let mut keys = crate::keystore::gpg::test_keys(CipherSuite::Cv25519);
        for key in &mut keys {
            key.confirm = true;
        }
        let (sign, encrypt) = (keys[0].grip, keys[1].grip);
        server.keys.set(keys);
        server.askpass = askpass;
        let (usage, uses) = tokio::sync::mpsc::channel(16);
        server.usage = Some(usage);
        (server, sign, encrypt, uses)
    }

    /// An ECDH ciphertext for the Cv25519 key, as PKDECRYPT's inquiry.
    fn ecdh_ciphertext() -> Vec<u8> {
        let ephemeral = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([9u8; 32]));
        let mut ciphertext = b"(7:enc-val(4:ecdh(1:s49:".to_vec();
        ciphertext.extend_from_slice(&[1u8; 49]);
        ciphertext.extend_from_slice(b")(1:e33:\x40");
        ciphertext.extend_from_slice(ephemeral.as_bytes());
        ciphertext.extend_from_slice(b")))");
        ciphertext
    }

    const SETHASH: &str =
        "SETHASH 8 5CB5BF2DE907A754A81EB22A5E4A10D6D5526F5AAE3E1956CA3E71CC29F491A2\n";

    #[test]
    fn a_confirm_marked_key_signs_and_decrypts_only_after_a_yes() {
        let headless = crate::keystore::confirm::Askpass::from_env(|_| None);
        let (server, sign, encrypt, mut uses) = confirming_server(headless);
        let (sign_hex, enc_hex) = (keygrip::to_hex(&sign), keygrip::to_hex(&encrypt));
        let mut session = Session::new(&server);
        session.client.program = Some("/usr/bin/gpg".into());
        let cancelled = String::from_utf8_lossy(&assuan::err(code::CANCELED)).into_owned();
        assert_eq!(cancelled, "ERR 67108963 Operation cancelled <GPG Agent>\n");

        // PKSIGN: asked first, naming the operation, key, keygrip, program.
        reply(say(&mut session, &format!("SIGKEY {sign_hex}\n")));
        reply(say(&mut session, SETHASH));
        let Step::Confirm { prompt, question } = say(&mut session, "PKSIGN\n") else {
            panic!("a confirm-marked key signs without asking");
        };
        assert!(
            prompt.contains("/usr/bin/gpg") && prompt.contains(&sign_hex),
            "{prompt}"
        );
        assert!(prompt.contains("sign with OpenPGP key test"), "{prompt}");
        assert_eq!(question.operation, "gpg sign");
        assert_eq!(question.key, "test");
        assert_eq!(question.fingerprint, sign_hex);
        assert_eq!(question.program.as_deref(), Some("/usr/bin/gpg"));
        assert_eq!((question.host, question.user), (None, None));
        assert!(uses.try_recv().is_err(), "nothing used before the answer");
        let signed = reply(session.confirmed(true));
        assert!(signed.starts_with("D (7:sig-val(5:eddsa"), "{signed}");
        let used = uses.try_recv().expect("the use is logged");
        assert_eq!(
            (used.operation.as_str(), used.confirmed),
            ("gpg sign", true)
        );
        // A no: gpg-agent's "Operation cancelled", nothing signed, and
        // the connection goes on.
        assert!(matches!(
            say(&mut session, "PKSIGN\n"),
            Step::Confirm { .. }
        ));
        assert_eq!(reply(session.confirmed(false)), cancelled);
        assert!(uses.try_recv().is_err());
        assert_eq!(reply(say(&mut session, "NOP\n")), "OK\n");
        // An answer with nothing waiting for it is no yes to anything.
        assert_eq!(
            reply(session.confirmed(true)),
            String::from_utf8_lossy(&assuan::err(code::ASS_PARAMETER))
        );

        // PKDECRYPT: asked once the ciphertext is in.
        for yes in [true, false] {
            reply(say(&mut session, &format!("SETKEY {enc_hex}\n")));
            reply(say(&mut session, "PKDECRYPT\n"));
            send_data(&mut session, &ecdh_ciphertext());
            let Step::Confirm { question, .. } = say(&mut session, "END\n") else {
                panic!("a confirm-marked key decrypts without asking");
            };
            assert_eq!(question.operation, "gpg decrypt");
            assert_eq!(question.fingerprint, enc_hex);
            if yes {
                let value = reply(session.confirmed(true));
                assert!(value.starts_with("D (5:value33:"), "{value:?}");
                let used = uses.try_recv().expect("the use is logged");
                assert_eq!(
                    (used.operation.as_str(), used.confirmed),
                    ("gpg decrypt", true)
                );
            } else {
                assert_eq!(reply(session.confirmed(false)), cancelled);
                assert!(uses.try_recv().is_err());
            }
        }
        // Input that is no ciphertext is refused without asking.
        reply(say(&mut session, "PKDECRYPT\n"));
        send_data(&mut session, b"(not");
        assert_eq!(
            reply(say(&mut session, "END\n")),
            String::from_utf8_lossy(&assuan::err(code::INV_SEXP))
        );
    }

    #[test]
    fn an_unmarked_key_is_never_asked_for() {
        let (server, sign, encrypt) = server();
        let mut session = Session::new(&server);
        reply(say(
            &mut session,
            &format!("SIGKEY {}\n", keygrip::to_hex(&sign)),
        ));
        reply(say(&mut session, SETHASH));
        assert!(reply(say(&mut session, "PKSIGN\n")).starts_with("D (7:sig-val"));
        reply(say(
            &mut session,
            &format!("SETKEY {}\n", keygrip::to_hex(&encrypt)),
        ));
        reply(say(&mut session, "PKDECRYPT\n"));
        send_data(&mut session, &ecdh_ciphertext());
        assert!(reply(say(&mut session, "END\n")).starts_with("D (5:value"));
    }

    /// Through the driver: askpass's yes signs, its no (or nobody to ask,
    /// and no other device) answers gpg-agent's "Operation cancelled".
    #[tokio::test]
    async fn the_driver_asks_askpass_before_a_confirm_marked_key_signs() {
        let askpass = |program: &'static str| {
            crate::keystore::confirm::Askpass::from_env(move |var| match var {
                "SSH_ASKPASS" => Some(program.into()),
                "DISPLAY" => Some(":0".into()),
                _ => None,
            })
        };
        for (askpass, signs) in [
            (askpass("/bin/true"), true),
            (askpass("/bin/false"), false),
            (crate::keystore::confirm::Askpass::from_env(|_| None), false),
        ] {
            let (server, sign, _, mut uses) = confirming_server(askpass);
            let (mut client, stream) = UnixStream::pair().expect("a pair");
            let driver = tokio::spawn(async move { drive(stream, &server).await });
            let asked = format!("SIGKEY {}\n{SETHASH}PKSIGN\nBYE\n", keygrip::to_hex(&sign));
            client.write_all(asked.as_bytes()).await.expect("sent");
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.expect("read");
            // A signature's D line is binary.
            let answer = String::from_utf8_lossy(&answer);
            let lines: Vec<&str> = answer.lines().collect();
            assert_eq!(lines.len(), if signs { 6 } else { 5 }, "{answer}");
            if signs {
                assert!(lines[3].starts_with("D (7:sig-val"), "{answer}");
                assert_eq!(lines[4], "OK", "{answer}");
                assert!(uses.try_recv().expect("logged").confirmed);
            } else {
                assert_eq!(
                    lines[3], "ERR 67108963 Operation cancelled <GPG Agent>",
                    "{answer}"
                );
                assert_eq!(lines[4], "OK closing connection", "{answer}");
                assert!(uses.try_recv().is_err());
            }
            driver.await.expect("ends").expect("cleanly");
        }
    }

    /// `bytes` as gpg sends inquiry data: D lines, each fed alone.
    fn send_data(session: &mut Session<'_>, bytes: &[u8]) {
        let mut lines = assuan::data_lines(bytes);
        lines.truncate(lines.len() - 1);
        for line in lines.split(|b| *b == b'\n') {
            let mut line = line.to_vec();
            line.push(b'\n');
            let (parsed, _) = assuan::next_line(&line).expect("valid").expect("whole");
            assert_eq!(session.feed(Ok(parsed)), Step::Wait);
        }
    }

    /// The bytes of the D lines of a reply.
    fn data_of(step: Step) -> Vec<u8> {
        let Step::Reply(bytes) = step else {
            panic!("expected a reply, got {step:?}")
        };
        let mut out = Vec::new();
        let mut rest = &bytes[..];
        while let Ok(Some((line, used))) = assuan::next_line(rest) {
            if let Line::Data(data) = line {
                out.extend(data);
            }
            rest = &rest[used..];
        }
        out
    }

    /// What the session answers once the key is opened, as the driver
    /// would have it opened.
    fn opened(session: &mut Session<'_>, step: Step) -> String {
        match step {
            Step::Open(opening) => {
                let next = session.opened(opening.run(&session.server.keys));
                opened(session, next)
            }
            other => reply(other),
        }
    }

    /// A server that takes keys from gpg (as an administrator device).
    fn adding_server() -> (Server, tokio::sync::mpsc::UnboundedReceiver<()>) {
        let (mut server, _, _) = server();
        let (settle, wake) = tokio::sync::mpsc::unbounded_channel();
        server.adds = Some(Adds {
            refusal: Box::new(|| None),
            settle,
        });
        (server, wake)
    }

    /// gpg's transfer format for the Ed25519 key with this seed, its
    /// secret in the clear or, with a passphrase, encrypted as gpg does
    /// (AES-128 CFB, salted S2K with SHA-1, SHA-1 check).
    fn transfer(seed: [u8; 32], passphrase: Option<&[u8]>) -> (Keygrip, Vec<u8>) {
        use openssl::hash::{MessageDigest, hash};
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let mut q = vec![0x40];
        q.extend_from_slice(public.as_bytes());
        let grip = keygrip::ecc(keygrip::Curve::Ed25519, &q);
        let (skey, protection) = match passphrase {
            None => (
                vec![
                    Sexp::atom("_"),
                    Sexp::atom(q.clone()),
                    Sexp::atom("_"),
                    Sexp::atom(seed),
                ],
                Sexp::list([Sexp::atom("protection"), Sexp::atom("none")]),
            ),
            Some(passphrase) => {
                let salt = [4u8; 8];
                let iv = [6u8; 16];
                let key =
                    hash(MessageDigest::sha1(), &[&salt[..], passphrase].concat()).expect("sha1");
                let mut plain = vec![0x00, 0xff];
                plain.extend_from_slice(&seed);
                let check = hash(MessageDigest::sha1(), &plain).expect("sha1");
                plain.extend_from_slice(&check);
                let blob = openssl::symm::encrypt(
                    openssl::symm::Cipher::aes_128_cfb128(),
                    &key[..16],
                    Some(&iv),
                    &plain,
                )
                .expect("encrypts");
                (
                    vec![
                        Sexp::atom("_"),
                        Sexp::atom(q.clone()),
                        Sexp::atom("e"),
                        Sexp::atom(blob),
                    ],
                    Sexp::list([
                        Sexp::atom("protection"),
                        Sexp::atom("sha1"),
                        Sexp::atom("AES"),
                        Sexp::atom(iv),
                        Sexp::atom("1"),
                        Sexp::atom("SHA1"),
                        Sexp::atom(salt),
                        Sexp::atom("96"),
                    ]),
                )
            }
        };
        let mut skey_list = vec![Sexp::atom("skey")];
        skey_list.extend(skey);
        let sexp = Sexp::list([
            Sexp::atom("openpgp-private-key"),
            Sexp::list([Sexp::atom("version"), Sexp::atom("4")]),
            Sexp::list([Sexp::atom("algo"), Sexp::atom("EDDSA")]),
            Sexp::list([Sexp::atom("curve"), Sexp::atom("Ed25519")]),
            Sexp::List(skey_list),
            Sexp::list([Sexp::atom("csum"), Sexp::atom("0")]),
            protection,
        ]);
        (grip, sexp.encode())
    }

    /// `plain` zero-padded and wrapped with `kek` as gpg wraps KEYDATA.
    fn wrap(kek: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut padded = plain.to_vec();
        padded.resize((plain.len().div_ceil(8) * 8).max(16), 0);
        let key = openssl::aes::AesKey::new_encrypt(kek).expect("kek");
        let mut out = vec![0u8; padded.len() + 8];
        openssl::aes::wrap_key(&key, None, &mut out, &padded).expect("wraps");
        out
    }

    /// gpg --import, as gpg 2.2 speaks it: KEYWRAP_KEY, SETKEYDESC,
    /// IMPORT_KEY with INQUIRE KEYDATA, then the passphrase when the key
    /// has one (loopback: asked of gpg; otherwise askpass).
    #[test]
    fn import_key_unwraps_reads_and_serves_the_key() {
        let (server, _wake) = adding_server();
        let mut session = Session::new(&server);
        let err = |code| String::from_utf8_lossy(&assuan::err(code)).into_owned();
        assert_eq!(
            reply(say(&mut session, "IMPORT_KEY --unattended\n")),
            err(code::MISSING_KEY)
        );
        let kek = data_of(say(&mut session, "KEYWRAP_KEY --import\n"));
        assert_eq!(kek.len(), 16);

        let (grip, plain) = transfer([7; 32], None);
        let hex = keygrip::to_hex(&grip);
        assert_eq!(
            reply(say(&mut session, &format!("HAVEKEY {hex}\n"))),
            err(code::NO_SECKEY)
        );
        let import = "IMPORT_KEY --timestamp=20261122T045001 --unattended\n";
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&kek, &plain));
        assert_eq!(reply(say(&mut session, "END\n")), "OK\n");
        // Served at once, and gpg signs with it.
        for (line, answer) in [
            (format!("HAVEKEY {hex}\n"), "OK\n".to_owned()),
            (format!("SIGKEY {hex}\n"), "OK\n".to_owned()),
            (
                format!("SETHASH 8 {}\n", "AB".repeat(32)),
                "OK\n".to_owned(),
            ),
        ] {
            assert_eq!(reply(say(&mut session, &line)), answer, "{line}");
        }
        assert!(reply(say(&mut session, "PKSIGN\n")).starts_with("D (7:sig-val(5:eddsa"));
        assert_eq!(server.keys.unstored_count(), 1);
        // Again: it exists, unless forced.
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&kek, &plain));
        assert_eq!(reply(say(&mut session, "END\n")), err(code::EEXIST));
        assert_eq!(
            reply(say(&mut session, "IMPORT_KEY --force\n")),
            "INQUIRE KEYDATA\n"
        );
        send_data(&mut session, &wrap(&kek, &plain));
        assert_eq!(reply(say(&mut session, "END\n")), "OK\n");

        // Protected, in loopback mode: gpg is asked; a wrong passphrase
        // is refused; the right one is kept for the next key, under a
        // nonce gpg is told.
        let (grip, plain) = transfer([8; 32], Some(b"open sesame"));
        reply(say(&mut session, "OPTION pinentry-mode=loopback\n"));
        let mut nonce = String::new();
        for (passphrase, answer) in [
            ("wrong", err(code::BAD_PASSPHRASE)),
            ("open sesame", "S CACHE_NONCE ".to_owned()),
        ] {
            assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
            send_data(&mut session, &wrap(&kek, &plain));
            assert_eq!(
                reply(say(&mut session, "END\n")),
                "S INQUIRE_MAXLEN 255\nINQUIRE PASSPHRASE\n"
            );
            send_data(&mut session, passphrase.as_bytes());
            let end = say(&mut session, "END\n");
            let answered = opened(&mut session, end);
            assert!(answered.starts_with(&answer), "{answered}");
            nonce = answered
                .trim_start_matches("S CACHE_NONCE ")
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
        assert_eq!(nonce.len(), 24);
        assert!(server.keys.get(&grip).is_some());
        // The next key with the same passphrase: not asked again.
        let (grip, plain) = transfer([11; 32], Some(b"open sesame"));
        let with_nonce = format!("IMPORT_KEY --unattended {nonce}\n");
        assert_eq!(reply(say(&mut session, &with_nonce)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&kek, &plain));
        let end = say(&mut session, "END\n");
        assert_eq!(opened(&mut session, end), "OK\n");
        assert!(server.keys.get(&grip).is_some());
        // With another passphrase: the kept one fails, gpg is asked.
        let (_, plain) = transfer([12; 32], Some(b"other"));
        assert_eq!(reply(say(&mut session, &with_nonce)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&kek, &plain));
        let end = say(&mut session, "END\n");
        assert_eq!(
            opened(&mut session, end),
            "S INQUIRE_MAXLEN 255\nINQUIRE PASSPHRASE\n"
        );
        send_data(&mut session, b"other");
        let end = say(&mut session, "END\n");
        assert!(opened(&mut session, end).starts_with("S CACHE_NONCE "));

        // Protected, not in loopback mode: askpass, with the description.
        let (grip, plain) = transfer([9; 32], Some(b"pw"));
        let mut session = Session::new(&server);
        let kek = data_of(say(&mut session, "KEYWRAP_KEY --import\n"));
        reply(say(&mut session, "SETKEYDESC Import+it%0Aplease\n"));
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&kek, &plain));
        match say(&mut session, "END\n") {
            Step::AskImportPassphrase { prompt } => assert_eq!(prompt, "Import it\nplease"),
            other => panic!("{other:?}"),
        }
        let step = session.with_passphrase(Some(Zeroizing::new(b"pw".to_vec())));
        assert!(opened(&mut session, step).ends_with("OK\n"));
        assert!(server.keys.get(&grip).is_some());

        // Damage and other kinds of key.
        for (plain, code) in [
            (b"(3:foo)".to_vec(), code::UNSUPPORTED_ALGORITHM),
            (
                Sexp::list([
                    Sexp::atom("openpgp-private-key"),
                    Sexp::list([Sexp::atom("version"), Sexp::atom("4")]),
                    Sexp::list([Sexp::atom("algo"), Sexp::atom("DSA")]),
                ])
                .encode(),
                code::UNSUPPORTED_ALGORITHM,
            ),
            (b"(19:openpgp-private-key)".to_vec(), code::BAD_SECKEY),
        ] {
            assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
            send_data(&mut session, &wrap(&kek, &plain));
            assert_eq!(reply(say(&mut session, "END\n")), err(code));
        }
        // Wrapped with another key; too short.
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &wrap(&[1; 16], &plain));
        assert_eq!(reply(say(&mut session, "END\n")), err(code::BAD_SECKEY));
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &[1; 16]);
        assert_eq!(reply(say(&mut session, "END\n")), err(code::INV_LENGTH));
        // More than gpg-agent takes.
        assert_eq!(reply(say(&mut session, import)), "INQUIRE KEYDATA\n");
        send_data(&mut session, &[1; transfer::MAX_KEYDATA + 8]);
        assert_eq!(reply(say(&mut session, "END\n")), err(code::TOO_LARGE));
        assert_eq!(
            reply(say(&mut session, "KEYWRAP_KEY --export\n")),
            err(code::NOT_SUPPORTED)
        );
    }

    /// gpg --quick-gen-key, as gpg 2.2 speaks it.
    #[test]
    fn genkey_makes_a_key_and_answers_its_public_key() {
        let (refusing, _, _) = server();
        let (server, _wake) = adding_server();
        let mut session = Session::new(&server);
        let err = |code| String::from_utf8_lossy(&assuan::err(code)).into_owned();
        let generate = |session: &mut Session<'_>, step: Step| match step {
            Step::Generate(params) => {
                let made = session.server.keys.generate(&params);
                String::from_utf8_lossy(&session.generated(made)).into_owned()
            }
            other => reply(other),
        };
        assert_eq!(
            reply(say(
                &mut session,
                "GENKEY --timestamp=20261122T045819 --inq-passwd\n"
            )),
            "S INQUIRE_MAXLEN 1024\nINQUIRE KEYPARAM\n"
        );
        assert_eq!(
            say(
                &mut session,
                "D (genkey(ecc(curve 7:Ed25519)(flags eddsa comp)))\n"
            ),
            Step::Wait
        );
        assert_eq!(reply(say(&mut session, "END\n")), "INQUIRE NEWPASSWD\n");
        let end = say(&mut session, "END\n");
        let public = generate(&mut session, end);
        assert!(
            public.starts_with("D (10:public-key(3:ecc(5:curve7:Ed25519)(5:flags5:eddsa)(1:q33:"),
            "{public}"
        );
        assert_eq!(server.keys.unstored_count(), 1);

        for (keyparam, starts) in [
            (
                "D (genkey(ecc(curve 10:Curve25519)(flags djb-tweak comp)))\n",
                "D (10:public-key(3:ecc(5:curve10:Curve25519)(5:flags9:djb-tweak)",
            ),
            (
                "D (genkey(ecc(curve 10:NIST P-256)))\n",
                "D (10:public-key(3:ecc(5:curve10:NIST P-256)(1:q65:",
            ),
            (
                "D (genkey(rsa(nbits 4:2048)))\n",
                "D (10:public-key(3:rsa(1:n257:",
            ),
            (
                "D (genkey(dsa(nbits 4:2048)))\n",
                "ERR 67108948 Unsupported algorithm",
            ),
            (
                "D (genkey(ecc(curve 9:secp256k1)))\n",
                "ERR 67108948 Unsupported algorithm",
            ),
            (
                "D (genkey(rsa(nbits 5:16384)))\n",
                "ERR 67108948 Unsupported algorithm",
            ),
            ("D (genkey(ecc(curve\n", "ERR 67108947 Invalid S-expression"),
        ] {
            reply(say(&mut session, "GENKEY --no-protection\n"));
            assert_eq!(say(&mut session, keyparam), Step::Wait);
            let end = say(&mut session, "END\n");
            let answer = generate(&mut session, end);
            assert!(answer.starts_with(starts), "{keyparam}: {answer}");
        }
        assert_eq!(server.keys.unstored_count(), 4);

        // A device that may not add keys says so.
        let mut session = Session::new(&refusing);
        assert_eq!(reply(say(&mut session, "GENKEY\n")), err(code::FORBIDDEN));
        // It imports no key, but hears that it has those it serves.
        let kek = data_of(say(&mut session, "KEYWRAP_KEY --import\n"));
        let (_, plain) = transfer([10; 32], None);
        assert_eq!(
            reply(say(&mut session, "IMPORT_KEY\n")),
            "INQUIRE KEYDATA\n"
        );
        send_data(&mut session, &wrap(&kek, &plain));
        assert_eq!(reply(say(&mut session, "END\n")), err(code::FORBIDDEN));
    }

    /// gpg 2.5's PKDECRYPT --kem=PGP: ECDH, KDF and key unwrap here.
    #[test]
    fn pkdecrypt_kem_pgp_unwraps_the_session_key() {
        use openssl::hash::{MessageDigest, hash};
        let (server, _, encrypt) = server();
        let public = Sexp::parse(&server.keys.get(&encrypt).expect("key").public).expect("sexp");
        let q = public.find(b"ecc").and_then(|e| e.value(b"q")).expect("q");
        let ephemeral = x25519_dalek::StaticSecret::from([3u8; 32]);
        let shared = ephemeral.diffie_hellman(&x25519_dalek::PublicKey::from(
            <[u8; 32]>::try_from(&q[1..]).expect("32"),
        ));
        let param = b"\x0a+\x06\x01\x04\x01\x97U\x01\x05\x01\x12\x03\x01\x08\x07Anonymous Sender    0123456789abcdef0123";
        let kek = hash(
            MessageDigest::sha256(),
            &[&[0, 0, 0, 1][..], shared.as_bytes(), param].concat(),
        )
        .expect("sha256");
        let session_key = [0x42u8; 40];
        let wrapped = {
            let key = openssl::aes::AesKey::new_encrypt(&kek[..16]).expect("kek");
            let mut out = vec![0u8; 48];
            openssl::aes::wrap_key(&key, None, &mut out, &session_key).expect("wraps");
            out
        };
        let mut e = vec![0x40];
        e.extend_from_slice(x25519_dalek::PublicKey::from(&ephemeral).as_bytes());
        let ciphertext = |wrapped: &[u8]| {
            let mut s = vec![48u8];
            s.extend_from_slice(wrapped);
            Sexp::list([
                Sexp::atom("enc-val"),
                Sexp::list([
                    Sexp::atom("ecc"),
                    Sexp::list([Sexp::atom("c"), Sexp::atom("7")]),
                    Sexp::list([Sexp::atom("h"), Sexp::atom("8")]),
                    Sexp::list([Sexp::atom("e"), Sexp::atom(e.clone())]),
                    Sexp::list([Sexp::atom("s"), Sexp::atom(s)]),
                    Sexp::list([Sexp::atom("kdf-params"), Sexp::atom(&param[..])]),
                ]),
            ])
            .encode()
        };
        let mut session = Session::new(&server);
        let err = |code| String::from_utf8_lossy(&assuan::err(code)).into_owned();
        reply(say(
            &mut session,
            &format!("SETKEY {}\n", keygrip::to_hex(&encrypt)),
        ));
        assert_eq!(
            reply(say(&mut session, "PKDECRYPT --kem=PGP\n")),
            "S INQUIRE_MAXLEN 4096\nINQUIRE CIPHERTEXT\n"
        );
        send_data(&mut session, &ciphertext(&wrapped));
        let mut expected = b"(5:value40:".to_vec();
        expected.extend_from_slice(&session_key);
        expected.push(b')');
        assert_eq!(data_of(say(&mut session, "END\n")), expected);
        // A damaged wrapping is bad data, not a crash.
        reply(say(&mut session, "PKDECRYPT --kem=PGP\n"));
        let mut damaged = wrapped.clone();
        damaged[5] ^= 1;
        send_data(&mut session, &ciphertext(&damaged));
        assert_eq!(reply(say(&mut session, "END\n")), err(code::INV_DATA));
        for (line, code) in [
            ("PKDECRYPT --kem=CMS\n", code::UNSUPPORTED_ALGORITHM),
            ("PKDECRYPT --kem=PQC-PGP\n", code::UNSUPPORTED_ALGORITHM),
            ("PKDECRYPT --kem=ROT13\n", code::ASS_PARAMETER),
        ] {
            assert_eq!(reply(say(&mut session, line)), err(code), "{line}");
        }
    }

    /// KEYINFO and HAVEKEY as gpg 2.4 and tools send them.
    #[test]
    fn keyinfo_and_havekey_forms() {
        let (server, sign, encrypt) = server();
        let (s, e) = (keygrip::to_hex(&sign), keygrip::to_hex(&encrypt));
        let mut grips = [s.clone(), e.clone()];
        grips.sort();
        let [first, second] = &grips;
        let mut session = Session::new(&server);
        let err = |code| String::from_utf8_lossy(&assuan::err(code)).into_owned();
        for (line, answer) in [
            (
                "KEYINFO --list\n".to_owned(),
                format!(
                    "S KEYINFO {first} D - - - C - - -\nS KEYINFO {second} D - - - C - - -\nOK\n"
                ),
            ),
            (
                "KEYINFO --list --data\n".to_owned(),
                format!("D {first} D - - - C - - -%0A{second} D - - - C - - -%0A\nOK\n"),
            ),
            (
                format!("KEYINFO --data {s}\n"),
                format!("D {s} D - - - C - - -%0A\nOK\n"),
            ),
            (
                format!("KEYINFO --with-ssh --ssh-fpr {s}\n"),
                format!("S KEYINFO {s} D - - - C - - -\nOK\n"),
            ),
            ("KEYINFO --ssh-list\n".to_owned(), "OK\n".to_owned()),
            (
                "KEYINFO --list --need-attr=Use-for-ssh\n".to_owned(),
                "OK\n".to_owned(),
            ),
            (
                format!("KEYINFO --need-attr=Use-for-ssh {s}\n"),
                err(code::NOT_FOUND),
            ),
            (
                format!("KEYINFO {}\n", "0".repeat(40)),
                err(code::NOT_FOUND),
            ),
            ("KEYINFO\n".to_owned(), err(code::ASS_PARAMETER)),
            (
                format!("HAVEKEY --info {e}\n"),
                "S KEYFILEINFO clear\nOK\n".to_owned(),
            ),
            (
                format!("HAVEKEY --info {}\n", "0".repeat(40)),
                err(code::NO_SECKEY),
            ),
            ("HAVEKEY --info\n".to_owned(), err(code::ASS_PARAMETER)),
            ("HAVEKEY --list=1\n".to_owned(), err(code::TRUNCATED)),
            (
                format!("HAVEKEY {} {e}\n", "0".repeat(40)),
                "OK\n".to_owned(),
            ),
            (format!("PASSWD --verify {s}\n"), "OK\n".to_owned()),
            (format!("PASSWD {s}\n"), err(code::NOT_SUPPORTED)),
        ] {
            assert_eq!(reply(say(&mut session, &line)), answer, "{line}");
        }
        let listed = data_of(say(&mut session, "HAVEKEY --list=2\n"));
        assert_eq!(listed.len(), 40);
    }

    #[test]
    fn bad_commands_get_gpg_agents_errors() {
        let (server, _, _) = server();
        let mut session = Session::new(&server);
        let err = |code| String::from_utf8_lossy(&assuan::err(code)).into_owned();
        for (line, answer) in [
            ("STEAL\n", err(code::ASS_UNKNOWN_CMD)),
            ("SIGKEY nothex\n", err(code::ASS_PARAMETER)),
            ("PKSIGN\n", err(code::NO_SECKEY)),
            ("SETHASH --hash=md5 00\n", err(code::UNSUPPORTED_ALGORITHM)),
            ("SETHASH 8 0011\n", err(code::ASS_PARAMETER)),
            (
                "HAVEKEY 0000000000000000000000000000000000000000\n",
                err(code::NO_SECKEY),
            ),
            ("SCD LEARN\n", err(code::NO_SCDAEMON)),
            ("END\n", err(code::ASS_UNKNOWN_CMD)),
        ] {
            assert_eq!(reply(say(&mut session, line)), answer, "{line}");
        }
    }
}
