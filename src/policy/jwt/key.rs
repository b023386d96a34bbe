//! One verification key bound to exactly one algorithm, checked once at load: RSA moduli of
//! 2048..=8192 bits with a sane exponent and without the ROCA fingerprint, EC points on their
//! curve, HMAC secrets at least as long as the hash. `verify` is the only code that runs per token.

use ring::{agreement, hmac, rand, signature};

use super::alg::{Alg, Family};
use super::der::PublicKey;

pub struct Key {
    pub kid: Option<String>,
    pub alg: Alg,
    material: Material,
}

enum Material {
    Hmac(hmac::Key),
    Rsa {
        n: Box<[u8]>,
        e: Box<[u8]>,
    },
    /// An uncompressed EC point or a raw Ed25519 key, for `ring::signature::UnparsedPublicKey`.
    Curve(Box<[u8]>),
}

impl Key {
    pub fn secret(kid: Option<String>, alg: Alg, secret: &[u8]) -> Result<Key, String> {
        let Some(hmac_alg) = alg.hmac() else {
            return Err(format!(
                "a shared secret can only be used with HS256/HS384/HS512, not {alg}"
            ));
        };
        if secret.len() < alg.min_secret_len() {
            return Err(format!(
                "{alg} secret is {} bytes; it must be at least {} bytes (the hash output size, \
                 RFC 7518 §3.2)",
                secret.len(),
                alg.min_secret_len()
            ));
        }
        Ok(Key { kid, alg, material: Material::Hmac(hmac::Key::new(hmac_alg, secret)) })
    }

    pub fn public(kid: Option<String>, alg: Alg, key: PublicKey) -> Result<Key, String> {
        let material = match (alg.family(), key) {
            (Family::Rsa, PublicKey::Rsa { pss_only: true, .. }) if alg.rsa_pkcs1() => {
                return Err(format!(
                    "the key is restricted to RSASSA-PSS (PS256/384/512), not {alg}"
                ));
            }
            (Family::Rsa, PublicKey::Rsa { n, e, .. }) => {
                check_rsa(&n, &e)?;
                Material::Rsa { n: n.into(), e: e.into() }
            }
            (Family::P256, PublicKey::P256(point)) => {
                check_point(&agreement::ECDH_P256, &point)?;
                Material::Curve(point.into())
            }
            (Family::P384, PublicKey::P384(point)) => {
                check_point(&agreement::ECDH_P384, &point)?;
                Material::Curve(point.into())
            }
            (Family::Ed25519, PublicKey::Ed25519(raw)) => Material::Curve(raw.into()),
            (Family::Hmac, _) => {
                return Err(format!("{alg} needs a shared secret, not a public key"));
            }
            (_, key) => {
                return Err(format!("the key is {}, which cannot verify {alg}", describe(&key)));
            }
        };
        Ok(Key { kid, alg, material })
    }

    pub fn is_symmetric(&self) -> bool {
        matches!(self.material, Material::Hmac(_))
    }

    /// Verifies `signature` over `message` (the ASCII `header.payload`). The caller has already
    /// checked that the token's `alg` is `self.alg`; the algorithm comes from the key, never
    /// from the token.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            // Constant-time comparison of the full tag (ring); a truncated tag never matches.
            Material::Hmac(key) => hmac::verify(key, message, signature).is_ok(),
            Material::Rsa { n, e } => {
                let Some(params) = self.alg.rsa() else { return false };
                signature::RsaPublicKeyComponents { n: &n[..], e: &e[..] }
                    .verify(params, message, signature)
                    .is_ok()
            }
            Material::Curve(point) => {
                let Some((alg, len)) = self.alg.curve() else { return false };
                signature.len() == len
                    && signature::UnparsedPublicKey::new(alg, &point[..])
                        .verify(message, signature)
                        .is_ok()
            }
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

fn describe(key: &PublicKey) -> &'static str {
    match key {
        PublicKey::Rsa { .. } => "an RSA key",
        PublicKey::P256(_) => "a P-256 key (ES256)",
        PublicKey::P384(_) => "a P-384 key (ES384)",
        PublicKey::Ed25519(_) => "an Ed25519 key (EdDSA)",
    }
}

/// The checks ring would otherwise make on every verification, made once with a clear message,
/// plus the ROCA fingerprint (CVE-2017-15361), which ring does not look for.
fn check_rsa(n: &[u8], e: &[u8]) -> Result<(), String> {
    let bits = n.first().map_or(0, |&b| n.len() * 8 - b.leading_zeros() as usize);
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "RSA key is {bits} bits; RFC 7518 requires at least 2048 (at most 8192 supported)"
        ));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA modulus is even; the key is corrupt".into());
    }
    let exponent =
        if e.len() <= 8 { e.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64) } else { u64::MAX };
    if exponent < 3 || exponent & 1 == 0 || exponent > (1 << 33) - 1 {
        return Err(
            "RSA public exponent must be odd and between 3 and 2^33-1 (usually 65537)".into()
        );
    }
    if has_roca_fingerprint(n) {
        return Err("RSA key has the ROCA fingerprint (CVE-2017-15361, weak Infineon key \
                    generation); replace the key"
            .into());
    }
    Ok(())
}

/// Nemec et al., "The Return of Coppersmith's Attack" (CCS 2017): a vulnerable modulus `n`
/// satisfies `n mod p ∈ <65537> (mod p)` for every small prime `p` below, which a random modulus
/// does with probability about 2^-154.
pub fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |acc, &b| (acc * 256 + b as u32) % p);
        // Walk the subgroup generated by 65537 until it closes.
        let g = 65537 % p;
        let mut x = 1u32;
        loop {
            if x == residue {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                return false;
            }
        }
    })
}

/// ring's ECDSA verification only checks the point when a token arrives; an ECDH agreement with
/// a throwaway key runs the same on-curve validation now, so a bad key fails the config load.
fn check_point(alg: &'static agreement::Algorithm, point: &[u8]) -> Result<(), String> {
    let rng = rand::SystemRandom::new();
    let ours = agreement::EphemeralPrivateKey::generate(alg, &rng)
        .map_err(|_| String::from("cannot generate a key to validate the EC point"))?;
    agreement::agree_ephemeral(ours, &agreement::UnparsedPublicKey::new(alg, point), |_| ())
        .map_err(|_| String::from("EC public key is not a valid point on its curve"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roca_fingerprint() {
        use base64::Engine;
        // The modulus of Wycheproof json_web_key_test.json tcId 7 ("kid-rsa-roca-sign").
        let roca = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(
                "AanFpofbj7KjD4Lf-N2hVMKR7yewSyXhhbirIMTGpfYEhZ_lnt5UoK98DnKIgArXGTu3MaW_HhFw16HGaTDU\
                 HqPrId7fe4r11CqRw09yBFuW79V8sYIwHdzCaWflUI6auImYbVfoN9_nD5n8N8SY9DwXw7mwZM9wREPXoDPg\
                 OoIWl6q_MPsp7n0zs3Z5ZaiQWOOzl1S9OhwAfSiiOwz6efnXEaxuTEtPd7BjSx7NaFka8Dx9U7YqXy2RFj1O\
                 9PjyaDGuRh7YXsX3iMUSP_wSyHQg_c_qHRtKUsNSGCT7OZg0hzm2KphtjnayKJvC64vAbROBR4Ubg6Bxg9IQ\
                 VZ-QYyE",
            )
            .unwrap();
        assert!(has_roca_fingerprint(&roca));
        assert!(check_rsa(&roca, &[1, 0, 1]).unwrap_err().contains("ROCA"));
        let mut other = roca.clone();
        other[256] ^= 2;
        assert!(!has_roca_fingerprint(&other));
        assert!(!has_roca_fingerprint(&[0xc5; 256]));
    }

    #[test]
    fn pss_only_keys_refuse_pkcs1_algorithms() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jwt/rsa.pub.pem");
        let key = || match super::super::der::parse_pem(&std::fs::read_to_string(&path).unwrap()) {
            Ok(PublicKey::Rsa { n, e, .. }) => PublicKey::Rsa { n, e, pss_only: true },
            other => panic!("{other:?}"),
        };
        assert!(Key::public(None, Alg::RS256, key()).unwrap_err().contains("RSASSA-PSS"));
        assert!(Key::public(None, Alg::PS384, key()).is_ok());
    }

    #[test]
    fn short_hmac_secrets_are_refused() {
        assert!(Key::secret(None, Alg::HS256, &[7; 31]).unwrap_err().contains("at least 32"));
        assert!(Key::secret(None, Alg::HS384, &[7; 47]).is_err());
        assert!(Key::secret(None, Alg::HS512, &[7; 63]).is_err());
        assert!(Key::secret(None, Alg::HS512, &[7; 64]).is_ok());
        assert!(Key::secret(None, Alg::RS256, &[7; 64]).is_err());
    }
}
