//! `udf:` names and `mcu://` connect URIs (mesh-udf-13 §6; research
//! digest §1.8).

use std::fmt;

use super::{Kind, Udf, UdfError};

/// The scheme of a UDF name, `udf:MDDK-...`.
pub const UDF_SCHEME: &str = "udf:";

/// The scheme of a Mesh connect URI.
pub const CONNECT_SCHEME: &str = "mcu://";

/// Why a name or URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NameError {
    /// It does not start with the scheme.
    #[error("expected a URI starting with {0}")]
    Scheme(&'static str),
    /// The account address is empty or malformed.
    #[error("the account address in the URI is not valid")]
    Account,
    /// The UDF part is not valid.
    #[error("the UDF in the URI is not valid: {0}")]
    Udf(#[from] UdfError),
    /// The query is not `profile=…&service=…`.
    #[error("the URI's query is not valid: expected profile=<UDF>&service=<URL>")]
    Query,
}

/// Parse `udf:<UDF>`.
pub fn parse_name(text: &str) -> Result<Udf, NameError> {
    let rest = strip_scheme(text, UDF_SCHEME)?;
    Ok(Udf::parse(rest)?)
}

/// The name form of a UDF, `udf:<UDF>`, at the default precision.
pub fn name(udf: &Udf) -> String {
    format!("{UDF_SCHEME}{udf}")
}

/// A connect URI: `mcu://<account>/<PIN>`, what `mesh account pin` shows
/// (also as a QR code) and `mesh device connect` takes. Ours adds, as a
/// query, the account's profile fingerprint and its service
/// (`?profile=<UDF>&service=<URL, percent-encoded>`), so that the URI alone
/// joins, and joins only the account it was made for: a service that
/// answers with another profile is refused.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectUri {
    /// The account to connect to, e.g. `alice@example.com`.
    pub account: String,
    /// The PIN: an authenticator-type UDF.
    pub pin: Udf,
    /// The account's profile fingerprint.
    pub profile: Option<String>,
    /// The account's service URL.
    pub service: Option<String>,
}

/// Percent-encode everything but unreserved characters and `:` `/`.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

impl fmt::Debug for ConnectUri {
    /// The PIN is a secret until it is used.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectUri")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ConnectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pin = self.pin.to_string_bits(self.pin.bits());
        write!(f, "{CONNECT_SCHEME}{}/{pin}", self.account)?;
        let mut separator = '?';
        if let Some(profile) = &self.profile {
            write!(f, "{separator}profile={}", encode(profile))?;
            separator = '&';
        }
        if let Some(service) = &self.service {
            write!(f, "{separator}service={}", encode(service))?;
        }
        Ok(())
    }
}

impl ConnectUri {
    /// Parse `mcu://<account>/<PIN>`, with our query if it has one.
    pub fn parse(text: &str) -> Result<ConnectUri, NameError> {
        let rest = strip_scheme(text, CONNECT_SCHEME)?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut profile, mut service) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or(NameError::Query)?;
            let value = decode(value)
                .filter(|v| v.len() <= 1024)
                .ok_or(NameError::Query)?;
            match key {
                "profile" if profile.is_none() => profile = Some(value),
                "service" if service.is_none() => service = Some(value),
                _ => return Err(NameError::Query),
            }
        }
        let (account, pin) = rest.rsplit_once('/').ok_or(NameError::Account)?;
        let valid_account = !account.is_empty()
            && account.len() <= 256
            && account
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '/' && c != '\\');
        if !valid_account {
            return Err(NameError::Account);
        }
        let pin = Udf::parse(pin)?;
        if !matches!(pin.kind(), Kind::Authenticator(_)) {
            return Err(UdfError::WrongType(pin.code()).into());
        }
        Ok(ConnectUri {
            account: account.to_owned(),
            pin,
            profile,
            service,
        })
    }
}

fn strip_scheme<'a>(text: &'a str, scheme: &'static str) -> Result<&'a str, NameError> {
    text.get(..scheme.len())
        .filter(|head| head.eq_ignore_ascii_case(scheme))
        .and_then(|_| text.get(scheme.len()..))
        .ok_or(NameError::Scheme(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_connect_uri_round_trips() {
        let text = "mcu://alice@example.com/AAJP-KPYV-NSB4-GIYL-AM";
        let uri = ConnectUri::parse(text).expect("parses");
        assert_eq!(uri.account, "alice@example.com");
        assert_eq!(uri.to_string(), text);
        assert!(!format!("{uri:?}").contains("AAJP"));
    }

    #[test]
    fn a_connect_uri_carries_the_profile_and_the_service() {
        let uri = ConnectUri {
            account: "alice@example.com".into(),
            pin: ConnectUri::parse("mcu://a/AAJP-KPYV-NSB4-GIYL-AM")
                .expect("parses")
                .pin,
            profile: Some("MDXX-YYYY".into()),
            service: Some("https://mesh.example:8443/x?y=1&z".into()),
        };
        let text = uri.to_string();
        assert_eq!(
            text,
            "mcu://alice@example.com/AAJP-KPYV-NSB4-GIYL-AM?profile=MDXX-YYYY\
             &service=https://mesh.example:8443/x%3Fy%3D1%26z"
        );
        assert_eq!(ConnectUri::parse(&text).expect("parses"), uri);
        for bad in ["?x=1", "?profile", "?profile=a&profile=b", "?service=%zz"] {
            let text = format!("mcu://alice@example.com/AAJP-KPYV-NSB4-GIYL-AM{bad}");
            assert!(ConnectUri::parse(&text).is_err(), "{text}");
        }
    }

    #[test]
    fn bad_connect_uris_are_refused() {
        for bad in [
            "https://alice@example.com/AAJP-KPYV-NSB4-GIYL-AM",
            "mcu://AAJP-KPYV-NSB4-GIYL-AM",
            "mcu:///AAJP-KPYV-NSB4-GIYL-AM",
            "mcu://alice@example.com/",
            "mcu://alice@example.com/NAJP-KPYV-NSB4-GIYL-AM",
            "mcu://al ice@example.com/AAJP-KPYV-NSB4-GIYL-AM",
        ] {
            assert!(ConnectUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn udf_names() {
        let udf = parse_name("udf:MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF").expect("parses");
        assert_eq!(name(&udf), "udf:MDDK-7N6A-727A-JZNO-STRX-XKS7-DJAF");
        assert_eq!(parse_name("MDDK-7N6A"), Err(NameError::Scheme(UDF_SCHEME)));
    }
}
