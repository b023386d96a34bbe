//! Edge policies, each built once from its slice of the config and run on the request path
//! without locks held across requests or per-request allocation in steady state:
//! authentication (`jwt`, `apikey`), rate limiting (`ratelimit`), IP rules (`ip`), CORS (`cors`).

pub mod jwt;
pub mod ratelimit;
