#!/usr/bin/env bash
# bench-acme.sh [ROUNDS] -- time from a server's start to the first TLS
# handshake that gets the certificate it obtained over TLS-ALPN-01, for 1
# name and for 10 names at once, for clace and for Caddy in the same run,
# each against a fresh Pebble (../shared/acme-test/start-pebble.sh, with
# PEBBLE_VA_NOSLEEP=1, no rejected nonces, no authorization reuse).
#
# For 10 names the figure is the time until every name has been served its
# certificate once. ROUNDS (default 3) runs of each case, interleaved;
# the table shows each run and the median.
#
#   CLACE_BIN   default: target/release/clace (cargo build --release)
#   CADDY_BIN   default: /usr/bin/caddy
#   SHARED      default: ../shared relative to the repository
#   BENCH_TIMEOUT  seconds one run may take (default 120)
#   BENCH_SERVERS  which to run (default "clace caddy")
#
# Needs: pebble, caddy, openssl, curl. Everything listens on 127.0.0.1 and is
# stopped when the script ends, whatever the outcome.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$repo/../shared}
CLACE_BIN=${CLACE_BIN:-$repo/target/release/clace}
CADDY_BIN=${CADDY_BIN:-/usr/bin/caddy}
ROUNDS=${1:-3}
TIMEOUT=${BENCH_TIMEOUT:-120}
SERVERS=${BENCH_SERVERS:-clace caddy}
START_PEBBLE=$SHARED/acme-test/start-pebble.sh
EMAIL=admin@example.test

die() { echo "bench-acme.sh: $*" >&2; exit 1; }
[ -x "$START_PEBBLE" ] || die "no $START_PEBBLE (set SHARED)"
for server in $SERVERS; do
    case $server in
    clace) [ -x "$CLACE_BIN" ] || die "no $CLACE_BIN: run cargo build --release, or set CLACE_BIN" ;;
    caddy) [ -x "$CADDY_BIN" ] || die "no $CADDY_BIN: apt-get install -y caddy, or set CADDY_BIN" ;;
    *) die "unknown server '$server' in BENCH_SERVERS (clace, caddy)" ;;
    esac
done
for b in openssl curl; do command -v "$b" >/dev/null || die "missing $b (apt-get install -y $b)"; done
case $ROUNDS in '' | *[!0-9]* | 0) die "ROUNDS must be a positive number" ;; esac

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-acme.XXXXXX")
server_pid=''
pebble_state=''

stop_server() {
    if [ -n "$server_pid" ]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        local i=0
        while kill -0 "$server_pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=''
    fi
}
stop_pebble() {
    if [ -n "$pebble_state" ]; then
        "$START_PEBBLE" stop "$pebble_state" >/dev/null 2>&1 || true
        pebble_state=''
    fi
}
cleanup() {
    stop_server
    stop_pebble
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pick_port, listening, now_ms, median
. "$repo/scripts/bench-lib.sh"

# issuer_of PORT NAME: the issuer of the leaf served for NAME (empty on failure).
issuer_of() {
    openssl s_client -connect "127.0.0.1:$1" -servername "$2" </dev/null 2>/dev/null |
        openssl x509 -noout -issuer 2>/dev/null || true
}

# one_run SERVER COUNT: sets RESULT to the milliseconds from the server's
# start until every name got a Pebble certificate, or "fail". Runs in this
# shell (not in a $(...)), so the EXIT trap knows what to stop.
one_run() {
    local server=$1 count=$2 run tls api mgmt dns cts http caddy_http names=() i v
    run=$(mktemp -d "$work/$server-$count.XXXX")
    for v in tls api mgmt dns cts http caddy_http; do pick_port "$v"; done
    for ((i = 1; i <= count; i++)); do names+=("n$i-$count.test"); done

    pebble_state=$run/pebble
    PEBBLE_PORT=$api PEBBLE_MGMT_PORT=$mgmt PEBBLE_DNS_PORT=$dns \
        PEBBLE_CTS_MGMT_PORT=$cts PEBBLE_HTTP_PORT=$http \
        PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        "$START_PEBBLE" start "$tls" "$pebble_state" >"$run/pebble.env" 2>"$run/pebble.err" ||
        { cat "$run/pebble.err" >&2; die "Pebble did not start"; }
    # shellcheck disable=SC1091
    . "$run/pebble.env"

    local start
    case $server in
    clace)
        local domains
        domains=$(printf '"%s", ' "${names[@]}")
        mkdir -p "$run/clhome" "$run/certs"
        cat >"$run/clace.toml" <<EOF
[http]
host = "127.0.0.1"
port = 0

[https]
host = "127.0.0.1"
port = $tls
cert_location = "$run/certs"
storage_location = "$run/storage"
service_email = "$EMAIL"
acme_directory_url = "$PEBBLE_DIRECTORY"
acme_ca_file = "$PEBBLE_CA_FILE"
domains = [${domains%, }]
EOF
        start=$(now_ms)
        CL_HOME=$run/clhome "$CLACE_BIN" serve -c "$run/clace.toml" >"$run/server.log" 2>&1 </dev/null &
        server_pid=$!
        ;;
    caddy)
        local sites
        sites=$(printf '%s, ' "${names[@]}")
        mkdir -p "$run/caddy"
        cat >"$run/Caddyfile" <<EOF
{
	admin off
	skip_install_trust
	http_port $caddy_http
	https_port $tls
	auto_https disable_redirects
	email $EMAIL
	storage file_system {
		root $run/storage
	}
}

${sites%, } {
	bind 127.0.0.1
	tls {
		issuer acme {
			dir $PEBBLE_DIRECTORY
			trusted_roots $PEBBLE_CA_FILE
			disable_http_challenge
		}
	}
	respond "hello"
}
EOF
        start=$(now_ms)
        HOME=$run/caddy XDG_DATA_HOME=$run/caddy/data XDG_CONFIG_HOME=$run/caddy/config \
            "$CADDY_BIN" run --adapter caddyfile --config "$run/Caddyfile" >"$run/server.log" 2>&1 </dev/null &
        server_pid=$!
        ;;
    esac

    # Every pending name is checked at once (one openssl per name), each
    # check noting the time it saw a Pebble certificate; the result is the
    # latest of those times.
    local pending=("${names[@]}") left pids last=0 t n deadline=$(($(now_ms) + TIMEOUT * 1000)) result=fail
    while :; do
        pids=()
        for n in "${pending[@]}"; do
            (case $(issuer_of "$tls" "$n") in *[Pp]ebble*) now_ms >"$run/ok.$n" ;; esac) &
            pids+=($!)
        done
        wait "${pids[@]}" 2>/dev/null || true
        left=()
        for n in "${pending[@]}"; do
            if [ -s "$run/ok.$n" ]; then
                t=$(cat "$run/ok.$n")
                [ "$t" -le "$last" ] || last=$t
            else
                left+=("$n")
            fi
        done
        if [ "${#left[@]}" -eq 0 ]; then
            result=$((last - start))
            break
        fi
        pending=("${left[@]}")
        kill -0 "$server_pid" 2>/dev/null || { echo "$server exited:" >&2; tail -n 20 "$run/server.log" >&2; break; }
        [ "$(now_ms)" -lt "$deadline" ] || { echo "$server: ${#pending[@]} name(s) not served after ${TIMEOUT}s:" >&2; tail -n 20 "$run/server.log" >&2; break; }
        sleep 0.02
    done
    stop_server
    stop_pebble
    RESULT=$result
}

declare -A runs
case " $SERVERS " in *" clace "*) echo "clace: $CLACE_BIN ($("$CLACE_BIN" version 2>/dev/null || echo '?'))" >&2 ;; esac
case " $SERVERS " in *" caddy "*) echo "caddy: $CADDY_BIN ($("$CADDY_BIN" version 2>/dev/null | cut -d' ' -f1 || echo '?'))" >&2 ;; esac
echo "pebble: $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo '?'), $ROUNDS round(s), $(nproc) cores" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    for count in 1 10; do
        for server in $SERVERS; do
            one_run "$server" "$count"
            case $RESULT in fail) unit='' ;; *) unit=' ms' ;; esac
            echo "round $r: $server, $count name(s): $RESULT$unit" >&2
            runs[$server-$count]="${runs[$server-$count]:-} $RESULT"
        done
    done
done

echo
echo "| server | names | start -> issued certificate served, ms (each run) | median ms |"
echo "| --- | --- | --- | --- |"
for count in 1 10; do
    for server in $SERVERS; do
        each=${runs[$server-$count]# }
        med=$(tr ' ' '\n' <<<"$each" | { grep -E '^[0-9]+$' || true; } | median)
        echo "| $server | $count | ${each// /, } | $med |"
    done
done
