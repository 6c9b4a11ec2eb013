//! Assuan lines and canonical S-expressions, as the gpg-agent frontend
//! reads them: splitting never panics or reads past the line limit, data
//! written back re-reads to the same bytes, and S-expressions that parse
//! re-encode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::agent::assuan::{self, Line};
use mesh_protocol::agent::sexp::Sexp;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut inquired = Vec::new();
    while let Ok(Some((line, used))) = assuan::next_line(rest) {
        assert!(used >= 1 && used <= assuan::MAX_LINE + 1 && used <= rest.len());
        rest = &rest[used..];
        if let Line::Data(bytes) = line {
            inquired.extend_from_slice(&bytes);
        }
    }
    if let Ok(sexp) = Sexp::parse(&inquired) {
        let encoded = sexp.encode();
        assert_eq!(Sexp::parse(&encoded).as_ref(), Ok(&sexp));
    }
    if let Ok(sexp) = Sexp::parse(data) {
        assert_eq!(Sexp::parse(&sexp.encode()).as_ref(), Ok(&sexp));
    }
    let written = assuan::data_lines(data);
    let mut back = Vec::new();
    let mut rest = &written[..];
    while let Ok(Some((Line::Data(chunk), used))) = assuan::next_line(rest) {
        back.extend(chunk);
        rest = &rest[used..];
    }
    assert_eq!(back, data);
});
