//! `mesh udf`: fingerprints, authenticators and nonces (mesh-udf-13).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Subcommand, ValueEnum};
use mesh_protocol::udf::{self, DigestAlg, Udf, digest, keyed};
use serde_json::json;

use super::input::{read_input, read_secret_file, refuse_on_command_line};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Alg {
    /// SHA-2-512 (M-type UDFs).
    Sha2,
    /// SHA-3-512 (K-type UDFs).
    Sha3,
}

#[derive(Debug, Subcommand)]
pub(crate) enum UdfCommand {
    /// The content digest UDF of a file (or - for standard input).
    Digest {
        /// The file.
        file: String,
        /// The hash function.
        #[arg(long, value_enum, default_value = "sha2")]
        alg: Alg,
        /// Precision in bits, the type byte included (a multiple of 20 is usual).
        #[arg(long, default_value_t = udf::DEFAULT_BITS)]
        bits: usize,
        /// The content type bound into the digest.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The authenticator UDF of a file under a key (a UDF, e.g. a nonce).
    Mac {
        /// The file.
        file: String,
        /// A file holding the key (- for standard input).
        #[arg(long, required_unless_present = "key")]
        key_file: Option<String>,
        /// Refused: a key on the command line can be read by other programs
        /// and stays in the shell's history.
        #[arg(long, hide = true)]
        key: Option<String>,
        /// Precision in bits.
        #[arg(long, default_value_t = udf::DEFAULT_BITS)]
        bits: usize,
        /// The content type bound into the authenticator.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check a file against a UDF (prefix comparison).
    Check {
        /// The file.
        file: String,
        /// The UDF it should have.
        udf: String,
        /// The content type it was made with.
        #[arg(long, default_value = "application/octet-stream")]
        content_type: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// A fresh random nonce UDF.
    Nonce {
        /// Random bits (a multiple of 8).
        #[arg(long, default_value_t = 128)]
        bits: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn check_bits(bits: usize) -> anyhow::Result<()> {
    anyhow::ensure!(
        (udf::MIN_MATCH_BITS..=udf::MAX_BITS).contains(&bits),
        "--bits must be from {} to {}",
        udf::MIN_MATCH_BITS,
        udf::MAX_BITS
    );
    Ok(())
}

pub(crate) fn run(command: UdfCommand) -> anyhow::Result<ExitCode> {
    match command {
        UdfCommand::Digest {
            file,
            alg,
            bits,
            content_type,
            json,
        } => {
            check_bits(bits)?;
            let data = read_input(&file)?;
            let alg = match alg {
                Alg::Sha2 => DigestAlg::Sha2_512,
                Alg::Sha3 => DigestAlg::Sha3_512,
            };
            let value = digest::content_digest(alg, &data, &content_type).to_string_bits(bits);
            print(
                json,
                &value,
                json!({"udf": value, "bits": bits, "content_type": content_type}),
            );
        }
        UdfCommand::Mac {
            file,
            key_file,
            key,
            bits,
            content_type,
            json,
        } => {
            refuse_on_command_line(
                key.is_some(),
                "keys are",
                "put it in a file and give --key-file FILE (- for standard input)",
            )?;
            check_bits(bits)?;
            let key_file = key_file.unwrap_or_default();
            anyhow::ensure!(
                !(key_file == "-" && file == "-"),
                "the key and the file cannot both come from standard input"
            );
            let key = Udf::parse(&read_secret_file(&key_file)?).context("the key is not a UDF")?;
            let data = read_input(&file)?;
            let value =
                keyed::authenticator(&key.to_string(), &data, &content_type).to_string_bits(bits);
            print(
                json,
                &value,
                json!({"udf": value, "bits": bits, "content_type": content_type}),
            );
        }
        UdfCommand::Check {
            file,
            udf,
            content_type,
            json,
        } => {
            let claimed = Udf::parse(&udf).context("not a UDF")?;
            let data = read_input(&file)?;
            let alg = match claimed.kind() {
                udf::Kind::Digest { alg, .. } => alg,
                _ => anyhow::bail!("{udf} is not a content digest UDF"),
            };
            let ok = digest::content_digest(alg, &data, &content_type).matches(&claimed);
            let verdict = if ok { "match" } else { "MISMATCH" };
            print(json, verdict, json!({"match": ok, "bits": claimed.bits()}));
            if !ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        UdfCommand::Nonce { bits, json } => {
            anyhow::ensure!(
                bits % 8 == 0 && (64..=512).contains(&bits),
                "--bits must be a multiple of 8 from 64 to 512"
            );
            let value = Udf::nonce(&mut rand_core::OsRng, bits / 8)?.to_string();
            print(json, &value, json!({"udf": value}));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Print a line for people, or JSON for scripts.
pub(crate) fn print(json: bool, line: &str, value: serde_json::Value) {
    if json {
        println!("{value}");
    } else {
        println!("{line}");
    }
}
