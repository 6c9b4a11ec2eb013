//! `mesh ssh`: the account's SSH identities, and where the agent listens.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Subcommand;
use mesh_ipc::control::{Request, Response, SecretText, SshIdentityRow};
use mesh_ipc::paths::Paths;
use zeroize::Zeroizing;

use super::account::{answer, ask, show, show_each};

#[derive(Debug, Subcommand)]
pub(crate) enum SshCommand {
    /// Make an SSH key, kept in the account and served by every device
    /// with the ssh right.
    Create {
        /// Its name in the account.
        #[arg(default_value = "default")]
        name: String,
        /// ed25519, ecdsa (P-256; ecdsa-p384, ecdsa-p521) or rsa (3072 bits).
        #[arg(long, default_value = "ed25519")]
        alg: String,
        /// Ask (through SSH_ASKPASS) before each use, like ssh-add -c.
        #[arg(long)]
        confirm: bool,
        /// Serve it first to this host, and to no other host that
        /// names itself (`github.com`, `*.example.com`; again for more):
        /// matched against the names the host key has in known_hosts.
        #[arg(long = "host", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Put an existing OpenSSH private key in the account.
    Import {
        /// The private key file (ssh-keygen's format); asks on the terminal
        /// for the passphrase of an encrypted one.
        file: PathBuf,
        /// Its name in the account (default: the file's name).
        #[arg(long)]
        name: Option<String>,
        /// Ask (through SSH_ASKPASS) before each use, like ssh-add -c.
        #[arg(long)]
        confirm: bool,
        /// Serve it first to this host, and to no other host that
        /// names itself (`github.com`, `*.example.com`; again for more):
        /// matched against the names the host key has in known_hosts.
        #[arg(long = "host", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The account's SSH keys.
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// One key's OpenSSH public key line.
    Get {
        /// Its name.
        name: String,
    },
    /// Say which hosts a key is for (none: every host).
    Set {
        /// Its name.
        name: String,
        /// A host it is for (`github.com`, `*.example.com`); again for
        /// more; none to make it every host's again.
        #[arg(long = "host", value_name = "PATTERN")]
        hosts: Vec<String>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key from the account (and so from every device).
    Delete {
        /// Its name.
        name: String,
    },
    /// Lines for a server's ~/.ssh/authorized_keys.
    AuthorizedKeys,
    /// An allowed-signers file for ssh-keygen -Y verify and git's
    /// gpg.ssh.allowedSignersFile.
    AllowedSigners,
    /// The line that points ssh at meshd: eval "$(mesh ssh env)".
    Env,
}

pub(crate) fn run(paths: &Paths, command: SshCommand) -> anyhow::Result<ExitCode> {
    match command {
        SshCommand::Create {
            name,
            alg,
            confirm,
            hosts,
            json,
        } => {
            let request = Request::SshCreate {
                name,
                algorithm: alg,
                confirm,
                hosts,
            };
            let identity = answer!(ask(paths, &request)?, Response::SshIdentity(i) => i);
            show(json, &identity, describe);
        }
        SshCommand::Import {
            file,
            name,
            confirm,
            hosts,
            json,
        } => {
            let name = match name {
                Some(name) => name,
                None => file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("give the key a name with --name")?
                    .to_owned(),
            };
            let private = Zeroizing::new(
                std::fs::read_to_string(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            );
            let passphrase = if is_encrypted(&private) {
                Some(SecretText::new(super::input::read_passphrase(&format!(
                    "Passphrase for {}: ",
                    file.display()
                ))?))
            } else {
                None
            };
            let request = Request::SshImport {
                name,
                private: SecretText::new(private.to_string()),
                passphrase,
                confirm,
                hosts,
            };
            let identity = answer!(ask(paths, &request)?, Response::SshIdentity(i) => i);
            show(json, &identity, describe);
        }
        SshCommand::List { json } => {
            let identities = answer!(
                ask(paths, &Request::SshList)?,
                Response::SshIdentities { identities } => identities
            );
            show_each(json, &identities, describe);
        }
        SshCommand::Get { name } => {
            let identity = answer!(
                ask(paths, &Request::SshGet { name })?,
                Response::SshIdentity(i) => i
            );
            println!("{}", identity.public);
        }
        SshCommand::Set { name, hosts, json } => {
            let request = Request::SshSet { name, hosts };
            let identity = answer!(ask(paths, &request)?, Response::SshIdentity(i) => i);
            show(json, &identity, describe);
        }
        SshCommand::Delete { name } => {
            let request = Request::SshDelete { name: name.clone() };
            answer!(ask(paths, &request)?, Response::Deleted { .. } => ());
            println!("deleted {name}");
        }
        SshCommand::AuthorizedKeys => print_lines(ask(paths, &Request::SshAuthorizedKeys)?)?,
        SshCommand::AllowedSigners => print_lines(ask(paths, &Request::SshAllowedSigners)?)?,
        SshCommand::Env => println!("{}", env_line(paths)),
    }
    Ok(ExitCode::SUCCESS)
}

/// `SSH_AUTH_SOCK=...; export SSH_AUTH_SOCK;`, as ssh-agent prints it.
pub(crate) fn env_line(paths: &Paths) -> String {
    format!(
        "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;",
        shell_quote(&paths.ssh_agent_socket().to_string_lossy())
    )
}

fn shell_quote(text: &str) -> String {
    if text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn describe(v: &SshIdentityRow) -> String {
    let confirm = if v.confirm { "  confirm" } else { "" };
    let mut hosts = if v.hosts.is_empty() {
        "  every host".to_owned()
    } else {
        format!("  for {}", v.hosts.join(", "))
    };
    if v.taken_by > 0 {
        hosts += &format!(
            " (offered first to the {} servers that took it)",
            v.taken_by
        );
    }
    format!(
        "{}\t{} {}{confirm}{hosts}\n",
        v.name,
        v.algorithm.as_deref().unwrap_or("-"),
        v.fingerprint.as_deref().unwrap_or("-"),
    )
}

/// `mesh log`: the account's latest key uses.
pub(crate) fn log(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let uses = answer!(ask(paths, &Request::UsageLog)?, Response::Usage { uses } => uses);
    show_each(json, &uses, |u| {
        let when = u.time_ms / 1000;
        let program = u.program.as_deref().unwrap_or("?");
        let pid = u.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
        let host = u
            .host
            .as_deref()
            .map(|h| format!(" host {h}"))
            .unwrap_or_default();
        let confirmed = if u.confirmed { " (confirmed)" } else { "" };
        format!(
            "{when}\t{}\t{} {} {}\t{program} [{pid}]{host}{confirmed}\n",
            u.device, u.operation, u.key, u.fingerprint
        )
    });
    Ok(ExitCode::SUCCESS)
}

fn print_lines(response: Response) -> anyhow::Result<()> {
    for line in answer!(response, Response::Lines { lines } => lines) {
        println!("{line}");
    }
    Ok(())
}

/// Whether an OpenSSH private key file is encrypted: its cipher name
/// (PROTOCOL.key) is not `none`.
fn is_encrypted(pem: &str) -> bool {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
        return false;
    };
    let Some(rest) = bytes.strip_prefix(b"openssh-key-v1\0") else {
        return false;
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return false;
    };
    let len = u32::from_be_bytes(*len) as usize;
    rest.get(..len).is_some_and(|cipher| cipher != b"none")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("/run/user/1000/mesh/ssh-agent.sock"),
            "/run/user/1000/mesh/ssh-agent.sock"
        );
        assert_eq!(shell_quote("/tmp/a b/it's"), r"'/tmp/a b/it'\''s'");
    }

    #[test]
    fn encryption_is_read_from_the_cipher_name() {
        let key = |cipher: &str| {
            let mut raw = b"openssh-key-v1\0".to_vec();
            raw.extend_from_slice(&(cipher.len() as u32).to_be_bytes());
            raw.extend_from_slice(cipher.as_bytes());
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        assert!(!is_encrypted(&key("none")));
        assert!(is_encrypted(&key("aes256-ctr")));
        assert!(!is_encrypted("not a key"));
    }
}
