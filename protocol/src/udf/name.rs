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
/// (also as a QR code) and `mesh device connect` takes.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectUri {
    /// The account to connect to, e.g. `alice@example.com`.
    pub account: String,
    /// The PIN: an authenticator-type UDF.
    pub pin: Udf,
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
        write!(f, "{CONNECT_SCHEME}{}/{pin}", self.account)
    }
}

impl ConnectUri {
    /// Parse `mcu://<account>/<PIN>`.
    pub fn parse(text: &str) -> Result<ConnectUri, NameError> {
        let rest = strip_scheme(text, CONNECT_SCHEME)?;
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
