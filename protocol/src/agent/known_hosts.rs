//! Which names a host key has in OpenSSH's `known_hosts` files, so that
//! the agent can tell which of its keys belong to the host an `ssh`
//! connection is bound to (session-bind) without any ssh_config.
//!
//! A line is `[marker] names keytype base64 [comment]`; names are
//! comma-separated host names or patterns (`[host]:port` for another port),
//! or one hashed name `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
//! `@cert-authority` and `@revoked` lines name no host key, and are
//! skipped. A hashed name hides the name: it can be tested against a
//! candidate name, never read, so a glob scope matches plain names only.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use ssh_key::public::KeyData;

/// The longest `known_hosts` text read.
pub const MAX_TEXT: usize = 4 * 1024 * 1024;

/// The names one host key has, from `known_hosts` text.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Names {
    plain: Vec<String>,
    /// `(salt, HMAC-SHA1(salt, name))` of each hashed name.
    hashed: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Names {
    /// The names `key` has in `text` (a `known_hosts` file's content).
    pub fn of(text: &str, key: &KeyData) -> Names {
        let mut names = Names::default();
        let text = text.get(..MAX_TEXT).unwrap_or(text);
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(first) = fields.next() else { continue };
            if first.starts_with('#') || first.starts_with('@') {
                continue;
            }
            let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
                continue;
            };
            let matches = ssh_key::PublicKey::from_openssh(&format!("{kind} {blob}"))
                .is_ok_and(|public| public.key_data() == key);
            if !matches {
                continue;
            }
            if let Some(hashed) = first.strip_prefix("|1|") {
                let Some((salt, hash)) = hashed.split_once('|') else {
                    continue;
                };
                if let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) {
                    names.hashed.push((salt, hash));
                }
            } else {
                names.plain.extend(
                    first
                        .split(',')
                        .filter(|n| !n.starts_with('!'))
                        .map(str::to_owned),
                );
            }
        }
        names
    }

    /// These names and `other`'s (from another file).
    pub fn merged(mut self, other: Names) -> Names {
        self.plain.extend(other.plain);
        self.hashed.extend(other.hashed);
        self
    }

    /// The first name written in the clear (hashed names cannot be read
    /// back), for showing a person where a key is used.
    pub fn first_plain(&self) -> Option<&str> {
        self.plain.first().map(String::as_str)
    }

    /// Whether it has no name.
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.hashed.is_empty()
    }

    /// Whether `pattern` (`github.com`, `*.example.com`, `10.0.0.?`)
    /// matches one of the names, with or without its `[ ]:port`.
    pub fn match_any(&self, pattern: &str) -> bool {
        let bare = |name: &str| -> String {
            name.strip_prefix('[')
                .and_then(|n| n.split_once("]:"))
                .map_or(name, |(host, _)| host)
                .to_owned()
        };
        let pattern = pattern.to_ascii_lowercase();
        let pattern = pattern.as_str();
        if self.plain.iter().any(|name| {
            let name = name.to_ascii_lowercase();
            glob(pattern, &name) || glob(pattern, &bare(&name))
        }) {
            return true;
        }
        if pattern.contains(['*', '?']) {
            return false;
        }
        self.hashed.iter().any(|(salt, hash)| {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(pattern.as_bytes());
            mac.verify_slice(hash).is_ok()
        })
    }
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one byte, case as it
/// is (host names are lowercased before, as OpenSSH does; user names are
/// not).
pub fn glob(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while let Some(have) = name.get(n) {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(c) if *c == b'?' || c == have => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern.iter().skip(p).all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn key(line: &str) -> KeyData {
        ssh_key::PublicKey::from_openssh(line)
            .expect("a key")
            .key_data()
            .clone()
    }

    #[test]
    fn plain_and_hashed_names_of_a_key() {
        // `|1|` hashes of "gitlab.example.com" with a fixed salt.
        let salt = [9u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("mac");
        mac.update(b"gitlab.example.com");
        let hashed = format!(
            "|1|{}|{}",
            STANDARD.encode(salt),
            STANDARD.encode(mac.finalize().into_bytes())
        );
        let text = format!(
            "# comment\n\
             github.com,140.82.121.4 {HOST}\n\
             [git.example.com]:2222 {HOST}\n\
             {hashed} {HOST}\n\
             elsewhere.example {OTHER}\n\
             @cert-authority *.example.com {HOST}\n\
             garbage\n"
        );
        let names = Names::of(&text, &key(HOST));
        assert!(names.match_any("github.com"));
        assert!(names.match_any("GitHub.com"));
        assert!(names.match_any("*.example.com"));
        assert!(names.match_any("git.example.com"));
        assert!(names.match_any("[git.example.com]:2222"));
        assert!(names.match_any("gitlab.example.com"), "the hashed name");
        assert!(!names.match_any("elsewhere.example"));
        assert!(!names.match_any("*.example"));
        assert!(Names::of(&text, &key(OTHER)).match_any("elsewhere.example"));
        assert!(Names::of("", &key(HOST)).is_empty());
    }

    #[test]
    fn globs_as_openssh_matches_them() {
        for (pattern, name, expected) in [
            ("*", "anything", true),
            ("*.example.com", "a.b.example.com", true),
            ("*.example.com", "example.com", false),
            ("10.0.0.?", "10.0.0.7", true),
            ("10.0.0.?", "10.0.0.17", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("", "", true),
            ("", "x", false),
            ("Git", "git", false),
        ] {
            assert_eq!(glob(pattern, name), expected, "{pattern} {name}");
        }
    }
}
