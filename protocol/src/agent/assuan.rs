//! The Assuan protocol as gpg-agent's server side speaks it, sans-I/O:
//! splitting the client's bytes into lines, percent-decoding, and writing
//! `OK`, `ERR`, `S`, `D` and `INQUIRE` lines.
//!
//! A line is at most [`MAX_LINE`] bytes before its LF (an optional CR
//! included), as libassuan's buffer allows; [`next_line`] refuses a longer
//! one without waiting for its end. `D` data is percent-escaped: `%`, CR
//! and LF always (uppercase hex), and this writer escapes nothing else, so
//! binary bytes go raw; an escape is never split across lines.

/// The longest line accepted, LF excluded (libassuan: 1000 + CR + LF).
pub const MAX_LINE: usize = 1001;

/// The most bytes of content this side writes on one line, LF excluded.
pub const MAX_WRITE: usize = 1000;

/// gpg-error's error source for gpg-agent: every code we send carries it.
pub const SOURCE_AGENT: u32 = 4;

/// gpg-error codes (the low 16 bits) the agent sends.
#[allow(missing_docs, reason = "each is the gpg-error name of its number")]
pub mod code {
    pub const BAD_SECKEY: u32 = 7;
    pub const MISSING_KEY: u32 = 181;
    pub const FORBIDDEN: u32 = 251;
    /// EEXIST as a gpg system error (GPG_ERR_SYSTEM_ERROR | 35).
    pub const EEXIST: u32 = 32803;
    pub const BAD_PASSPHRASE: u32 = 11;
    pub const NO_SECKEY: u32 = 17;
    pub const NOT_FOUND: u32 = 27;
    pub const NOT_SUPPORTED: u32 = 60;
    pub const TRUNCATED: u32 = 74;
    pub const INV_DATA: u32 = 79;
    pub const NO_DATA: u32 = 58;
    pub const NO_PIN_ENTRY: u32 = 85;
    pub const INV_LENGTH: u32 = 139;
    pub const INV_SEXP: u32 = 83;
    pub const UNSUPPORTED_ALGORITHM: u32 = 84;
    pub const CANCELED: u32 = 99;
    pub const NO_SCDAEMON: u32 = 119;
    pub const UNKNOWN_OPTION: u32 = 174;
    pub const FALSE: u32 = 256;
    pub const ASS_LINE_TOO_LONG: u32 = 263;
    pub const ASS_UNKNOWN_CMD: u32 = 275;
    pub const ASS_CANCELED: u32 = 277;
    pub const ASS_PARAMETER: u32 = 280;
    pub const ASS_SYNTAX: u32 = 276;
    pub const TOO_LARGE: u32 = 67;
}

/// The text gpg-agent gives with an error code.
fn description(code: u32) -> &'static str {
    match code {
        code::BAD_SECKEY => "Bad secret key",
        code::MISSING_KEY => "Missing key",
        code::FORBIDDEN => "Forbidden",
        code::EEXIST => "File exists",
        code::BAD_PASSPHRASE => "Bad passphrase",
        code::NO_SECKEY => "No secret key",
        code::NOT_FOUND => "Not found",
        code::NOT_SUPPORTED => "Not supported",
        code::TRUNCATED => "Result truncated",
        code::INV_DATA => "Invalid data",
        code::NO_DATA => "No data",
        code::NO_PIN_ENTRY => "No pinentry",
        code::INV_LENGTH => "Invalid length",
        code::INV_SEXP => "Invalid S-expression",
        code::UNSUPPORTED_ALGORITHM => "Unsupported algorithm",
        code::CANCELED => "Operation cancelled",
        code::NO_SCDAEMON => "No SmartCard daemon",
        code::UNKNOWN_OPTION => "Unknown option",
        code::FALSE => "False",
        code::ASS_LINE_TOO_LONG => "Line passed to IPC too long",
        code::ASS_UNKNOWN_CMD => "Unknown IPC command",
        code::ASS_CANCELED => "IPC call has been cancelled",
        code::ASS_PARAMETER => "IPC parameter error",
        code::ASS_SYNTAX => "IPC syntax error",
        code::TOO_LARGE => "Data too large",
        _ => "Error",
    }
}

/// One line from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A command: its name, uppercased, and the rest of the line (leading
    /// spaces removed, otherwise as sent).
    Command {
        /// `PKSIGN`, `OPTION`, ...
        name: String,
        /// Everything after the name.
        args: Vec<u8>,
    },
    /// `D <data>`, decoded.
    Data(Vec<u8>),
    /// `END`: the end of an inquired answer.
    End,
    /// `CAN`: the client cancels an inquiry.
    Cancel,
    /// An empty line or a `#` comment: ignored.
    Nothing,
}

/// Why the client's bytes are not a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// Longer than [`MAX_LINE`]: the stream cannot be trusted after it.
    #[error("Line passed to IPC too long")]
    TooLong,
    /// A `%` not followed by two hex digits.
    #[error("bad percent escape")]
    BadEscape,
}

/// Take the next line from `buf`: `Ok(None)` if it has no complete line
/// yet, else the line and how many bytes it used.
pub fn next_line(buf: &[u8]) -> Result<Option<(Line, usize)>, LineError> {
    let window = buf.get(..buf.len().min(MAX_LINE + 1)).unwrap_or(buf);
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_LINE {
            Err(LineError::TooLong)
        } else {
            Ok(None)
        };
    };
    let raw = window.get(..end).unwrap_or_default();
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    Ok(Some((parse_line(raw)?, end + 1)))
}

fn parse_line(raw: &[u8]) -> Result<Line, LineError> {
    if raw.is_empty() || raw.starts_with(b"#") {
        return Ok(Line::Nothing);
    }
    if raw == b"D" {
        return Ok(Line::Data(Vec::new()));
    }
    if let Some(data) = raw.strip_prefix(b"D ") {
        return Ok(Line::Data(percent_decode(data)?));
    }
    let split = raw.iter().position(|&b| b == b' ').unwrap_or(raw.len());
    let (name, rest) = raw.split_at(split);
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let args = rest
        .iter()
        .position(|&b| b != b' ')
        .and_then(|start| rest.get(start..))
        .unwrap_or_default()
        .to_vec();
    Ok(match name.as_str() {
        "END" if args.is_empty() => Line::End,
        "CAN" if args.is_empty() => Line::Cancel,
        _ => Line::Command { name, args },
    })
}

/// Decode `%XX` escapes.
pub fn percent_decode(data: &[u8]) -> Result<Vec<u8>, LineError> {
    let mut out = Vec::with_capacity(data.len());
    let mut bytes = data.iter();
    while let Some(&b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(|&c| (c as char).to_digit(16));
            let lo = bytes.next().and_then(|&c| (c as char).to_digit(16));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err(LineError::BadEscape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// Decode a SETKEYDESC-style argument: `+` is a space, then `%XX`.
pub fn plus_decode(data: &[u8]) -> Result<Vec<u8>, LineError> {
    let spaced: Vec<u8> = data
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    percent_decode(&spaced)
}

/// Escape one byte for a `D` line, if it must be.
fn escape(b: u8) -> Option<[u8; 3]> {
    match b {
        b'%' => Some(*b"%25"),
        b'\r' => Some(*b"%0D"),
        b'\n' => Some(*b"%0A"),
        _ => None,
    }
}

/// `D` lines carrying `data`, each at most [`MAX_WRITE`] bytes before its
/// LF, escapes never split.
pub fn data_lines(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 900 * 3 + 8);
    let mut line_len = 0;
    for &b in data {
        let escaped = escape(b);
        let width = if escaped.is_some() { 3 } else { 1 };
        if line_len == 0 || line_len + width > MAX_WRITE {
            if line_len != 0 {
                out.push(b'\n');
            }
            out.extend_from_slice(b"D ");
            line_len = 2;
        }
        match escaped {
            Some(triple) => out.extend_from_slice(&triple),
            None => out.push(b),
        }
        line_len += width;
    }
    if line_len != 0 {
        out.push(b'\n');
    }
    out
}

/// `OK`, with optional text.
pub fn ok(text: &str) -> Vec<u8> {
    if text.is_empty() {
        b"OK\n".to_vec()
    } else {
        format!("OK {}\n", one_line(text)).into_bytes()
    }
}

/// `ERR <code> <description> <GPG Agent>` with the agent's error source.
pub fn err(code: u32) -> Vec<u8> {
    format!(
        "ERR {} {} <GPG Agent>\n",
        (SOURCE_AGENT << 24) | (code & 0xffff),
        description(code)
    )
    .into_bytes()
}

/// `S <keyword> <args>`.
pub fn status(keyword: &str, args: &str) -> Vec<u8> {
    format!("S {keyword} {}\n", one_line(args)).into_bytes()
}

/// `INQUIRE <keyword>`.
pub fn inquire(keyword: &str) -> Vec<u8> {
    format!("INQUIRE {keyword}\n").into_bytes()
}

/// Text for a status or OK line: no line breaks, within the line limit.
fn one_line(text: &str) -> String {
    let mut out: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    while out.len() > MAX_WRITE - 12 {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &[u8]) -> Line {
        next_line(text).expect("valid").expect("complete").0
    }

    #[test]
    fn commands_are_case_insensitive_and_keep_their_arguments() {
        assert_eq!(
            line(b"updatestartuptty\n"),
            Line::Command {
                name: "UPDATESTARTUPTTY".into(),
                args: Vec::new()
            }
        );
        assert_eq!(
            line(b"EXPORT_KEY  ABC def\r\n"),
            Line::Command {
                name: "EXPORT_KEY".into(),
                args: b"ABC def".to_vec()
            }
        );
        assert_eq!(line(b"END\n"), Line::End);
        assert_eq!(line(b"CAN\n"), Line::Cancel);
        assert_eq!(line(b"# comment\n"), Line::Nothing);
        assert_eq!(next_line(b"PKSIGN"), Ok(None));
    }

    #[test]
    fn data_lines_decode_escapes_and_keep_binary() {
        assert_eq!(
            line(b"D a%25b%0A\x00\xff\n"),
            Line::Data(b"a%b\n\x00\xff".to_vec())
        );
        assert_eq!(next_line(b"D %4\n"), Err(LineError::BadEscape));
        assert_eq!(plus_decode(b"a+b%2B").expect("decodes"), b"a b+");
    }

    #[test]
    fn the_line_limit() {
        let mut ok_line = vec![b'x'; MAX_LINE];
        ok_line.push(b'\n');
        assert!(next_line(&ok_line).expect("at the limit").is_some());
        let long = vec![b'x'; MAX_LINE + 1];
        assert_eq!(next_line(&long), Err(LineError::TooLong));
        let mut long_line = vec![b'x'; MAX_LINE + 1];
        long_line.push(b'\n');
        assert_eq!(next_line(&long_line), Err(LineError::TooLong));
    }

    #[test]
    fn written_data_round_trips_within_the_limit() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 256) as u8).collect();
        let written = data_lines(&data);
        let mut back = Vec::new();
        let mut rest = &written[..];
        while let Some((parsed, used)) = next_line(rest).expect("valid") {
            assert!(used - 1 <= MAX_WRITE, "a line of {} bytes", used - 1);
            let Line::Data(chunk) = parsed else {
                panic!("not data")
            };
            back.extend(chunk);
            rest = &rest[used..];
        }
        assert_eq!(back, data);
        assert!(data_lines(&[]).is_empty());
    }

    #[test]
    fn errors_carry_the_agent_source() {
        assert_eq!(
            err(code::NO_SECKEY),
            b"ERR 67108881 No secret key <GPG Agent>\n"
        );
        assert_eq!(
            err(code::ASS_UNKNOWN_CMD),
            b"ERR 67109139 Unknown IPC command <GPG Agent>\n"
        );
        assert_eq!(ok(""), b"OK\n");
        assert_eq!(
            status("KEYINFO", "G D - - - C - - -"),
            b"S KEYINFO G D - - - C - - -\n"
        );
    }
}
