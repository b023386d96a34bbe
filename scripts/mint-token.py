#!/usr/bin/env python3
"""Mint a signed JWT (JWS compact form) for trying out ringgate's [[jwt]] auth.

  scripts/mint-token.py --secret S [--sub alice] [--iss URL] [--aud A ...] [--ttl 3600]
                        [--kid k1] [--claim k=v ...]
  scripts/mint-token.py --alg RS256 --key private.pem [...]

HS256/HS384/HS512 are signed here (standard library only). RS256/384/512,
PS256/384/512, ES256/384/512 and EdDSA are signed by `openssl` (dgst -sign, or
pkeyutl for EdDSA) with a PEM private key; the matching public key for the
gateway's `pem_file` comes from `openssl pkey -in private.pem -pubout`.

Claims: iat = now and exp = now + ttl (--ttl 0: no exp), plus --sub, --iss and
--aud when given (--aud twice or more gives an array). --claim k=v adds or
overrides any claim; v is read as JSON when it parses (42, true, ["a","b"]),
otherwise it is a string. --count N prints N tokens, one a line, each with its
own sub: "{i}" in --sub (or in a --claim value) becomes 0..N-1, a --sub
without "{i}" gets "-{i}" appended, and without --sub they are user-0, user-1, ...

The token goes to stdout; with --decode the header and claims are printed as
JSON on stderr as well.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
# alg -> (openssl digest, extra `openssl dgst` options, ECDSA coordinate size in bytes)
OPENSSL = {
    "RS256": ("sha256", [], None),
    "RS384": ("sha384", [], None),
    "RS512": ("sha512", [], None),
    "PS256": ("sha256", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"], None),
    "PS384": ("sha384", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"], None),
    "PS512": ("sha512", ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"], None),
    "ES256": ("sha256", [], 32),
    "ES384": ("sha384", [], 48),
    "ES512": ("sha512", [], 66),
    "EdDSA": (None, [], None),
}
ALGS = list(HMAC) + list(OPENSSL)
# alg -> key kinds it accepts (EC keys by openssl's curve name)
KEY_KIND = {
    **{a: ("RSA",) for a in ("RS256", "RS384", "RS512")},
    **{a: ("RSA", "RSA-PSS") for a in ("PS256", "PS384", "PS512")},
    "ES256": ("prime256v1",),
    "ES384": ("secp384r1",),
    "ES512": ("secp521r1",),
    "EdDSA": ("Ed25519", "Ed448"),
}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claim_value(text):
    try:
        return json.loads(text)
    except ValueError:
        return text


def ecdsa_der_to_raw(der, size):
    """openssl's DER ECDSA-Sig-Value (SEQUENCE of two INTEGERs) -> r || s, each `size` bytes (JWS form)."""

    def read_len(buf, pos):
        first = buf[pos]
        if first < 0x80:
            return first, pos + 1
        n = first & 0x7F
        return int.from_bytes(buf[pos + 1:pos + 1 + n], "big"), pos + 1 + n

    if not der or der[0] != 0x30:
        raise ValueError("ECDSA signature is not a DER SEQUENCE")
    _, pos = read_len(der, 1)
    out = b""
    for _ in range(2):
        if der[pos] != 0x02:
            raise ValueError("ECDSA signature: expected an INTEGER")
        length, pos = read_len(der, pos + 1)
        value = int.from_bytes(der[pos:pos + length], "big")
        pos += length
        out += value.to_bytes(size, "big")
    return out


class Signer:
    def __init__(self, alg, secret=None, key=None):
        self.alg = alg
        self.secret = secret
        self.key = key
        if alg in OPENSSL:
            self.openssl = shutil.which("openssl")
            if self.openssl is None:
                sys.exit(f"mint-token: {alg} needs the openssl command line tool, which is not on PATH "
                         f"(Debian: apt-get install openssl); HS256/384/512 work without it")
            self.check_key()

    def check_key(self):
        """Refuse a key that is not a private key of the kind `alg` signs with."""
        proc = subprocess.run([self.openssl, "pkey", "-in", self.key, "-noout", "-text_pub"],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"mint-token: {self.key} is not a PEM private key openssl can read:\n"
                     f"{proc.stderr.strip()}")
        text = proc.stdout
        if "Modulus:" in text:
            # an RSA-PSS key (restricted to PSS padding) prints "... PSS parameter restrictions"
            kind = "RSA-PSS" if "PSS parameter restrictions" in text else "RSA"
        elif "ED25519 Public-Key" in text:
            kind = "Ed25519"
        elif "ED448 Public-Key" in text:
            kind = "Ed448"
        else:
            curve = [line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("ASN1 OID:")]
            kind = curve[0] if curve else "unknown"
        want = KEY_KIND[self.alg]
        if kind not in want:
            sys.exit(f"mint-token: {self.alg} needs a private key of type {' or '.join(want)}; "
                     f"{self.key} is {kind}")

    def sign(self, signing_input):
        if self.alg in HMAC:
            return hmac.new(self.secret, signing_input, HMAC[self.alg]).digest()
        digest, opts, ec_size = OPENSSL[self.alg]
        if digest is None:
            # EdDSA signs the message itself (no pre-hash); pkeyutl needs it in a file for that.
            with tempfile.NamedTemporaryFile(prefix="mint-token.") as data:
                data.write(signing_input)
                data.flush()
                cmd = [self.openssl, "pkeyutl", "-sign", "-rawin", "-inkey", self.key, "-in", data.name]
                proc = subprocess.run(cmd, capture_output=True)
        else:
            cmd = [self.openssl, "dgst", "-" + digest, "-sign", self.key, *opts]
            proc = subprocess.run(cmd, input=signing_input, capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"mint-token: {' '.join(cmd)} failed:\n{proc.stderr.decode(errors='replace').strip()}")
        sig = proc.stdout
        if ec_size:
            sig = ecdsa_der_to_raw(sig, ec_size)
        return sig


def build_claims(args, index, now):
    def fill(text):
        return text.replace("{i}", str(index)) if index is not None else text

    claims = {}
    sub = args.sub
    if sub is None and index is not None:
        sub = "user"
    if sub is not None:
        if index is not None and "{i}" not in sub:
            sub += "-{i}"
        claims["sub"] = fill(sub)
    if args.iss is not None:
        claims["iss"] = args.iss
    if args.aud:
        claims["aud"] = args.aud[0] if len(args.aud) == 1 else args.aud
    claims["iat"] = now
    if args.ttl > 0:
        claims["exp"] = now + args.ttl
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep or not name:
            sys.exit(f"mint-token: --claim wants NAME=VALUE, got {item!r}")
        claims[name] = claim_value(fill(value))
    return claims


def mint(signer, header, claims):
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode())).encode("ascii")
    return signing_input.decode("ascii") + "." + b64url(signer.sign(signing_input))


def main():
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: scripts/mint-token.py --secret \"$(cat secret.txt)\" --sub alice --iss https://issuer.test --aud orders",
    )
    parser.add_argument("--alg", default="HS256", choices=ALGS, metavar="ALG",
                        help="HS256 (default), HS384, HS512, RS256/384/512, PS256/384/512, ES256/384/512 or EdDSA")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--secret", help="HMAC secret (HS*), as text")
    secret.add_argument("--secret-base64", help="HMAC secret (HS*), base64 or base64url encoded")
    parser.add_argument("--key", help="PEM private key file (RS*, PS*, ES*, EdDSA)")
    parser.add_argument("--sub", help="subject claim")
    parser.add_argument("--iss", help="issuer claim")
    parser.add_argument("--aud", action="append", default=[], help="audience; repeat for several")
    parser.add_argument("--ttl", type=int, default=3600,
                        help="seconds until exp (default 3600; 0 leaves exp out)")
    parser.add_argument("--kid", help="key id, put in the header")
    parser.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE",
                        help="extra claim (repeatable); VALUE is JSON if it parses, else a string")
    parser.add_argument("--count", type=int, default=None, metavar="N",
                        help="print N tokens, one a line, with distinct subjects")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="parallel openssl processes with --count (default: CPUs)")
    parser.add_argument("--decode", action="store_true", help="also print header and claims on stderr")
    args = parser.parse_args()

    if args.alg in HMAC:
        if args.key:
            parser.error(f"--key is for asymmetric algorithms; {args.alg} takes --secret or --secret-base64")
        if args.secret is not None:
            key = args.secret.encode()
        elif args.secret_base64 is not None:
            text = args.secret_base64.strip().replace("-", "+").replace("_", "/")
            try:
                key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            except ValueError:
                parser.error("--secret-base64 is not valid base64")
        else:
            parser.error(f"{args.alg} needs --secret or --secret-base64")
        if not key:
            parser.error("the secret is empty")
        min_len = HMAC[args.alg]().digest_size
        if len(key) < min_len:
            print(f"mint-token: warning: the {args.alg} secret is {len(key)} bytes; RFC 7518 (and ringgate's "
                  f"config) want at least {min_len}", file=sys.stderr)
        signer = Signer(args.alg, secret=key)
    else:
        if args.secret is not None or args.secret_base64 is not None:
            parser.error(f"{args.alg} signs with --key private.pem, not a secret")
        if not args.key:
            parser.error(f"{args.alg} needs --key private.pem")
        if not os.path.isfile(args.key):
            parser.error(f"--key {args.key}: no such file")
        signer = Signer(args.alg, key=args.key)
    if args.ttl < 0:
        parser.error("--ttl must be >= 0")
    if args.count is not None and args.count < 1:
        parser.error("--count must be >= 1")

    header = {"alg": args.alg, "typ": "JWT"}
    if args.kid is not None:
        header["kid"] = args.kid
    now = int(time.time())

    if args.count is None:
        claims = build_claims(args, None, now)
        token = mint(signer, header, claims)
        if args.decode:
            print(json.dumps(header), file=sys.stderr)
            print(json.dumps(claims), file=sys.stderr)
        print(token)
        return

    all_claims = [build_claims(args, i, now) for i in range(args.count)]
    if args.alg in HMAC or args.jobs <= 1:
        tokens = [mint(signer, header, c) for c in all_claims]
    else:  # one openssl process per token: run a few at once
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            tokens = list(pool.map(lambda c: mint(signer, header, c), all_claims))
    if args.decode:
        print(json.dumps(header), file=sys.stderr)
        for c in all_claims:
            print(json.dumps(c), file=sys.stderr)
    sys.stdout.write("".join(t + "\n" for t in tokens))


if __name__ == "__main__":
    main()
