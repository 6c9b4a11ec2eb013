//! Leaving no secret behind on a thread's stack.
//!
//! Heap memory holding a secret is wiped when it is freed (`Zeroizing`,
//! and the zeroing allocator), but a parser's stack frames are not: the
//! PEM and base64 decoders under `ssh_key::PrivateKey::from_openssh` copy
//! lines of the key's text into stack buffers, and a worker thread's
//! stack keeps them until deeper calls happen to write over them (the
//! memory test found a line of a key there). [`then_wipe_stack`] runs such
//! work one call down and then zeroes the stack below its own frame,
//! where the work's frames were.

use zeroize::Zeroize as _;

/// How much of the stack below the caller is wiped: far more than a key
/// parser's frames use, far less than a worker thread's 2 MiB.
const WIPED: usize = 64 * 1024;

/// Run `work`, then wipe the stack it used.
#[inline(never)]
pub(crate) fn then_wipe_stack<T>(work: impl FnOnce() -> T) -> T {
    let out = one_call_down(work);
    wipe();
    out
}

#[inline(never)]
fn one_call_down<T>(work: impl FnOnce() -> T) -> T {
    work()
}

#[inline(never)]
fn wipe() {
    let mut area = [0u8; WIPED];
    area.zeroize();
    std::hint::black_box(&area);
}
