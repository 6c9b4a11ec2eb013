//! UDF strings: parsing never panics, and a parsed UDF's presentation
//! parses back to the same UDF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_protocol::udf::{Udf, name::ConnectUri};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(udf) = Udf::parse(text) {
        let shown = udf.to_string_bits(udf.bits());
        let again = Udf::parse(&shown).expect("a presentation parses");
        assert_eq!(again, udf);
        assert_eq!(again.to_string_bits(again.bits()), shown);
    }
    if let Ok(uri) = ConnectUri::parse(text) {
        assert_eq!(ConnectUri::parse(&uri.to_string()).expect("parses"), uri);
    }
});
