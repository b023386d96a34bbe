#!/bin/sh
# Regenerates the JWT test keys in this directory (OpenSSL 3, python3). Test material only.
set -eu
cd "$(dirname "$0")"

for name in rsa rsa_other; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $name.key.pem
  openssl pkey -in $name.key.pem -pubout -out $name.pub.pem
done
openssl rsa -in rsa.key.pem -RSAPublicKey_out -out rsa.pkcs1.pub.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec256.key.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out ec384.key.pem
openssl genpkey -algorithm ED25519 -out ed25519.key.pem
for name in ec256 ec384 ed25519; do
  openssl pkey -in $name.key.pem -pubout -out $name.pub.pem
done

# jwks.json: the public halves of rsa (RS256 and PS256), ec256, ec384 and ed25519 as JWKs.
python3 - <<'PY'
import base64, json, subprocess

def der(path):
    return subprocess.run(["openssl", "pkey", "-pubin", "-in", path, "-outform", "DER"],
                          check=True, capture_output=True).stdout

def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

def rsa_ne(path):
    text = subprocess.run(["openssl", "rsa", "-pubin", "-in", path, "-noout", "-modulus"],
                          check=True, capture_output=True, text=True).stdout
    n = bytes.fromhex(text.strip().split("=", 1)[1])
    return b64(n), "AQAB"

n, e = rsa_ne("rsa.pub.pem")
ec256 = der("ec256.pub.pem")[-65:]
ec384 = der("ec384.pub.pem")[-97:]
ed = der("ed25519.pub.pem")[-32:]
keys = [
    {"kty": "RSA", "kid": "rsa-rs256", "alg": "RS256", "use": "sig", "n": n, "e": e},
    {"kty": "RSA", "kid": "rsa-ps256", "alg": "PS256", "use": "sig", "n": n, "e": e},
    {"kty": "EC", "kid": "ec256", "crv": "P-256", "x": b64(ec256[1:33]), "y": b64(ec256[33:])},
    {"kty": "EC", "kid": "ec384", "alg": "ES384", "crv": "P-384", "x": b64(ec384[1:49]), "y": b64(ec384[49:])},
    {"kty": "OKP", "kid": "ed25519", "crv": "Ed25519", "x": b64(ed)},
]
with open("jwks.json", "w") as f:
    json.dump({"keys": keys}, f, indent=2)
    f.write("\n")
PY
