#!/usr/bin/env bash
# Runs the multicloud example: two federated trust domains on loopback, an
# mTLS client in one and an mTLS server in the other, and a CA rotation in
# the server's trust domain while the client keeps connecting.
#
# Run from the repository root:   examples/multicloud/run.sh
#
# Environment:
#   MULTICLOUD_PROFILE=debug   use a debug build instead of a release build
#   MULTICLOUD_BIN_DIR=DIR     skip the build and run tessera, multicloud-client
#                              and multicloud-server from DIR
#   MULTICLOUD_KEEP=1          keep the temporary directory with the logs
#
# Exit status 0 when every handshake succeeded, 1 otherwise.
set -euo pipefail

# Resolved before the cd, so that a relative path works from anywhere.
if [ -n "${MULTICLOUD_BIN_DIR:-}" ]; then
    bin_dir=$(realpath "$MULTICLOUD_BIN_DIR")
fi
cd "$(dirname "$0")/../.."

readonly CLIENT_DOMAIN=aws.example
readonly SERVER_DOMAIN=gcp.example
readonly CLIENT_ID="spiffe://$CLIENT_DOMAIN/checkout"
readonly SERVER_ID="spiffe://$SERVER_DOMAIN/payments"
# Seconds to wait for each step before giving up.
readonly STEP_TIMEOUT=30
# Seconds of traffic after the server presents an SVID of the new CA.
readonly TRAFFIC_AFTER_ROTATION=3

log() { printf '==> %s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# ---- build --------------------------------------------------------------

if [ -n "${bin_dir:-}" ]; then
    log "using the programs in $bin_dir"
else
    profile=${MULTICLOUD_PROFILE:-release}
    case "$profile" in
    release) build_flags=(--release) ;;
    debug) build_flags=() ;;
    *) fail "MULTICLOUD_PROFILE must be release or debug, not '$profile'" ;;
    esac
    log "building tessera and the example programs ($profile)"
    "${CARGO:-cargo}" build "${build_flags[@]}" --locked --quiet \
        -p tessera-cli -p tessera-example-multicloud
    bin_dir=$(realpath "${CARGO_TARGET_DIR:-target}/$profile")
fi
tessera=$bin_dir/tessera
client_bin=$bin_dir/multicloud-client
server_bin=$bin_dir/multicloud-server
for program in "$tessera" "$client_bin" "$server_bin"; do
    [ -x "$program" ] || fail "$program is missing; build it or unset MULTICLOUD_BIN_DIR"
done

# ---- processes and cleanup ----------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/tessera-multicloud.XXXXXX")
pids=()
# Set to 0 on success and on Ctrl-C, when the logs are of no interest.
show_logs=1

cleanup() {
    # SIGTERM in reverse start order: workloads, then agents, then servers.
    local i
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ "$show_logs" -eq 1 ]; then
        for file in "$work"/*.log "$work"/*/*.log; do
            [ -f "$file" ] || continue
            printf -- '---- last lines of %s ----\n' "${file#"$work"/}" >&2
            tail -n 20 "$file" >&2
        done
    fi
    if [ "${MULTICLOUD_KEEP:-}" = 1 ]; then
        log "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'show_logs=0; exit 130' INT
trap 'exit 143' TERM

# start LOG COMMAND...: runs COMMAND in the background with its output in
# LOG and records its PID in $last_pid.
start() {
    local log_file=$1
    shift
    "$@" >"$log_file" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}

# wait_until WHAT PID COMMAND...: runs COMMAND until it succeeds, failing
# when process PID exits or STEP_TIMEOUT passes.
wait_until() {
    local what=$1 pid=$2
    shift 2
    local deadline=$((SECONDS + STEP_TIMEOUT))
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || fail "a process exited while waiting for $what"
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${STEP_TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

# json_string FIELD: reads the string FIELD of pretty-printed JSON on stdin.
json_string() {
    sed -n "s/^ *\"$1\": \"\([^\"]*\)\".*/\1/p"
}

# ---- trust domains ------------------------------------------------------

# admin DOMAIN ARGS...: runs a tessera admin command on DOMAIN's server.
admin() {
    local domain=$1
    shift
    "$tessera" "$@" --admin-socket "$work/$domain/server/admin.sock"
}

server_ready() {
    local dir=$1
    [ -f "$dir/server/bundle_endpoint.addr" ] && [ -f "$dir/server/agent_api.addr" ] &&
        "$tessera" healthcheck --admin-socket "$dir/server/admin.sock" >/dev/null 2>&1
}

# start_domain DOMAIN: starts a server with an https_spiffe bundle endpoint
# and one agent, and stores the agent's SPIFFE ID in $agent_id.
start_domain() {
    local domain=$1
    local dir=$work/$domain
    # The server warns about a data directory that other users can read.
    mkdir -p -m 700 "$dir/server" "$dir/agent"
    cat >"$dir/server.toml" <<EOF
trust_domain = "$domain"
data_dir = "$dir/server"
# Port 0 picks a free port; the server writes it to agent_api.addr.
bind_address = "127.0.0.1:0"
admin_socket = "$dir/server/admin.sock"
log_level = "info"

[svid]
# Short-lived SVIDs, so that workloads move to a new CA within seconds of
# its activation. The default is 1h.
x509_ttl = "20s"

[federation.bundle_endpoint]
# Written to bundle_endpoint.addr once bound.
address = "127.0.0.1:0"
profile = "https_spiffe"
EOF
    start "$dir/server.log" "$tessera" server run --config "$dir/server.toml"
    wait_until "the server of $domain" "$last_pid" server_ready "$dir"

    local token_json token
    token_json=$(admin "$domain" token generate --output json)
    token=$(json_string token <<<"$token_json")
    agent_id=$(json_string agent_id <<<"$token_json")
    # The join token goes through the environment, not the command line,
    # which other local users can read.
    TESSERA_JOIN_TOKEN=$token start "$dir/agent.log" "$tessera" agent run \
        --trust-domain "$domain" \
        --server-address "$(cat "$dir/server/agent_api.addr")" \
        --data-dir "$dir/agent" \
        --trust-bundle "$dir/server/bundle.pem" \
        --log-level info
    wait_until "the Workload API of $domain" "$last_pid" test -S "$dir/agent/public/api.sock"
    log "$domain: server on $(cat "$dir/server/agent_api.addr"), bundle endpoint on" \
        "$(cat "$dir/server/bundle_endpoint.addr"), agent $agent_id"
}

# federate LOCAL PEER: creates LOCAL's relationship with PEER, bootstrapped
# with PEER's bundle file, and fetches PEER's bundle once.
federate() {
    local local_domain=$1 peer=$2
    local peer_dir=$work/$peer
    admin "$local_domain" federation create --trust-domain "$peer" \
        --bundle-endpoint-url "https://$(cat "$peer_dir/server/bundle_endpoint.addr")/" \
        --trust-bundle "$peer_dir/server/bundle.pem" >/dev/null
    admin "$local_domain" federation refresh --trust-domain "$peer" >/dev/null
    log "$local_domain fetched the bundle of $peer from its bundle endpoint"
}

log "working directory: $work"
start_domain "$CLIENT_DOMAIN"
client_agent=$agent_id
start_domain "$SERVER_DOMAIN"
server_agent=$agent_id

federate "$CLIENT_DOMAIN" "$SERVER_DOMAIN"
federate "$SERVER_DOMAIN" "$CLIENT_DOMAIN"

# Each entry matches one program run by this user, and federates with the
# peer's trust domain so that the workload receives the peer's bundle.
admin "$CLIENT_DOMAIN" entry create --spiffe-id "$CLIENT_ID" --parent-id "$client_agent" \
    --selector "unix:uid:$(id -u)" --selector "unix:path:$client_bin" \
    --federates-with "$SERVER_DOMAIN" >/dev/null
admin "$SERVER_DOMAIN" entry create --spiffe-id "$SERVER_ID" --parent-id "$server_agent" \
    --selector "unix:uid:$(id -u)" --selector "unix:path:$server_bin" \
    --federates-with "$CLIENT_DOMAIN" >/dev/null
log "registered $CLIENT_ID for $client_bin"
log "registered $SERVER_ID for $server_bin"

# ---- workloads ----------------------------------------------------------

# Show the workloads' progress lines as they come, indented. Stopping tail
# ends sed too.
tail -q -n +1 -F "$work/multicloud-server.log" "$work/multicloud-client.log" \
    2> /dev/null > >(sed -u 's/^/    /') &
pids+=($!)

log "starting the mTLS server in $SERVER_DOMAIN"
SPIFFE_ENDPOINT_SOCKET="unix://$work/$SERVER_DOMAIN/agent/public/api.sock" \
    start "$work/multicloud-server.log" "$server_bin" --peer-id "$CLIENT_ID"
wait_until "the mTLS server to listen" "$last_pid" \
    grep -q 'listening on' "$work/multicloud-server.log"
server_address=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$work/multicloud-server.log")

log "starting the mTLS client in $CLIENT_DOMAIN, connecting to $server_address"
SPIFFE_ENDPOINT_SOCKET="unix://$work/$CLIENT_DOMAIN/agent/public/api.sock" \
    start "$work/multicloud-client.log" "$client_bin" \
    --server "$server_address" --peer-id "$SERVER_ID" --interval 100ms --report-every 5s
client_pid=$last_pid
client_log=$work/multicloud-client.log
wait_until "the first mTLS exchange" "$client_pid" grep -q 'the server replied' "$client_log"
# Some traffic with the original CA before the rotation.
sleep 2

# ---- CA rotation --------------------------------------------------------

log "$SERVER_DOMAIN: preparing a new CA"
new_ca=$(admin "$SERVER_DOMAIN" authority prepare --output json | json_string id)
[ -n "$new_ca" ] || fail "tessera authority prepare printed no authority ID"
log "$SERVER_DOMAIN: authority $new_ca is in the bundle and signs after activation"

log "$CLIENT_DOMAIN: refreshing the bundle of $SERVER_DOMAIN"
admin "$CLIENT_DOMAIN" federation refresh --trust-domain "$SERVER_DOMAIN" >/dev/null
wait_until "the client to trust both CAs of $SERVER_DOMAIN" "$client_pid" \
    grep -q "bundle of $SERVER_DOMAIN has 2 X.509 authorities" "$client_log"

log "$SERVER_DOMAIN: activating the new CA"
activated=$(admin "$SERVER_DOMAIN" authority activate)
# The first paragraph names the activated and the retired CA.
sed -n -e '/^$/q' -e 's/^/    /p' <<<"$activated"

# Tessera puts the authority ID in the CA's subject as serialNumber.
wait_until "the server to present an SVID of the new CA" "$client_pid" \
    grep -q "mTLS with $SERVER_ID, whose SVID was issued by .*serialNumber=$new_ca" "$client_log"
log "the server presents an SVID of the new CA; traffic continues for ${TRAFFIC_AFTER_ROTATION}s"
sleep "$TRAFFIC_AFTER_ROTATION"

# ---- result -------------------------------------------------------------

kill -TERM "$client_pid"
client_status=0
wait "$client_pid" || client_status=$?
summary=$(grep 'client: stopped after' "$client_log" || true)
[ -n "$summary" ] || fail "the client exited with status $client_status and no totals"
log "${summary#client: }"
if [ "$client_status" -ne 0 ]; then
    fail "some handshakes failed across the CA rotation"
fi
show_logs=0
log "every handshake succeeded across the CA rotation"
