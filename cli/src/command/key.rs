//! `mesh key`: seeds, keys derived from them, and Shamir shares.
//!
//! Public keys are written `<alg>:<base64url>` (an X25519 key as its
//! Edwards point, the form co-generation needs), e.g. `ed25519:Gz0...`.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use mesh_protocol::keys::{PrivateKey, PublicKey, Suite};
use mesh_protocol::shamir;
use mesh_protocol::udf::Udf;
use mesh_protocol::udf::seed::{KeyAlg, KeySpecifier, Seed};
use serde_json::json;

use super::input::{read_secret, read_secret_lines, refuse_on_command_line};
use super::udf::print;

/// What a seed is for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SeedKind {
    /// An account: every account key derives from it.
    Account,
    /// A device's base keys.
    Device,
    /// One Ed25519 key.
    Ed25519,
    /// One X25519 key.
    X25519,
    /// One Ed448 key.
    Ed448,
    /// One X448 key.
    X448,
}

/// A key algorithm.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Alg {
    /// Ed25519 signatures.
    Ed25519,
    /// X25519 key agreement.
    X25519,
    /// Ed448 signatures.
    Ed448,
    /// X448 key agreement.
    X448,
}

impl From<Alg> for KeyAlg {
    fn from(alg: Alg) -> KeyAlg {
        match alg {
            Alg::Ed25519 => KeyAlg::Ed25519,
            Alg::X25519 => KeyAlg::X25519,
            Alg::Ed448 => KeyAlg::Ed448,
            Alg::X448 => KeyAlg::X448,
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// A fresh secret seed (a Z-type UDF): keep it secret.
    Secret {
        /// What the seed is for.
        #[arg(long, value_enum, default_value = "account")]
        kind: SeedKind,
        /// Bits of secret.
        #[arg(long, default_value_t = 256)]
        bits: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The public key a seed gives for a key name, and its fingerprint.
    /// The seed (a Z-type UDF) is asked for on the terminal, or read from
    /// standard input.
    Derive {
        /// The key name, e.g. CompleteAccountProfile (may be empty).
        name: String,
        /// Refused: the old form `derive SEED NAME` put the seed on the
        /// command line.
        #[arg(hide = true)]
        old_name: Option<String>,
        /// The algorithm (default: the seed's own, else by the name's operation).
        #[arg(long, value_enum)]
        alg: Option<Alg>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Split a secret (any UDF, e.g. an account seed) into Shamir shares.
    /// The secret is asked for on the terminal, or read from standard input.
    Share {
        /// Refused: a secret on the command line can be read by other
        /// programs and stays in the shell's history.
        #[arg(hide = true)]
        secret: Option<String>,
        /// How many shares to make (1 to 15).
        #[arg(long)]
        shares: usize,
        /// How many recover the secret (1 to shares).
        #[arg(long)]
        quorum: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recover a secret from Shamir shares (at least the quorum), asked
    /// for on the terminal or read from standard input, one a line.
    Recover {
        /// Refused: shares on the command line can be read by other
        /// programs and stay in the shell's history.
        #[arg(hide = true)]
        shares: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(command: KeyCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeyCommand::Secret { kind, bits, json } => {
            anyhow::ensure!(
                bits % 8 == 0 && (128..=512).contains(&bits),
                "--bits must be a multiple of 8 from 128 to 512"
            );
            let alg = match kind {
                SeedKind::Account => KeyAlg::MeshProfileAccount,
                SeedKind::Device => KeyAlg::MeshProfileDevice,
                SeedKind::Ed25519 => KeyAlg::Ed25519,
                SeedKind::X25519 => KeyAlg::X25519,
                SeedKind::Ed448 => KeyAlg::Ed448,
                SeedKind::X448 => KeyAlg::X448,
            };
            let seed = Seed::generate(&mut rand_core::OsRng, KeySpecifier::new(alg), bits / 8)?;
            let text = seed.to_udf().to_string();
            print(json, &text, json!({ "seed": text }));
        }
        KeyCommand::Derive {
            name,
            old_name,
            alg,
            json,
        } => {
            refuse_on_command_line(
                old_name.is_some(),
                "seeds are",
                "run `mesh key derive NAME` and type the seed, or give it on standard input",
            )?;
            let seed = parse_seed(&read_secret("seed: ")?)?;
            let alg = alg.map_or_else(|| default_alg(&seed, &name), |a| Ok(a.into()))?;
            let key = PrivateKey::derive(&seed, alg, &name).context("cannot derive that key")?;
            let public = format_public(&key.public());
            let fingerprint = key.public().fingerprint().to_string();
            print(
                json,
                &format!("{public}\n{fingerprint}"),
                json!({ "name": name, "public": public, "fingerprint": fingerprint }),
            );
        }
        KeyCommand::Share {
            secret,
            shares,
            quorum,
            json,
        } => {
            refuse_on_command_line(
                secret.is_some(),
                "secrets are",
                "run `mesh key share --shares N --quorum K` and type it, or give it on standard input",
            )?;
            let secret =
                Udf::parse(&read_secret("secret: ")?).context("the secret is not a UDF")?;
            let split = shamir::split(&mut rand_core::OsRng, secret.as_bytes(), shares, quorum)?;
            let texts: Vec<String> = split.iter().map(|s| s.to_udf().to_string()).collect();
            print(
                json,
                &texts.join("\n"),
                json!({ "quorum": quorum, "shares": texts }),
            );
        }
        KeyCommand::Recover { shares, json } => {
            refuse_on_command_line(
                !shares.is_empty(),
                "shares are",
                "run `mesh key recover` and type them, or give them on standard input, one a line",
            )?;
            let udfs = read_secret_lines("share")?
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    Udf::parse(s).with_context(|| format!("share {} is not a UDF", i + 1))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let secret = shamir::recover_udfs(&udfs)?;
            let text = Udf::from_binary(secret.to_vec())
                .map(|udf| udf.to_string())
                .unwrap_or_else(|_| secret.iter().map(|b| format!("{b:02X}")).collect());
            print(json, &text, json!({ "secret": text }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Parse a seed UDF.
pub(crate) fn parse_seed(text: &str) -> anyhow::Result<Seed> {
    let udf = Udf::parse(text).context("the seed is not a UDF")?;
    Seed::from_udf(&udf).context("not a secret seed (Z-type UDF)")
}

/// The algorithm of a seed's own specifier, or for Mesh seeds the one a
/// key name's operation calls for in the 25519 suite.
pub(crate) fn default_alg(seed: &Seed, name: &str) -> anyhow::Result<KeyAlg> {
    match seed.specifier().alg {
        alg @ (KeyAlg::Ed25519 | KeyAlg::X25519 | KeyAlg::Ed448 | KeyAlg::X448) => Ok(alg),
        KeyAlg::Any
        | KeyAlg::MeshProfileDevice
        | KeyAlg::MeshActivationDevice
        | KeyAlg::MeshProfileAccount
        | KeyAlg::MeshActivationAccount
        | KeyAlg::MeshProfileService
        | KeyAlg::MeshActivationService => {
            let agreement = ["Encrypt", "Escrow", "Authenticate"]
                .iter()
                .any(|op| name.contains(op));
            Ok(Suite::Curve25519.alg_for(if agreement { "Encrypt" } else { "Sign" }))
        }
        _ => anyhow::bail!("seeds for that algorithm are not supported; give --alg"),
    }
}

/// `<alg>:<base64url>`.
pub(crate) fn format_public(key: &PublicKey) -> String {
    key.to_text()
}

/// Parse `<alg>:<base64url>`.
pub(crate) fn parse_public(text: &str) -> anyhow::Result<PublicKey> {
    PublicKey::from_text(text).with_context(|| {
        format!(
            "not a public key (<alg>:<base64url>, alg one of ed25519, x25519, ed448, x448): {text}"
        )
    })
}
