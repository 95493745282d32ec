#!/usr/bin/env bash
# bench-cluster.sh [ROUNDS] -- three clace instances on one ACME storage
# (issue 12): the time from their start until EVERY instance serves a
# Pebble-issued certificate for EVERY one of 10 names (n1.test..n10.test),
# and the orders Pebble received (expected: 10, one per name), for each
# storage back end in BENCH_STORAGE.
#
# Each run, on 127.0.0.1 only: a fresh Pebble (../shared/acme-test/
# start-pebble.sh, PEBBLE_VA_NOSLEEP=1, no rejected nonces, no authorization
# reuse) whose tlsPort is HAProxy's frontend; HAProxy in TCP mode, round
# robin across the three instances' HTTPS ports (so each TLS-ALPN-01
# validation reaches whichever instance it picks); three `clace serve`, each
# with its own CL_HOME and cert_location and the same storage_location. For
# postgres, one throwaway cluster for the whole script (initdb/pg_ctl, as the
# `postgres` user when run as root), its `clace` database dropped and made
# again before each run; the password reaches clace through
# $CLACE_BENCH_PGPASSWORD in the URL.
#
# Every instance's own port is checked (not through HAProxy), one openssl
# s_client per (instance, name) still pending, all at once, every
# BENCH_POLL seconds; a pair is done when the leaf's issuer names Pebble.
# The result is the latest of those times, from just before the first
# instance was spawned. Orders and issuances are counted in Pebble's log
# (`Added order`, `Issued certificate serial`) BENCH_QUIET seconds after the
# last pair was done (a duplicate order would come right after the first
# issuances). ROUNDS (default 3) runs per storage, interleaved; the tables
# show each run and the median.
#
#   CLACE_BIN      default: target/release/clace (cargo build --release)
#   BENCH_STORAGE  default: "folder postgres"
#   SHARED         default: ../shared relative to the repository
#   BENCH_TIMEOUT  seconds one run may take (default 180)
#   BENCH_POLL     seconds between two rounds of handshakes (default 0.1)
#   BENCH_QUIET    seconds to wait before counting orders (default 3)
#   BENCH_KEEP=1   keep the work folder (logs of every run)
#   PG_BIN         folder holding initdb/pg_ctl (default: newest
#                  /usr/lib/postgresql/*/bin)
#   HAPROXY_BIN    default: /usr/sbin/haproxy, else haproxy on the PATH
#
# Needs: pebble, haproxy, openssl, curl, and for postgres postgresql
# (apt-get install -y pebble haproxy openssl curl postgresql). Everything is
# stopped and removed when the script ends, whatever the outcome.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$repo/../shared}
CLACE_BIN=${CLACE_BIN:-$repo/target/release/clace}
ROUNDS=${1:-3}
TIMEOUT=${BENCH_TIMEOUT:-180}
POLL=${BENCH_POLL:-0.1}
QUIET=${BENCH_QUIET:-3}
STORAGES=${BENCH_STORAGE:-folder postgres}
START_PEBBLE=$SHARED/acme-test/start-pebble.sh
EMAIL=admin@example.test
INSTANCES=3
NAMES=(n1.test n2.test n3.test n4.test n5.test n6.test n7.test n8.test n9.test n10.test)
PW_VAR=CLACE_BENCH_PGPASSWORD

die() { echo "bench-cluster.sh: $*" >&2; exit 1; }
case $ROUNDS in '' | *[!0-9]* | 0) die "ROUNDS must be a positive number" ;; esac
[ -x "$START_PEBBLE" ] || die "no $START_PEBBLE (set SHARED)"
[ -x "$CLACE_BIN" ] || die "no $CLACE_BIN: run cargo build --release, or set CLACE_BIN"
for b in openssl curl; do command -v "$b" >/dev/null || die "missing $b (apt-get install -y $b)"; done
for b in /usr/bin/pebble /usr/bin/pebble-challtestsrv; do
    [ -x "${PEBBLE_BIN:-$b}" ] || die "missing $b (apt-get install -y pebble)"
done
if [ -z "${HAPROXY_BIN:-}" ]; then
    if [ -x /usr/sbin/haproxy ]; then HAPROXY_BIN=/usr/sbin/haproxy; else HAPROXY_BIN=$(command -v haproxy || true); fi
fi
if [ -z "$HAPROXY_BIN" ] || [ ! -x "$HAPROXY_BIN" ]; then die "missing haproxy (apt-get install -y haproxy, or set HAPROXY_BIN)"; fi
for storage in $STORAGES; do
    case $storage in
    folder) ;;
    postgres)
        if [ -z "${PG_BIN:-}" ]; then
            PG_BIN=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n 1)
        fi
        for b in initdb pg_ctl psql postgres; do
            [ -x "$PG_BIN/$b" ] || die "no $b in '$PG_BIN' (apt-get install -y postgresql, or set PG_BIN to its bin folder)"
        done
        ;;
    *) die "unknown storage '$storage' in BENCH_STORAGE (folder, postgres)" ;;
    esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
instance_pids=()
checker_pids=()
haproxy_pid=''
pebble_state=''
pg_dir=''
pg_running=0

# pg CMD ARGS...: a PostgreSQL binary, as the postgres user when root
# (PostgreSQL refuses to run as root), in the cluster's folder.
pg() {
    local exe=$PG_BIN/$1
    shift
    if [ "$(id -u)" = 0 ]; then
        (cd "$pg_dir" && runuser -u postgres -- "$exe" "$@")
    else
        (cd "$pg_dir" && "$exe" "$@")
    fi
}
stop_checkers() {
    local pid
    for pid in "${checker_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${checker_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    checker_pids=()
}
stop_instances() {
    local pid i
    for pid in "${instance_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${instance_pids[@]}"; do
        i=0
        while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    instance_pids=()
}
stop_haproxy() {
    if [ -n "$haproxy_pid" ]; then
        kill -TERM "$haproxy_pid" 2>/dev/null || true
        local i=0
        while kill -0 "$haproxy_pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        kill -KILL "$haproxy_pid" 2>/dev/null || true
        wait "$haproxy_pid" 2>/dev/null || true
        haproxy_pid=''
    fi
}
stop_pebble() {
    if [ -n "$pebble_state" ]; then
        "$START_PEBBLE" stop "$pebble_state" >/dev/null 2>&1 || true
        pebble_state=''
    fi
}
stop_postgres() {
    if [ "$pg_running" = 1 ]; then
        pg pg_ctl stop -D "$pg_dir/data" -m immediate -w -t 10 >/dev/null 2>&1 || {
            local pid
            pid=$(head -n 1 "$pg_dir/data/postmaster.pid" 2>/dev/null || true)
            [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
        }
        pg_running=0
    fi
}
cleanup() {
    stop_checkers
    stop_instances
    stop_pebble
    stop_haproxy
    stop_postgres
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "kept $work${pg_dir:+ and $pg_dir}" >&2
    else
        rm -rf "$work"
        [ -z "$pg_dir" ] || rm -rf "$pg_dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# pick_port, listening, now_ms, median
. "$repo/scripts/bench-lib.sh"

# issuer_of PORT NAME: the issuer line s_client prints for the leaf served
# for NAME (empty on failure). No trust store is loaded (nothing is
# verified here): loading the system's costs ~50 ms of CPU per call, which
# 30 checks at once would take from the instances on a small machine; this
# way a call costs ~8 ms.
issuer_of() {
    timeout 5 openssl s_client -no-CAfile -no-CApath -no-CAstore -connect "127.0.0.1:$1" -servername "$2" </dev/null 2>/dev/null |
        grep -m 1 '^issuer=' || true
}

# checker PORT NAME FILE DEADLINE_MS: checks what PORT serves for NAME every
# BENCH_POLL seconds until it is a Pebble certificate (then writes the time,
# Unix ms, into FILE) or DEADLINE_MS.
checker() {
    while [ "$(now_ms)" -lt "$4" ]; do
        case $(issuer_of "$1" "$2") in
        *[Pp]ebble*)
            now_ms >"$3.tmp" && mv "$3.tmp" "$3"
            return
            ;;
        esac
        sleep "$POLL"
    done
}

# count_in FILE TEXT: lines of FILE holding TEXT (0 if none or no file).
count_in() { grep -cF -- "$2" "$1" 2>/dev/null || true; }

# One PostgreSQL cluster for the whole script: role `clace` with a password
# (scram-sha-256 over TCP), local socket inside its folder.
pg_port=''
pg_password=''
start_postgres() {
    pick_port pg_port
    pg_password=pw$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
    pg_dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster-pg.XXXXXX")
    mkdir "$pg_dir/sock"
    [ "$(id -u)" != 0 ] || chown -R postgres:postgres "$pg_dir"
    pg initdb -D "$pg_dir/data" -U postgres -E UTF8 --no-locale --no-sync \
        --auth-local=trust --auth-host=scram-sha-256 >"$work/initdb.log" 2>&1 ||
        { cat "$work/initdb.log" >&2; die "initdb failed"; }
    printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$pg_dir/data/pg_hba.conf"
    printf "\nport = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\n" \
        "$pg_port" "$pg_dir/sock" >>"$pg_dir/data/postgresql.conf"
    [ "$(id -u)" != 0 ] || chown postgres:postgres "$pg_dir/data/pg_hba.conf" "$pg_dir/data/postgresql.conf"
    pg_running=1
    pg pg_ctl start -D "$pg_dir/data" -l "$pg_dir/postgres.log" -w -t 30 >/dev/null ||
        { tail -n 20 "$pg_dir/postgres.log" >&2; die "PostgreSQL did not start"; }
    psql_do postgres "CREATE ROLE clace LOGIN PASSWORD '$pg_password'" >/dev/null
}
# psql_do DB SQL: runs SQL as the superuser over the local socket.
psql_do() {
    PGOPTIONS='--client-min-messages=warning' pg psql -X -q -A -t -v ON_ERROR_STOP=1 -U postgres -h "$pg_dir/sock" -p "$pg_port" -d "$1" -c "$2"
}
# A fresh `clace` database (so nothing of the previous run remains).
reset_postgres() {
    psql_do postgres "DROP DATABASE IF EXISTS clace WITH (FORCE)" >/dev/null
    psql_do postgres "CREATE DATABASE clace OWNER clace" >/dev/null
}

# ms_of FILE REGEX: the time (Unix ms) of the first log line of FILE
# matching REGEX (grep -E), from env_logger's `[2026-12-03T10:21:15.123Z ...`
# prefix (empty if none).
ms_of() {
    local ts
    ts=$(grep -m 1 -E -- "$2" "$1" 2>/dev/null | sed -n 's/^\[\([0-9T:.-]*Z\).*/\1/p' || true)
    [ -n "$ts" ] || return 0
    echo $(($(date -d "$ts" +%s%N) / 1000000))
}

# one_run STORAGE ROUND: sets RESULT (ms, or "fail") and DETAIL (a table
# row). Runs in this shell (not in a $(...)), so the EXIT trap knows what to
# stop.
one_run() {
    local storage=$1 round=$2 run front api mgmt dns cts http ports=() i k v
    run=$(mktemp -d "$work/$storage-$round.XXXX")
    # Every port before anything starts.
    for ((i = 0; i < INSTANCES; i++)); do pick_port v; ports+=("$v"); done
    for v in front api mgmt dns cts http; do pick_port "$v"; done

    # HAProxy: TCP pass-through, round robin, a refused connection retried
    # on the next server (as tests/util/haproxy.rs).
    {
        printf 'global\n    maxconn 2000\n\n'
        printf 'defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 30s\n    timeout server 30s\n    retries 3\n    option redispatch 1\n\n'
        printf 'frontend clace\n    bind 127.0.0.1:%s\n    default_backend instances\n\n' "$front"
        printf 'backend instances\n    balance roundrobin\n'
        for ((i = 0; i < INSTANCES; i++)); do printf '    server s%s 127.0.0.1:%s\n' "$i" "${ports[$i]}"; done
    } >"$run/haproxy.cfg"
    "$HAPROXY_BIN" -f "$run/haproxy.cfg" -db >"$run/haproxy.log" 2>&1 </dev/null &
    haproxy_pid=$!
    i=0
    until listening "$front"; do
        i=$((i + 1))
        if [ "$i" -ge 100 ] || ! kill -0 "$haproxy_pid" 2>/dev/null; then
            cat "$run/haproxy.log" >&2
            die "HAProxy did not listen on 127.0.0.1:$front"
        fi
        sleep 0.1
    done

    pebble_state=$run/pebble
    PEBBLE_PORT=$api PEBBLE_MGMT_PORT=$mgmt PEBBLE_DNS_PORT=$dns \
        PEBBLE_CTS_MGMT_PORT=$cts PEBBLE_HTTP_PORT=$http \
        PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
        "$START_PEBBLE" start "$front" "$pebble_state" >"$run/pebble.env" 2>"$run/pebble.err" ||
        { cat "$run/pebble.err" >&2; die "Pebble did not start"; }
    local PEBBLE_DIRECTORY='' PEBBLE_CA_FILE=''
    # shellcheck disable=SC1091
    . "$run/pebble.env"

    local location
    case $storage in
    folder) location="$run/storage" ;;
    postgres)
        reset_postgres
        location="postgres://clace:\$$PW_VAR@127.0.0.1:$pg_port/clace"
        ;;
    esac
    local domains
    domains=$(printf '"%s", ' "${NAMES[@]}")
    for ((k = 0; k < INSTANCES; k++)); do
        mkdir -p "$run/i$k/home" "$run/i$k/certs"
        cat >"$run/i$k/clace.toml" <<EOF
[http]
host = "127.0.0.1"
port = 0

[https]
host = "127.0.0.1"
port = ${ports[$k]}
cert_location = "$run/i$k/certs"
storage_location = "$location"
service_email = "$EMAIL"
acme_directory_url = "$PEBBLE_DIRECTORY"
acme_ca_file = "$PEBBLE_CA_FILE"
domains = [${domains%, }]
EOF
    done

    local start
    start=$(now_ms)
    for ((k = 0; k < INSTANCES; k++)); do
        CL_HOME=$run/i$k/home env "$PW_VAR=$pg_password" \
            "$CLACE_BIN" serve -c "$run/i$k/clace.toml" >"$run/i$k/server.log" 2>&1 </dev/null &
        instance_pids+=($!)
    done

    # One checker per (instance, name) pair, all at once, each on its own
    # (no round waits for the slowest handshake): it notes the time it saw a
    # Pebble certificate and stops. The result is the latest of those times.
    local n t pair pairs=() first='' last=0 done_count deadline=$(($(now_ms) + TIMEOUT * 1000)) result=fail
    for ((k = 0; k < INSTANCES; k++)); do
        for n in "${NAMES[@]}"; do
            pairs+=("$k:$n")
            checker "${ports[$k]}" "$n" "$run/ok.$k.$n" "$deadline" &
            checker_pids+=($!)
        done
    done
    while :; do
        done_count=0
        for pair in "${pairs[@]}"; do [ ! -s "$run/ok.${pair%%:*}.${pair#*:}" ] || done_count=$((done_count + 1)); done
        if [ "$done_count" -eq "${#pairs[@]}" ]; then
            for pair in "${pairs[@]}"; do
                t=$(cat "$run/ok.${pair%%:*}.${pair#*:}")
                [ "$t" -le "$last" ] || last=$t
                if [ -z "$first" ] || [ "$t" -lt "$first" ]; then first=$t; fi
            done
            result=$((last - start))
            break
        fi
        for ((k = 0; k < INSTANCES; k++)); do
            if ! kill -0 "${instance_pids[$k]}" 2>/dev/null; then
                echo "$storage round $round: instance $k exited:" >&2
                tail -n 20 "$run/i$k/server.log" >&2
                break 2
            fi
        done
        if [ "$(now_ms)" -ge "$deadline" ]; then
            local missing=()
            for pair in "${pairs[@]}"; do [ -s "$run/ok.${pair%%:*}.${pair#*:}" ] || missing+=("$pair"); done
            echo "$storage round $round: ${#missing[@]} (instance:name) pair(s) not served after ${TIMEOUT}s: ${missing[*]}" >&2
            for ((k = 0; k < INSTANCES; k++)); do
                echo "--- instance $k (port ${ports[$k]}), last 15 lines ---" >&2
                tail -n 15 "$run/i$k/server.log" >&2
            done
            break
        fi
        sleep 0.05
    done
    stop_checkers
    [ "$result" = fail ] || sleep "$QUIET"

    # What happened, from Pebble's log and the instances' logs.
    local plog=$pebble_state/pebble.log orders issued ordering=0 waits=0 confirmed=0 unconfirmed=0 failed=0 took=0
    orders=$(count_in "$plog" 'Added order')
    issued=$(count_in "$plog" 'Issued certificate serial')
    local by=()
    for ((k = 0; k < INSTANCES; k++)); do
        local f=$run/i$k/server.log o
        o=$(count_in "$f" 'issued: serial')
        by+=("$o")
        ordering=$((ordering + o))
        waits=$((waits + $(count_in "$f" 'another instance holds the lock; waiting')))
        confirmed=$((confirmed + $(count_in "$f" 'the challenge is served by all')))
        unconfirmed=$((unconfirmed + $(count_in "$f" 'did not confirm the challenge within')))
        failed=$((failed + $(count_in "$f" 'could not obtain a certificate for')))
        took=$((took + $(count_in "$f" 'took over the lock')))
    done

    # Per name, on the instance that ordered it: order start -> challenge
    # ready (stored, every instance confirmed) -> validated -> issued and
    # stored; then issued -> the last instance serving it. Medians over the
    # names, in ms.
    local ph_ready=() ph_valid=() ph_issue=() ph_spread=()
    for n in "${NAMES[@]}"; do
        for ((k = 0; k < INSTANCES; k++)); do
            local f=$run/i$k/server.log t0 t1 t2 t3 tl=0 j re=${n//./\\.}
            # (n1.test is a prefix of n10.test: the name ends at a space or the line's end)
            t0=$(ms_of "$f" "ordering a certificate for $re( |\$)")
            [ -n "$t0" ] || continue
            t1=$(ms_of "$f" "\] $re: tls-alpn-01 challenge ready")
            t2=$(ms_of "$f" "\] $re: validated")
            t3=$(ms_of "$f" "certificate for $re issued")
            if [ -z "$t1" ] || [ -z "$t2" ] || [ -z "$t3" ]; then continue; fi
            ph_ready+=($((t1 - t0)))
            ph_valid+=($((t2 - t1)))
            ph_issue+=($((t3 - t2)))
            for ((j = 0; j < INSTANCES; j++)); do
                [ -s "$run/ok.$j.$n" ] || continue
                t=$(cat "$run/ok.$j.$n")
                [ "$t" -le "$tl" ] || tl=$t
            done
            [ "$tl" = 0 ] || ph_spread+=($((tl - t3)))
            break
        done
    done
    local first_ms='-' logs_ms='-' tl_all=0 tk
    [ -z "$first" ] || first_ms=$((first - start))
    # The same moment by the instances' own logs: the cert store's `loaded
    # .../NAME/NAME.crt` line, the first for each (instance, name).
    for n in "${NAMES[@]}"; do
        for ((k = 0; k < INSTANCES; k++)); do
            tk=$(ms_of "$run/i$k/server.log" "loaded .*/${n//./\\.}/${n//./\\.}\\.crt")
            if [ -z "$tk" ]; then tl_all=''; break 2; fi
            [ "$tk" -le "$tl_all" ] || tl_all=$tk
        done
    done
    [ -z "$tl_all" ] || logs_ms=$((tl_all - start))
    DETAIL="| $storage | $round | $result | $logs_ms | $first_ms | $orders | $issued | $(IFS=/; echo "${by[*]}") | $waits | $confirmed | $unconfirmed | $failed | $took | $(med_of "${ph_ready[@]}") | $(med_of "${ph_valid[@]}") | $(med_of "${ph_issue[@]}") | $(med_of "${ph_spread[@]}") |"
    ORDERS=$orders
    RESULT=$result

    stop_instances
    stop_pebble
    stop_haproxy
    if [ "${BENCH_KEEP:-0}" = 1 ] && [ "$storage" = postgres ]; then
        psql_do clace "SELECT key, length(value), modified FROM clace_storage ORDER BY key" >"$run/storage-keys.txt" 2>&1 || true
    fi
}

# med_of VALUES...: their median ("-" if none).
med_of() { if [ "$#" -eq 0 ]; then echo '-'; else printf '%s\n' "$@" | median; fi; }

echo "clace: $CLACE_BIN ($("$CLACE_BIN" version 2>/dev/null || echo '?'), $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'))" >&2
echo "pebble: $(dpkg-query -W -f '${Version}' pebble 2>/dev/null || echo '?'), haproxy: $("$HAPROXY_BIN" -v 2>/dev/null | head -n 1 | awk '{print $3}')$(case " $STORAGES " in *" postgres "*) echo ", postgresql: $("$PG_BIN/postgres" --version | awk '{print $3}')" ;; esac)" >&2
echo "$INSTANCES instances, ${#NAMES[@]} names, $ROUNDS round(s), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
case " $STORAGES " in *" postgres "*) start_postgres ;; esac

declare -A runs orders_of
details=()
for ((r = 1; r <= ROUNDS; r++)); do
    for storage in $STORAGES; do
        one_run "$storage" "$r"
        case $RESULT in fail) unit='' ;; *) unit=' ms' ;; esac
        echo "round $r: $storage: $RESULT$unit, $ORDERS order(s)" >&2
        runs[$storage]="${runs[$storage]:-} $RESULT"
        orders_of[$storage]="${orders_of[$storage]:-} $ORDERS"
        details+=("$DETAIL")
    done
done

echo
echo "| storage | start -> all $INSTANCES instances serve all ${#NAMES[@]} names, ms (each run) | median ms | orders in Pebble's log (each run; expected ${#NAMES[@]}) |"
echo "| --- | --- | --- | --- |"
for storage in $STORAGES; do
    each=${runs[$storage]# }
    med=$(tr ' ' '\n' <<<"$each" | { grep -E '^[0-9]+$' || true; } | median)
    o=${orders_of[$storage]# }
    echo "| $storage | ${each// /, } | $med | ${o// /, } |"
done
echo
echo "Each run: all = start -> every instance serves every name (handshakes); by logs = the same by the instances' logs"
echo "(the last first 'loaded .../NAME/NAME.crt' line); first = start -> the first (instance, name) served (handshakes);"
echo "obtained by = certificates each instance obtained from the CA (its 'certificate for NAME issued' lines), instance 0/1/2;"
echo "waits = 'another instance holds the lock' lines (all instances);"
echo "confirmed / unconfirmed = challenges every instance served before the CA was asked / asked after the 5 s bound;"
echo "failed = failed attempts; phases (medians over the names, ms, from the ordering instance's log):"
echo "ready = order start -> challenge served by all; valid = ready -> validated; issue = validated -> issued and stored;"
echo "spread = issued -> the last instance serving it (as seen by the poller)."
echo
echo "| storage | run | all ms | by logs ms | first ms | orders | issued | obtained by | waits | confirmed | unconfirmed | failed | took over | ready | valid | issue | spread |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
printf '%s\n' "${details[@]}"
