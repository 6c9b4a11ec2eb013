//! `mesh dare`: DARE envelopes and logs (mesh-dare-12).

use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::{Subcommand, ValueEnum};
use mesh_protocol::envelope::{ContentMeta, Envelope, SealOptions};
use mesh_protocol::keys::PrivateKey;
use mesh_protocol::merkle;
use mesh_protocol::sequence::{ContainerType, Sequence};
use serde_json::json;

use super::input::{read_input, read_secret_file, refuse_on_command_line, write_output};
use super::key::{default_alg, parse_public, parse_seed};
use super::udf::print;

#[derive(Debug, Subcommand)]
pub(crate) enum DareCommand {
    /// Seal a file in an envelope: encrypted to --to keys, signed with the
    /// seed in --sign-file.
    Encode {
        /// The file (- for standard input).
        input: String,
        /// Where to write the envelope's JSON (- for standard output).
        #[arg(short, long, default_value = "-")]
        output: String,
        /// A recipient's public key (x25519:... or x448:...); repeat for more.
        #[arg(long)]
        to: Vec<String>,
        /// A file holding the seed whose key (named by --key-name) signs
        /// (- for standard input).
        #[arg(long)]
        sign_file: Option<String>,
        /// Refused: a seed on the command line can be read by other
        /// programs and stays in the shell's history.
        #[arg(long, hide = true)]
        sign: Option<String>,
        /// The name of the keys derived from seeds.
        #[arg(long, default_value = "")]
        key_name: String,
        /// The payload's content type.
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Open an envelope: decrypt it with the seed in --key-file, check a
    /// signature with --signer.
    Decode {
        /// The envelope (- for standard input).
        input: String,
        /// Where to write the payload (- for standard output).
        #[arg(short, long, default_value = "-")]
        output: String,
        /// A file holding the seed whose key (named by --key-name) the
        /// envelope is encrypted to (- for standard input).
        #[arg(long)]
        key_file: Option<String>,
        /// Refused: a seed on the command line can be read by other
        /// programs and stays in the shell's history.
        #[arg(long, hide = true)]
        key: Option<String>,
        /// Require a valid signature by this public key.
        #[arg(long)]
        signer: Option<String>,
        /// The name of the key derived from the seed.
        #[arg(long, default_value = "")]
        key_name: String,
    },
    /// Check an envelope's digest and its signature by --signer.
    Verify {
        /// The envelope (- for standard input).
        input: String,
        /// The signer's public key.
        #[arg(long)]
        signer: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Append-only logs (DARE sequences).
    #[command(subcommand)]
    Log(LogCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Container {
    /// No integrity data.
    List,
    /// A digest per frame.
    Digest,
    /// A digest chain.
    Chain,
    /// A Merkle tree (the Mesh's catalogs).
    Merkle,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Event {
    /// A new object.
    New,
    /// A new version of an object.
    Update,
    /// The object is gone.
    Delete,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LogCommand {
    /// Append a file to a log as one frame, making the log if needed.
    Append {
        /// The log file.
        log: String,
        /// The file to append (- for standard input).
        input: String,
        /// The object's UniqueId (default: a fresh one).
        #[arg(long)]
        id: Option<String>,
        /// The persistence event.
        #[arg(long, value_enum, default_value = "new")]
        event: Event,
        /// The integrity a new log keeps.
        #[arg(long = "type", value_enum, default_value = "merkle")]
        container: Container,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List a log's frames.
    List {
        /// The log file.
        log: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a log; with --size and --apex, that it extends what was seen.
    Verify {
        /// The log file.
        log: String,
        /// The number of frames the log had when its apex was remembered.
        #[arg(long, requires = "apex")]
        size: Option<u64>,
        /// The remembered apex (base64url).
        #[arg(long, requires = "size")]
        apex: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: DareCommand) -> anyhow::Result<ExitCode> {
    match command {
        DareCommand::Encode {
            input,
            output,
            to,
            sign_file,
            sign,
            key_name,
            content_type,
        } => {
            refuse_on_command_line(
                sign.is_some(),
                "seeds are",
                "put it in a file and give --sign-file FILE",
            )?;
            let signer = sign_file
                .map(|file| seed_key(&input, &file, &key_name))
                .transpose()?;
            let payload = read_input(&input)?;
            let recipients = to
                .iter()
                .map(|t| parse_public(t))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let meta = content_type.map(|cty| ContentMeta {
                content_type: Some(cty),
                ..ContentMeta::default()
            });
            let options = SealOptions {
                recipients: &recipients,
                signer: signer.as_ref(),
                meta: meta.as_ref(),
                sequence_info: None,
            };
            let envelope = Envelope::seal(&mut rand_core::OsRng, &payload, &options)?;
            write_output(&output, format!("{}\n", envelope.to_json()).as_bytes())?;
        }
        DareCommand::Decode {
            input,
            output,
            key_file,
            key,
            signer,
            key_name,
        } => {
            refuse_on_command_line(
                key.is_some(),
                "seeds are",
                "put it in a file and give --key-file FILE",
            )?;
            let key = key_file
                .map(|file| seed_key(&input, &file, &key_name))
                .transpose()?;
            let envelope = read_envelope(&input)?;
            let signer = signer.map(|s| parse_public(&s)).transpose()?;
            let opened = envelope.open(key.as_ref(), signer.as_ref())?;
            write_output(&output, &opened.payload)?;
        }
        DareCommand::Verify {
            input,
            signer,
            json,
        } => {
            let envelope = read_envelope(&input)?;
            let fingerprint = envelope.verify(&parse_public(&signer)?)?;
            print(
                json,
                &format!("good signature by {fingerprint}"),
                json!({"valid": true, "signer": fingerprint}),
            );
        }
        DareCommand::Log(command) => return log(command),
    }
    Ok(ExitCode::SUCCESS)
}

fn log(command: LogCommand) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Append {
            log,
            input,
            id,
            event,
            container,
            json,
        } => {
            let mut sequence = if std::path::Path::new(&log).exists() {
                load(&log)?
            } else {
                Sequence::new(match container {
                    Container::List => ContainerType::List,
                    Container::Digest => ContainerType::Digest,
                    Container::Chain => ContainerType::Chain,
                    Container::Merkle => ContainerType::Merkle,
                })
            };
            let payload = read_input(&input)?;
            let id = match id {
                Some(id) => id,
                None => mesh_protocol::udf::Udf::nonce(&mut rand_core::OsRng, 16)?.to_string(),
            };
            let meta = ContentMeta::for_event(
                &id,
                match event {
                    Event::New => mesh_protocol::envelope::Event::New,
                    Event::Update => mesh_protocol::envelope::Event::Update,
                    Event::Delete => mesh_protocol::envelope::Event::Delete,
                },
            );
            let envelope = Envelope::unsealed(payload, Some(&meta));
            let mut trial = sequence.clone();
            let index = trial.append(envelope);
            trial.replay().context("the event does not fit the log")?;
            sequence = trial;
            write_output(&log, &sequence.encode())?;
            let apex = URL_SAFE_NO_PAD.encode(sequence.apex());
            print(
                json,
                &format!("appended frame {index} ({id})"),
                json!({"index": index, "id": id, "size": sequence.len(), "apex": apex}),
            );
        }
        LogCommand::List { log, json } => {
            let sequence = load(&log)?;
            let mut rows = Vec::new();
            for index in 1..=sequence.len() {
                let frame = sequence.frame(index).context("a frame does not decode")?;
                let meta: ContentMeta = frame
                    .header
                    .content_meta_data
                    .as_deref()
                    .and_then(|m| serde_json::from_slice(m).ok())
                    .unwrap_or_default();
                rows.push(json!({
                    "index": index,
                    "id": meta.unique_id,
                    "event": meta.event,
                    "bytes": frame.peek_unverified().len(),
                    "encrypted": frame.header.enc.is_some(),
                }));
            }
            if json {
                println!("{}", serde_json::Value::Array(rows));
            } else {
                for row in rows {
                    println!(
                        "{:>6}  {:<7} {:>8} bytes  {}",
                        row["index"],
                        row["event"].as_str().unwrap_or("-"),
                        row["bytes"],
                        row["id"].as_str().unwrap_or("-")
                    );
                }
            }
        }
        LogCommand::Verify {
            log,
            size,
            apex,
            json,
        } => {
            let sequence = load(&log)?;
            let live = sequence.replay().map(|l| l.len()).ok();
            if let (Some(size), Some(apex)) = (size, apex) {
                let seen: merkle::Hash = URL_SAFE_NO_PAD
                    .decode(&apex)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .context("--apex is not a 64-byte base64url digest")?;
                anyhow::ensure!(
                    size <= sequence.len(),
                    "the log has {} frames, fewer than the {size} seen: it was rolled back",
                    sequence.len()
                );
                let proof = sequence.consistency_proof(size).context("no proof")?;
                anyhow::ensure!(
                    merkle::verify_consistency(
                        size,
                        &seen,
                        sequence.len(),
                        &sequence.apex(),
                        &proof
                    ),
                    "the log does not extend the one seen: its history was rewritten"
                );
            }
            let apex = URL_SAFE_NO_PAD.encode(sequence.apex());
            print(
                json,
                &format!(
                    "valid {} log of {} frames, apex {apex}",
                    sequence.container().name(),
                    sequence.len()
                ),
                json!({"valid": true, "type": sequence.container().name(), "size": sequence.len(), "apex": apex, "live": live}),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The key `name` of the seed in the file `seed_file` (- for standard
/// input, unless the command's `input` comes from there).
fn seed_key(input: &str, seed_file: &str, name: &str) -> anyhow::Result<PrivateKey> {
    anyhow::ensure!(
        !(input == "-" && seed_file == "-"),
        "the seed and the input cannot both come from standard input"
    );
    let seed = parse_seed(&read_secret_file(seed_file)?)?;
    let alg = default_alg(&seed, name)?;
    PrivateKey::derive(&seed, alg, name).context("cannot derive the key")
}

fn read_envelope(path: &str) -> anyhow::Result<Envelope> {
    let bytes = read_input(path)?;
    Envelope::from_json(bytes.trim_ascii())
        .with_context(|| format!("{path} is not a DARE envelope"))
}

fn load(path: &str) -> anyhow::Result<Sequence> {
    let bytes = read_input(path)?;
    let sequence = Sequence::decode(&bytes)
        .with_context(|| format!("{path} is not a DARE log"))?
        .verify()
        .with_context(|| format!("{path} does not verify"))?;
    Ok(sequence)
}
