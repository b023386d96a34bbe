//! Codec tests, table-driven over raw bytes: request heads, response heads, chunked bodies, the
//! head writers, and the llhttp corpus in `tests/data/llhttp/` with ringgate's verdict on every
//! case. Rows are `(name, bytes, expect)`; a failing row names itself and shows its bytes.


use super::body::{ChunkError, ChunkedDecoder, Step};
use super::parse::{parse_request, parse_response, Framing, HeadError, HeadLimits, Version};
use super::write::{
    client_framing, error_response, request_head, response_head, ErrorResponse, ForwardInfo, Ids,
};

pub(super) fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

use chunked::{decode_by_place, decode_by_step, Body};
use heads::LIMITS;

mod chunked;
mod heads;
mod llhttp;
mod writers;
