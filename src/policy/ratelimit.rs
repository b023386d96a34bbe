//! Exact, lock-free GCRA rate limiting shared by all shards.
