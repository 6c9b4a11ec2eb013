//! Canonical S-expressions, as gpg-agent speaks them: `(` and `)` and
//! `<decimal length>:<raw bytes>`, nothing else (no spaces, no display
//! hints, no advanced or transport forms).
//!
//! [`Sexp::parse`] reads exactly one expression and refuses trailing bytes
//! other than NULs (the real agent appends one), lengths beyond the input,
//! and nesting deeper than [`MAX_DEPTH`]; nothing is allocated before its
//! length has been checked against what is left of the input.

/// The deepest nesting accepted.
pub const MAX_DEPTH: usize = 16;

/// One S-expression: an atom or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sexp {
    /// A byte string.
    Atom(Vec<u8>),
    /// A list of expressions.
    List(Vec<Sexp>),
}

/// Why bytes are not a canonical S-expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SexpError {
    /// The input ended inside an expression.
    #[error("truncated S-expression")]
    Truncated,
    /// A byte that has no place there, at this offset.
    #[error("malformed S-expression at byte {0}")]
    Malformed(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("S-expression nested too deeply")]
    TooDeep,
}

impl Sexp {
    /// An atom from bytes.
    pub fn atom(bytes: impl Into<Vec<u8>>) -> Sexp {
        Sexp::Atom(bytes.into())
    }

    /// A list.
    pub fn list(items: impl IntoIterator<Item = Sexp>) -> Sexp {
        Sexp::List(items.into_iter().collect())
    }

    /// Parse exactly one canonical expression (trailing NULs allowed).
    pub fn parse(input: &[u8]) -> Result<Sexp, SexpError> {
        let mut pos = 0;
        let value = parse_at(input, &mut pos, 0)?;
        if input.get(pos..).unwrap_or_default().iter().any(|&b| b != 0) {
            return Err(SexpError::Malformed(pos));
        }
        Ok(value)
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Sexp::Atom(bytes) => {
                out.extend_from_slice(bytes.len().to_string().as_bytes());
                out.push(b':');
                out.extend_from_slice(bytes);
            }
            Sexp::List(items) => {
                out.push(b'(');
                for item in items {
                    item.encode_into(out);
                }
                out.push(b')');
            }
        }
    }

    /// The bytes of an atom.
    pub fn as_atom(&self) -> Option<&[u8]> {
        match self {
            Sexp::Atom(bytes) => Some(bytes),
            Sexp::List(_) => None,
        }
    }

    /// The items of a list.
    pub fn as_list(&self) -> Option<&[Sexp]> {
        match self {
            Sexp::List(items) => Some(items),
            Sexp::Atom(_) => None,
        }
    }

    /// A list's name: its first item, if that is an atom.
    pub fn name(&self) -> Option<&[u8]> {
        self.as_list()?.first()?.as_atom()
    }

    /// The first sub-list of this list whose name is `name`.
    pub fn find(&self, name: &[u8]) -> Option<&Sexp> {
        self.as_list()?
            .iter()
            .skip(1)
            .find(|item| item.name() == Some(name))
    }

    /// The atom after the name of the sub-list `name`: `(name value)`.
    pub fn value(&self, name: &[u8]) -> Option<&[u8]> {
        self.find(name)?.as_list()?.get(1)?.as_atom()
    }
}

fn parse_at(input: &[u8], pos: &mut usize, depth: usize) -> Result<Sexp, SexpError> {
    match input.get(*pos) {
        None => Err(SexpError::Truncated),
        Some(b'(') => {
            if depth >= MAX_DEPTH {
                return Err(SexpError::TooDeep);
            }
            *pos += 1;
            let mut items = Vec::new();
            loop {
                match input.get(*pos) {
                    None => return Err(SexpError::Truncated),
                    Some(b')') => {
                        *pos += 1;
                        return Ok(Sexp::List(items));
                    }
                    Some(_) => items.push(parse_at(input, pos, depth + 1)?),
                }
            }
        }
        Some(b'0') => {
            // Only the empty atom may start with a zero.
            if input.get(*pos + 1) != Some(&b':') {
                return Err(SexpError::Malformed(*pos));
            }
            *pos += 2;
            Ok(Sexp::Atom(Vec::new()))
        }
        Some(b'1'..=b'9') => {
            let start = *pos;
            let mut len: usize = 0;
            loop {
                match input.get(*pos) {
                    None => return Err(SexpError::Truncated),
                    Some(&d @ b'0'..=b'9') => {
                        len = len
                            .checked_mul(10)
                            .and_then(|l| l.checked_add(usize::from(d - b'0')))
                            .ok_or(SexpError::Malformed(start))?;
                        *pos += 1;
                    }
                    Some(b':') => {
                        *pos += 1;
                        break;
                    }
                    Some(_) => return Err(SexpError::Malformed(*pos)),
                }
            }
            let end = pos.checked_add(len).ok_or(SexpError::Malformed(start))?;
            let bytes = input.get(*pos..end).ok_or(SexpError::Truncated)?;
            *pos = end;
            Ok(Sexp::Atom(bytes.to_vec()))
        }
        Some(_) => Err(SexpError::Malformed(*pos)),
    }
}

/// An unsigned big-endian number without its leading zero bytes.
pub fn unsigned(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or_default()
}

/// An unsigned big-endian number as libgcrypt prints an MPI: leading
/// zeros stripped, then one `00` added if the top bit is set.
pub fn mpi(bytes: &[u8]) -> Vec<u8> {
    let trimmed = unsigned(bytes);
    let mut out = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_some_and(|&b| b & 0x80 != 0) {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_of_what_the_agent_sends() {
        let text = b"(7:sig-val(5:eddsa(1:r3:abc)(1:s3:def)))";
        let sexp = Sexp::parse(text).expect("parses");
        assert_eq!(sexp.encode(), text);
        assert_eq!(Sexp::parse(b"(0:)").expect("empty atom").encode(), b"(0:)");
        assert_eq!(sexp.name(), Some(&b"sig-val"[..]));
        let eddsa = sexp.find(b"eddsa").expect("eddsa");
        assert_eq!(eddsa.value(b"r"), Some(&b"abc"[..]));
        assert_eq!(eddsa.value(b"s"), Some(&b"def"[..]));
    }

    #[test]
    fn binary_atoms_and_a_trailing_nul() {
        let mut text = b"(5:value3:".to_vec();
        text.extend_from_slice(&[0, b')', b'(']);
        text.extend_from_slice(b")\0");
        let sexp = Sexp::parse(&text).expect("parses");
        assert_eq!(sexp.value(b"value"), None, "value is the list's name here");
        assert_eq!(
            sexp.as_list().expect("list")[1].as_atom(),
            Some(&[0, b')', b'('][..])
        );
    }

    #[test]
    fn malformed_inputs_are_refused() {
        for bad in [
            &b""[..],
            b"(",
            b"(3:ab)",
            b"(3:abc",
            b"(a)",
            b"(1:a))",
            b"(1:a)x",
            b"99999999999999999999999:",
            b"(01:a)",
        ] {
            assert!(
                Sexp::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let deep = "(".repeat(MAX_DEPTH + 1) + &")".repeat(MAX_DEPTH + 1);
        assert_eq!(Sexp::parse(deep.as_bytes()), Err(SexpError::TooDeep));
    }

    #[test]
    fn mpis_as_libgcrypt_prints_them() {
        assert_eq!(mpi(&[0, 0, 0x7f]), vec![0x7f]);
        assert_eq!(mpi(&[0x80, 1]), vec![0, 0x80, 1]);
        assert_eq!(mpi(&[0, 0xc5]), vec![0, 0xc5]);
    }
}
