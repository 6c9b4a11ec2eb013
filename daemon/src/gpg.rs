//! The gpg-agent frontend: GnuPG's agent protocol (Assuan) on the socket
//! gpg looks for, with the OpenPGP keys of the Mesh.

pub mod keys;
