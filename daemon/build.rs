//! Link meshd with packed relative relocations (DT_RELR) on Linux.
//!
//! meshd is a position-independent executable, and the dynamic loader
//! applies each of its ~33,000 relative relocations at start-up. As RELA
//! entries they fill 800 KB that is read in full on every start and stays
//! resident; packed, the same relocations take a few kilobytes. glibc 2.36
//! and binutils 2.38 and later support it; ASLR and RELRO are unchanged.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
