//! The HTTP/1.1 codec, split by job: `parse` (heads and framing), `body` (chunked decoding),
//! `write` (forwarded heads and error responses), `io` (owned-buffer reads and writes).
//! Nothing here knows about routes or upstreams.

pub mod body;
pub mod io;
pub mod parse;
pub mod write;

#[cfg(test)]
mod tests;
