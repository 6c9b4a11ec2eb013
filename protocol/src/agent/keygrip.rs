//! Keygrips: the 20-byte names gpg and gpg-agent give public keys
//! (libgcrypt's `gcry_pk_get_keygrip`), which gpg computes from its
//! keyring and the agent must compute identically.
//!
//! RSA: SHA-1 of the modulus as libgcrypt prints it (leading zeros
//! stripped, one `00` added when the top bit is set). ECC: SHA-1 of the
//! canonical items `(1:p..)(1:a..)(1:b..)(1:g..)(1:n..)(1:q..)` of the
//! curve's parameters and the public point, where Ed25519 and Curve25519
//! points lose their `40` prefix and `g` is always `04||Gx||Gy`. The
//! Ed25519 trap: libgcrypt's table holds a = -1 and b = -d, and the grip
//! hashes those magnitudes unreduced (a = `01`, b = `2DFC...874A`), not
//! p - 1 and p - d. Verified in research against `gpg --with-keygrip`;
//! the tests carry those vectors.

use sha1::{Digest as _, Sha1};

use crate::agent::sexp::{Sexp, mpi, unsigned};

/// A keygrip.
pub type Keygrip = [u8; 20];

/// The curves gpg-agent keys use here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// EdDSA over edwards25519 (`Ed25519`).
    Ed25519,
    /// ECDH over Curve25519 (`Curve25519`, `cv25519`).
    Curve25519,
    /// NIST P-256.
    NistP256,
}

/// (p, a, b, Gx, Gy, n) as libgcrypt's keygrip hashes them, hex.
fn parameters(curve: Curve) -> [&'static str; 6] {
    const P25519: &str = "7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFED";
    const N25519: &str = "1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED";
    match curve {
        Curve::Ed25519 => [
            P25519,
            "01",
            "2DFC9311D490018C7338BF8688861767FF8FF5B2BEBE27548A14B235ECA6874A",
            "216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A",
            "6666666666666666666666666666666666666666666666666666666666666658",
            N25519,
        ],
        Curve::Curve25519 => [
            P25519,
            "01DB41",
            "01",
            "0000000000000000000000000000000000000000000000000000000000000009",
            "20AE19A1B8A086B4E01EDD2C7748D14C923D4D7E6D7C61B229E9C5A27ECED3D9",
            N25519,
        ],
        Curve::NistP256 => [
            "FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF",
            "FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC",
            "5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B",
            "6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296",
            "4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5",
            "FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551",
        ],
    }
}

/// Hex, as gpg writes keygrips and digests: `None` unless every pair of
/// characters is a hex byte.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    // (from_str_radix alone would take a sign: "+f".)
    if !text.len().is_multiple_of(2) || !text.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The built-in curve constants, which are valid hex.
fn unhex(text: &str) -> Vec<u8> {
    decode_hex(text).unwrap_or_default()
}

/// The keygrip of an RSA key, from its modulus (big-endian).
pub fn rsa(modulus: &[u8]) -> Keygrip {
    Sha1::digest(mpi(modulus)).into()
}

/// The keygrip of an ECC key, from its public point as OpenPGP and the
/// agent hold it (`40||x` for the 25519 curves, `04||X||Y` for NIST).
pub fn ecc(curve: Curve, point: &[u8]) -> Keygrip {
    let [p, a, b, gx, gy, n] = parameters(curve);
    let mut g = vec![4];
    g.extend(unhex(gx));
    g.extend(unhex(gy));
    let q = match curve {
        Curve::Ed25519 | Curve::Curve25519 => match point {
            [0x40, rest @ ..] => rest,
            other => other,
        },
        Curve::NistP256 => point,
    };
    let mut hasher = Sha1::new();
    for (name, value) in [
        ("p", unhex(p)),
        ("a", unhex(a)),
        ("b", unhex(b)),
        ("g", g),
        ("n", unhex(n)),
    ] {
        let value = unsigned(&value).to_vec();
        hasher.update(Sexp::list([Sexp::atom(name), Sexp::atom(value)]).encode());
    }
    hasher.update(Sexp::list([Sexp::atom("q"), Sexp::atom(q)]).encode());
    hasher.finalize().into()
}

/// A keygrip as gpg writes it: 40 uppercase hex digits.
pub fn to_hex(grip: &Keygrip) -> String {
    grip.iter().map(|b| format!("{b:02X}")).collect()
}

/// Parse 40 hex digits (either case).
pub fn from_hex(text: &str) -> Option<Keygrip> {
    if text.len() != 40 {
        return None;
    }
    decode_hex(text)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors from research/gpg-agent.md §4, each checked there against
    // `gpg --with-keygrip -K`.

    #[test]
    fn ecc_vectors() {
        let cases = [
            (
                Curve::Ed25519,
                "403C39B8A41ABE1758FCD6B64125756340DE20C801DFC41DE88BB9D03D13D4A396",
                "3785363171B8C767E03F785B0D96D1EA1AB1DB30",
            ),
            (
                Curve::Curve25519,
                "40993E6FC062AFC1DBBA1033A01D474AC1F6C6017BE499C679EF11299DD41D3E0D",
                "903394B0A5182815FAE7B001290E51AE9BFC25FB",
            ),
            (
                Curve::NistP256,
                "0462F5CF4E925D7BF03169C3E4654D913386672680442B0667097FAD9998F6218F\
                 1C4BF0C2CE061D25C184B0A574A0D26AAA2BC02CECA2E553AD2F5CF3A771EFE6",
                "C3AD30D128FCFC2A24BDA4C975ACAD5A6C3E6364",
            ),
            (
                Curve::NistP256,
                "04DE1B46B017CC68CEC9C987EDA2B6796B1ACB6681CBA76ECFA2A1BC41817B1A99\
                 1274E9865D83562324238EB5AACF7E188A36FBE1624983C65A4A8CA04F8CDB24",
                "B60EF5AF3A3FE891E3053304FFEB98A59B65B1B9",
            ),
        ];
        for (curve, point, grip) in cases {
            assert_eq!(to_hex(&ecc(curve, &unhex(point))), grip, "{curve:?}");
        }
    }

    #[test]
    fn rsa_vectors() {
        let n1024 = "C5E57C4F53F9BCE12F42EE4D2743E8D9BA4F7A5F811393ADBA72EA4542F111B1\
                     5D084C7EC9FC050EB988D5BE9DD1E9D69A39AA02DC24A21564D8DDD04209D875\
                     FDC7D4309477017D90FA4556BAAAAC974816E95666964394D45E2109DCC57332\
                     D5EDE4021FFA8C45A23724B35955E6191FFE1E4C4E335F4AC48319017EDEB945";
        assert_eq!(
            to_hex(&rsa(&unhex(n1024))),
            "9A16EFDF72F5BDF42102298F515F1F5CDBECA213"
        );
        let n1031 = "62E8D198A8CBF6E454BD9BC0A829FB7AE42B94946F33AF7E495125F8244BF84D\
                     5575B2AF5201B21619E96BC3DF096209269590AA7730E5AA0B19039EFE02FA59\
                     461F54DDC01032DBBBECCEF777335088368768B6D32DBFE2BF98DF348C59195B\
                     9EC83B1716C0BD65AC22F240403BD35B1BDFD50FE03DE3490D4B7EF30BA5625EC1";
        assert_eq!(
            to_hex(&rsa(&unhex(n1031))),
            "9E439B8206FB505DA0E116149D210CF5C9C3C633"
        );
        let n3072 = "D6D1A4DE94BB15AB0AAA0BD7C45BA4C8FB0DA4D419907EBD27CF5BF997893609F2\
                     0053F89EB80CBE956167D69C1698C59BC0181259C157CC4366C6C083C543C6054133\
                     7B8C83F7CF2A2565079E4BC2181A21DA1B8E955E0C3452146FC7E6914F711298D41E\
                     7E0287DBD0917DBB06191B6A8F0C181D987EF1CFFA9585EFFFC06E5886D74DF9CA4C\
                     FCA8F23E89C1F7F5795608033C8A199DD89FB03786E62E5F341E3DD344AF1E348409\
                     5D9EABEF89184E711178978DC99B69257427D44894EED47F123D784D669471F154B9\
                     0A4F21AA7548BDE6D74D64FF30BAFACB8089EEC9B168F3061C319DC960A38DEAC385\
                     EDB2B6469E38809593589C78F419512A9C522790BDBDFD5A6FC57DCBD912789CFBA2\
                     DD39270C766F6D7F3F608861A7683D920FF0B44554E9B06FB5C7A240CB7CCF685294\
                     1EF11521C5B1AC713B5AEAB2DFE27D49B9F5C39FA4802BA203EDD1FCA8224734A0DC\
                     B2B2FC0082CC549E559339FD883A85917BC14E99AC13E7F2058A88794BD070FA77B2\
                     BC3CE40D30EBE4C22F6BF7";
        assert_eq!(
            to_hex(&rsa(&unhex(n3072))),
            "0E81206CA0D04AC78F1029EF5D6F32564785A0B0"
        );
    }

    #[test]
    fn hex_round_trip() {
        let grip = from_hex("3785363171b8c767e03f785b0d96d1ea1ab1db30").expect("hex");
        assert_eq!(to_hex(&grip), "3785363171B8C767E03F785B0D96D1EA1AB1DB30");
        assert_eq!(from_hex("3785"), None);
        assert_eq!(from_hex(&"G".repeat(40)), None);
        assert_eq!(decode_hex("+f"), None);
    }
}
