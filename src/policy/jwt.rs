//! JSON Web Token verification (RFC 7515/7519, RFC 8725).
