# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "jwt-rs256": the catch-all route behind RS256 JWT auth and a rate
# limit per consumer that every request is checked against but none reaches,
# with 1,000 consumers: 1,000 tokens with distinct subjects, signed with an
# RSA-2048 key made at run time (openssl) in the run's temporary directory;
# the private key is deleted as soon as the tokens are minted.
#
# wrk cycles through the 1,000 tokens (wrk_tokens.lua, round robin). oha
# cannot vary headers per request, so its runs send the first token only; the
# table says so. nginx proxies plainly (open-source nginx has no JWT) and gets
# exactly the same requests, so the ratios compare ringgate with JWT + limit
# against nginx without.

# shellcheck source-path=SCRIPTDIR source=lib/jwt.sh
source "$HERE/scenarios/lib/jwt.sh"

JWT_TOKENS=${JWT_TOKENS:-1000}  # distinct tokens (consumers); override in the environment

SCENARIO_HEADERS=()  # set by scenario_setup
SCENARIO_WRK_LUA="$HERE/wrk_tokens.lua"
SCENARIO_NOTES=(
    "ringgate: RS256 JWT ($JWT_TOKENS tokens/consumers, cache_size $JWT_CACHE_SIZE) + rate limit per consumer ($JWT_LIMIT_REQUESTS/$JWT_LIMIT_WINDOW, never reached) on every request"
    "nginx:    plain proxying, no JWT (open-source nginx has none): ratios are ringgate with JWT + limit vs nginx plain"
    "wrk cycles through all $JWT_TOKENS tokens; oha cannot vary headers, so the oha rows send one token (one consumer)"
)

scenario_setup() {
    local dir=$1
    command -v openssl >/dev/null ||
        die "scenario jwt-rs256 needs openssl (apt-get install openssl) to make its RSA key and sign tokens"
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/jwt-private.pem" 2>/dev/null ||
        die "openssl could not generate an RSA key"
    openssl pkey -in "$dir/jwt-private.pem" -pubout -out "$dir/jwt-public.pem"
    log "minting $JWT_TOKENS RS256 tokens"
    "${MINT[@]}" --alg RS256 --key "$dir/jwt-private.pem" --kid r1 --sub 'consumer-{i}' \
        --iss "$JWT_ISSUER" --aud "$JWT_AUDIENCE" --ttl "$JWT_TTL" --count "$JWT_TOKENS" \
        >"$dir/tokens.txt"
    rm -f "$dir/jwt-private.pem"
    local -a tokens
    mapfile -t tokens <"$dir/tokens.txt"
    ((${#tokens[@]} == JWT_TOKENS)) || die "minted ${#tokens[@]} tokens, expected $JWT_TOKENS"
    JWT_TOKEN=${tokens[0]}
    # Token 0's header and claims with token 1's signature: well formed, wrong signature.
    JWT_FORGED=$(jwt_forge "${tokens[0]}" "${tokens[1]:-${tokens[0]}x}")
    JWT_PUBLIC_PEM="$dir/jwt-public.pem"
    SCENARIO_HEADERS=("Authorization: Bearer $JWT_TOKEN")  # oha, the warm-up check, --idle-conns
    SCENARIO_WRK_ARGS=("$dir/tokens.txt")                  # wrk: all of them, via wrk_tokens.lua
}

scenario_gateway_routes() {
    jwt_gateway_tables "kid = \"r1\"
alg = \"RS256\"
pem_file = \"$JWT_PUBLIC_PEM\""
}

scenario_check() { jwt_check "$1" "$JWT_TOKEN" "$JWT_FORGED"; }
