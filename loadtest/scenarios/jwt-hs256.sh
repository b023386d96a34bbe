# shellcheck shell=bash disable=SC2034  # sourced by run.sh, which uses the variables
# Scenario "jwt-hs256": the catch-all route behind HS256 JWT auth and a rate
# limit per consumer that every request is checked against but none reaches.
# wrk and oha send one valid token (exp ten years ahead) on every request.
# nginx proxies plainly (open-source nginx has no JWT), so the ratios compare
# ringgate with JWT + limit against nginx without.
# The HMAC secret is random per run and the token is minted at run time
# (scripts/mint-token.py); nothing secret is stored. See scenarios/plain.sh for
# the variables and functions a scenario defines.

# shellcheck source-path=SCRIPTDIR source=lib/jwt.sh
source "$HERE/scenarios/lib/jwt.sh"

SCENARIO_HEADERS=()  # set by scenario_setup
SCENARIO_NOTES=(
    "ringgate: HS256 JWT (1 token, cache_size $JWT_CACHE_SIZE) + rate limit per consumer ($JWT_LIMIT_REQUESTS/$JWT_LIMIT_WINDOW, never reached) on every request"
    "nginx:    plain proxying, no JWT (open-source nginx has none): ratios are ringgate with JWT + limit vs nginx plain"
)

scenario_setup() {
    JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
    JWT_TOKEN=$("${MINT[@]}" --secret "$JWT_SECRET" --kid k1 --sub bench-client \
        --iss "$JWT_ISSUER" --aud "$JWT_AUDIENCE" --ttl "$JWT_TTL")
    JWT_FORGED=$(jwt_forge "$JWT_TOKEN" "$("${MINT[@]}" --secret "not-$JWT_SECRET" --kid k1 \
        --sub bench-client --iss "$JWT_ISSUER" --aud "$JWT_AUDIENCE" --ttl "$JWT_TTL")")
    SCENARIO_HEADERS=("Authorization: Bearer $JWT_TOKEN")
}

scenario_gateway_routes() {
    jwt_gateway_tables "kid = \"k1\"
alg = \"HS256\"
secret = \"$JWT_SECRET\""
}

scenario_check() { jwt_check "$1" "$JWT_TOKEN" "$JWT_FORGED"; }
