//! JSON Web Token verification (RFC 7515/7519, RFC 8725 best practices) for bearer
//! authentication: keys parsed once at config load, tokens checked on the request path with no
//! I/O and no shared mutable state. Never fetches anything a token names (`jku`, `x5u`) and never
//! trusts a key a token carries (`jwk`, `x5c`).
//!
//! The rules, in the order `verify` applies them:
//! 1. At most [`MAX_TOKEN_LEN`] bytes; exactly three dot-separated parts (a five-part JWE is
//!    refused); strict base64url.
//! 2. Header: a JSON object; `jku`/`jwk`/`x5u`/`x5c` → [`JwtError::EmbeddedKey`]; any `crit` →
//!    [`JwtError::UnknownCritical`] (we implement no extensions); `typ`, when present, must be
//!    `JWT` or `at+jwt` (RFC 8725 §3.11), else [`JwtError::WrongType`].
//! 3. The configured key decides the algorithm (RFC 8725 §3.1): with a `kid`, only the key with
//!    that kid is considered, and its algorithm must equal the token's `alg`; without one, the
//!    keys configured for the token's `alg` are tried in order, at most [`MAX_KEYS_TRIED`]. So
//!    `alg: none` never verifies and an `HS256` token cannot be checked against an RSA key.
//! 4. Only after the signature verifies is the payload parsed: a JSON object whose `exp` and
//!    `nbf` (numbers) hold at `now` give or take the leeway, whose `iss` equals the configured
//!    issuer, whose `aud` (string or array) names a configured audience, and which carries every
//!    required claim (`null` counts as absent). `aud` is not checked when no audience is
//!    configured (as Envoy), and `iat` is informational (RFC 7519 §4.1.6), so never checked.
//!
//! Members we interpret must appear once in header and payload; other members are ignored.
//! [`TokenCache`] remembers accepted tokens per shard so a repeated token skips steps 2-4.

mod alg;
mod cache;
mod der;
mod jwk;
mod key;
mod token;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::http::parse::is_tchar;

pub use alg::Alg;
pub use cache::{TokenCache, DEFAULT_TTL_SECS};
pub use token::MAX_TOKEN_LEN;

use key::Key;

/// Keys tried for a token without `kid`: bounds the signature checks one token can cost.
pub const MAX_KEYS_TRIED: usize = 4;

/// Validated configuration of one JWT provider (built by the config loader, which parses TOML
/// into this).
#[derive(Clone, Debug)]
pub struct JwtConfig {
    pub name: String,
    pub issuer: Option<String>,
    /// The token's `aud` (string or array) must contain one of these, if non-empty. When empty,
    /// `aud` is not checked (as Envoy does).
    pub audiences: Vec<String>,
    /// Allowed clock skew for `exp` and `nbf`; [`DEFAULT_LEEWAY`] unless configured.
    pub leeway: Duration,
    pub required_claims: Vec<String>,
    pub keys: Vec<KeySource>,
    /// A JWKS file (RFC 7517 §5). Every JWK must carry `alg`, or a `crv` that fixes it (P-256 →
    /// ES256, P-384 → ES384, Ed25519 → EdDSA); `kid` is optional but must be unique.
    pub jwks_file: Option<PathBuf>,
    /// (claim name, header name), e.g. `("sub", "X-Consumer-Id")`. The request path must remove
    /// these headers from the client's request before adding them, or a client could set them.
    pub forward_claims: Vec<(String, String)>,
    /// Claims the routes' templates use (`{claim.NAME}`), read into [`Claims::templated`].
    pub template_claims: Vec<String>,
}

/// Allowed clock skew when none is configured (Envoy's default).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            name: String::new(),
            issuer: None,
            audiences: Vec::new(),
            leeway: DEFAULT_LEEWAY,
            required_claims: Vec::new(),
            keys: Vec::new(),
            jwks_file: None,
            forward_claims: Vec::new(),
            template_claims: Vec::new(),
        }
    }
}

#[derive(Clone)]
pub enum KeySource {
    /// HS256/384/512 shared secret, at least as long as the hash output.
    Secret { kid: Option<String>, alg: String, secret: Vec<u8> },
    /// RS*/PS*/ES256/ES384/EdDSA public key in PEM: SPKI (`PUBLIC KEY`) or PKCS#1
    /// (`RSA PUBLIC KEY`).
    PemFile { kid: Option<String>, alg: String, path: PathBuf },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Secret { kid, alg, .. } => {
                f.debug_struct("Secret").field("kid", kid).field("alg", alg).finish_non_exhaustive()
            }
            KeySource::PemFile { kid, alg, path } => f
                .debug_struct("PemFile")
                .field("kid", kid)
                .field("alg", alg)
                .field("path", path)
                .finish(),
        }
    }
}

/// What the request path needs from an accepted token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub exp: Option<u64>,
    pub sub: Option<String>,
    /// Values for `forward_claims`, by index: strings as-is, numbers and booleans as JSON text;
    /// `None` when absent, `null`, an array or object, or a string that is not a valid header
    /// value (control characters such as CR/LF, RFC 9110 §5.5).
    pub forwarded: Vec<Option<String>>,
    /// The claims route templates use, (name, value) as `forwarded` reads them; shared by the
    /// token cache and the requests it admits. None when no template uses a claim.
    pub templated: Option<std::rc::Rc<Vec<(String, String)>>>,
}

/// Why a token was refused. [`JwtError::message`] is safe to send to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub enum JwtError {
    TooLarge,
    Malformed,
    UnsupportedAlgorithm,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    MissingClaim,
    UnknownCritical,
    EmbeddedKey,
    WrongType,
}

impl JwtError {
    /// General terms only: never echoes the token or a claim.
    pub fn message(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "token too large",
            JwtError::Malformed => "malformed token",
            JwtError::UnsupportedAlgorithm => "token algorithm not accepted",
            JwtError::UnknownKey => "unknown signing key",
            JwtError::BadSignature => "invalid signature",
            JwtError::Expired => "token expired",
            JwtError::NotYetValid => "token not yet valid",
            JwtError::WrongIssuer => "token issuer not accepted",
            JwtError::WrongAudience => "token audience not accepted",
            JwtError::MissingClaim => "required claim missing",
            JwtError::UnknownCritical => "unsupported critical header parameter",
            JwtError::EmbeddedKey => "token must not carry or point to its own key",
            JwtError::WrongType => "token type not accepted",
        }
    }
}

/// Built once at config load; immutable; `Send + Sync`, shared by all shards through an `Arc`.
pub struct JwtVerifier {
    name: String,
    /// Digest of everything that decides which tokens verify (config and key material), so a
    /// reload keeps a provider's token cache only when it would verify the same tokens.
    fingerprint: u64,
    keys: Vec<Key>,
    issuer: Option<String>,
    audiences: Vec<String>,
    leeway: Duration,
    /// Payload members we read: the registered ones at the `SLOT_*` indices, then each
    /// required or forwarded claim that is not registered.
    claim_names: Vec<String>,
    required_slots: Vec<usize>,
    forward_claims: Vec<(String, String)>,
    forward_slots: Vec<usize>,
    template_claims: Vec<String>,
    template_slots: Vec<usize>,
}

const SLOT_EXP: usize = 0;
const SLOT_NBF: usize = 1;
const SLOT_ISS: usize = 2;
const SLOT_SUB: usize = 3;
const SLOT_AUD: usize = 4;
const REGISTERED: [&str; 5] = ["exp", "nbf", "iss", "sub", "aud"];

/// Headers a claim must never be written into: they frame or route the message.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

impl JwtVerifier {
    /// Reads and parses every key once. Errors are human-readable, one per problem, each starting
    /// with where in this provider's config it is (`keys[1]`, `jwks_file`, `forward_claims[0]`)
    /// so the loader can prefix its own path.
    pub fn from_config(cfg: &JwtConfig) -> Result<JwtVerifier, Vec<String>> {
        use std::hash::{Hash, Hasher};
        let jwks = cfg.jwks_file.as_deref().map(|path| (path, std::fs::read_to_string(path)));
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{cfg:?}").hash(&mut h);
        // Key sources print redacted, so their material is hashed itself.
        for k in &cfg.keys {
            match k {
                KeySource::PemFile { path, .. } => std::fs::read(path).ok().hash(&mut h),
                KeySource::Secret { secret, .. } => secret.hash(&mut h),
            }
        }
        if let Some((_, Ok(text))) = &jwks {
            text.hash(&mut h);
        }
        let mut v = JwtVerifier::build(cfg, jwks)?;
        v.fingerprint = h.finish();
        Ok(v)
    }

    /// See the field: equal fingerprints verify the same tokens the same way.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    fn build(
        cfg: &JwtConfig,
        jwks: Option<(&Path, std::io::Result<String>)>,
    ) -> Result<JwtVerifier, Vec<String>> {
        let mut errors = Vec::new();
        let mut keys: Vec<(String, Key)> = Vec::new();
        for (i, source) in cfg.keys.iter().enumerate() {
            match load_key(source) {
                Ok(key) => keys.push((format!("keys[{i}]"), key)),
                Err(e) => errors.push(format!("keys[{i}]: {e}")),
            }
        }
        if let Some((path, text)) = jwks {
            let at = format!("jwks_file {}", path.display());
            match text {
                Err(e) => errors.push(format!("{at}: cannot read: {e}")),
                Ok(text) => match jwk::parse_jwks(&text) {
                    Ok(set) => keys.extend(
                        set.into_iter().enumerate().map(|(i, k)| (format!("{at}: keys[{i}]"), k)),
                    ),
                    Err(errs) => errors.extend(errs.into_iter().map(|e| format!("{at}: {e}"))),
                },
            }
        }
        if cfg.keys.is_empty() && cfg.jwks_file.is_none() {
            errors.push("no keys: configure `keys` or `jwks_file`".into());
        }
        // Wycheproof "DuplicateKid": with two keys under one kid, which one a token meant is
        // ambiguous.
        for (i, (at, key)) in keys.iter().enumerate() {
            let Some(kid) = &key.kid else { continue };
            if let Some((first, _)) = keys[..i].iter().find(|(_, k)| k.kid.as_ref() == Some(kid)) {
                errors.push(format!(
                    "{at}: kid \"{kid}\" is already used by {first}; kids must be unique"
                ));
            }
        }

        let mut claim_names: Vec<String> = REGISTERED.iter().map(|s| s.to_string()).collect();
        let mut slot_of = |name: &str| match claim_names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                claim_names.push(name.to_string());
                claim_names.len() - 1
            }
        };
        let mut required_slots = Vec::new();
        for (i, name) in cfg.required_claims.iter().enumerate() {
            if name.is_empty() {
                errors.push(format!("required_claims[{i}]: empty claim name"));
            }
            required_slots.push(slot_of(name));
        }
        let mut forward_slots = Vec::new();
        for (i, (claim, header)) in cfg.forward_claims.iter().enumerate() {
            if claim.is_empty() {
                errors.push(format!("forward_claims[{i}]: empty claim name"));
            }
            if header.is_empty() || !header.bytes().all(is_tchar) {
                errors.push(format!(
                    "forward_claims[{i}]: \"{header}\" is not a valid header name (RFC 9110 §5.1)"
                ));
            } else if RESERVED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(header)) {
                errors.push(format!(
                    "forward_claims[{i}]: \"{header}\" frames or routes the request and cannot \
                     carry a claim"
                ));
            }
            forward_slots.push(slot_of(claim));
        }
        let template_slots: Vec<usize> = cfg.template_claims.iter().map(|name| slot_of(name)).collect();

        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(JwtVerifier {
            name: cfg.name.clone(),
            fingerprint: 0,
            keys: keys.into_iter().map(|(_, k)| k).collect(),
            issuer: cfg.issuer.clone(),
            audiences: cfg.audiences.clone(),
            leeway: cfg.leeway,
            claim_names,
            required_slots,
            forward_claims: cfg.forward_claims.clone(),
            forward_slots,
            template_claims: cfg.template_claims.clone(),
            template_slots,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn forward_claims(&self) -> &[(String, String)] {
        &self.forward_claims
    }

    /// A per-shard cache for this verifier, using its leeway. One per verifier per shard.
    pub fn token_cache(&self, capacity: usize) -> TokenCache {
        TokenCache::with_leeway(capacity, self.leeway)
    }

    /// Verifies a compact JWS token at unix time `now` (seconds). No network access ever.
    pub fn verify(&self, token: &[u8], now: u64) -> Result<Claims, JwtError> {
        let payload = self.verify_signature(token)?;
        self.check_claims(&payload, now)
    }

    /// Steps 1-3 of the module rules: returns the decoded payload of a token whose signature one
    /// of our keys verifies, whatever that payload is (a JWS need not hold JSON).
    fn verify_signature(&self, token: &[u8]) -> Result<Vec<u8>, JwtError> {
        let parts = token::split(token)?;
        let header = token::parse_header(&token::decode(parts.header)?)?;
        // Decoded (not parsed) before the signature check, so a mis-encoded payload reads as
        // malformed rather than as a bad signature.
        let payload = token::decode(parts.payload)?;
        let signature = token::decode(parts.signature)?;
        let mut kid_known = false;
        let mut tried = 0;
        for key in &self.keys {
            if let Some(kid) = &header.kid {
                if key.kid.as_ref() != Some(kid) {
                    continue;
                }
                kid_known = true;
            }
            if key.alg != header.alg {
                continue;
            }
            if tried == MAX_KEYS_TRIED {
                break;
            }
            tried += 1;
            if key.verify(parts.signing_input, &signature) {
                return Ok(payload);
            }
        }
        Err(if header.kid.is_some() && !kid_known {
            JwtError::UnknownKey
        } else if tried == 0 {
            JwtError::UnsupportedAlgorithm
        } else {
            JwtError::BadSignature
        })
    }

    /// Step 4: the claims of an authentic payload.
    fn check_claims(&self, payload: &[u8], now: u64) -> Result<Claims, JwtError> {
        let slots = token::parse_object(payload, &self.claim_names)?;
        let leeway = self.leeway.as_secs();
        let exp = slots[SLOT_EXP].as_ref().map(token::numeric_date).transpose()?;
        let nbf = slots[SLOT_NBF].as_ref().map(token::numeric_date).transpose()?;
        let iss = string_claim(&slots[SLOT_ISS])?;
        let sub = string_claim(&slots[SLOT_SUB])?;
        // RFC 7519 §4.1.4: valid only before `exp`; §4.1.5: valid from `nbf` on.
        if exp.is_some_and(|exp| now >= exp.saturating_add(leeway)) {
            return Err(JwtError::Expired);
        }
        if nbf.is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(JwtError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer {
            if iss != Some(issuer.as_str()) {
                return Err(JwtError::WrongIssuer);
            }
        }
        self.check_audience(slots[SLOT_AUD].as_ref())?;
        if self.required_slots.iter().any(|&i| matches!(slots[i], None | Some(Value::Null))) {
            return Err(JwtError::MissingClaim);
        }
        Ok(Claims {
            exp,
            sub: sub.map(str::to_owned),
            forwarded: self
                .forward_slots
                .iter()
                .map(|&i| forwarded_value(slots[i].as_ref()))
                .collect(),
            templated: (!self.template_slots.is_empty()).then(|| {
                let values = self
                    .template_claims
                    .iter()
                    .zip(&self.template_slots)
                    .filter_map(|(name, &i)| Some((name.clone(), forwarded_value(slots[i].as_ref())?)))
                    .collect();
                std::rc::Rc::new(values)
            }),
        })
    }

    /// RFC 7519 §4.1.3: `aud` is a string or an array of strings.
    fn check_audience(&self, aud: Option<&Value>) -> Result<(), JwtError> {
        let matches = |s: &str| self.audiences.iter().any(|a| a == s);
        let found = match aud {
            None => false,
            Some(Value::String(s)) => matches(s),
            Some(Value::Array(items)) => {
                let mut found = false;
                for item in items {
                    let Value::String(s) = item else { return Err(JwtError::Malformed) };
                    found |= matches(s);
                }
                found
            }
            Some(_) => return Err(JwtError::Malformed),
        };
        if self.audiences.is_empty() || found {
            Ok(())
        } else {
            Err(JwtError::WrongAudience)
        }
    }
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("name", &self.name)
            .field("keys", &self.keys)
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .finish_non_exhaustive()
    }
}

fn load_key(source: &KeySource) -> Result<Key, String> {
    let (kid, name) = match source {
        KeySource::Secret { kid, alg, .. } | KeySource::PemFile { kid, alg, .. } => (kid, alg),
    };
    let alg = Alg::from_name(name).ok_or_else(|| {
        format!("unknown alg \"{name}\"; supported: {}", Alg::ALL.map(Alg::name).join(", "))
    })?;
    match source {
        KeySource::Secret { secret, .. } => Key::secret(kid.clone(), alg, secret),
        KeySource::PemFile { path, .. } => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let public = der::parse_pem(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            Key::public(kid.clone(), alg, public).map_err(|e| format!("{}: {e}", path.display()))
        }
    }
}

fn string_claim(value: &Option<Value>) -> Result<Option<&str>, JwtError> {
    match value {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwtError::Malformed),
    }
}

fn forwarded_value(value: Option<&Value>) -> Option<String> {
    match value? {
        // RFC 9110 §5.5: a field value is VCHAR, SP, HTAB and obs-text; CR, LF and NUL would
        // let a claim inject header lines.
        Value::String(s) => {
            s.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)).then(|| s.clone())
        }
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}
