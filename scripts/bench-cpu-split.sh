#!/usr/bin/env bash
# bench-cpu-split.sh [PATH] [ROUNDS] -- where a server's CPU per request
# goes: user time (the server's own code) and system time (the kernel
# working for it: the TLS connection's and the upstream's system calls,
# loopback delivery, wake-ups), for clace and nginx in turn, with
# ../shared/bench's targets and keep-alive load (wrk -t1 -c32 on
# https://localhost:PORT/PATH, BENCH_SECONDS each, default 8).
#
# PATH defaults to up/1k.bin, row (e) of ../shared/bench/run.sh: both
# targets proxy it to one plain-HTTP nginx upstream on 127.0.0.1 (its CPU
# not counted); 1k.bin is row (a), a static file. Medians of ROUNDS
# (default 3), from utime and stime in /proc/PID/stat of the server's
# processes. Needs nginx and wrk (apt-get install -y nginx wrk).
#
#   CLACE_BIN  default: target/release/clace (cargo build --release)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$repo/../shared}
bench=$shared/bench
CLACE_BIN=${CLACE_BIN:-$repo/target/release/clace}
export CLACE_BIN
P=${1:-up/1k.bin}
ROUNDS=${2:-3}
SECS=${BENCH_SECONDS:-8}

die() { echo "bench-cpu-split.sh: $*" >&2; exit 1; }
[ -x "$CLACE_BIN" ] || die "no $CLACE_BIN: run cargo build --release, or set CLACE_BIN"
[ -d "$bench/targets" ] || die "no $bench/targets (set SHARED)"
for tool in nginx wrk openssl; do
    command -v "$tool" >/dev/null || die "no $tool: apt-get install -y nginx wrk openssl"
done
# shellcheck source=bench-lib.sh
. "$repo/scripts/bench-lib.sh"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-split.XXXXXX")
running=()
cleanup() {
    for w in "${running[@]}"; do
        "$bench/targets/${w%%:*}.sh" stop "${w#*:}" >/dev/null 2>&1 || true
    done
    [ -s "$work/up/pid" ] && kill "$(cat "$work/up/pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Certificates and documents, as run.sh makes them.
"$bench/certs.sh" "$work/certs" >/dev/null
mkdir -p "$work/doc/up" "$work/up/tmp"
head -c 1024 /dev/urandom >"$work/doc/1k.bin"
cp "$work/doc/1k.bin" "$work/doc/up/1k.bin"

# The upstream: plain-HTTP nginx, one worker (run.sh's row (e) set-up).
pick_port up_port
cat >"$work/up/nginx.conf" <<CONF
worker_processes 1;
pid $work/up/pid;
error_log $work/up/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $work/up/tmp/body;
    proxy_temp_path $work/up/tmp/proxy;
    fastcgi_temp_path $work/up/tmp/fastcgi;
    uwsgi_temp_path $work/up/tmp/uwsgi;
    scgi_temp_path $work/up/tmp/scgi;
    default_type application/octet-stream;
    server { listen 127.0.0.1:$up_port; root $work/doc; }
}
CONF
nginx -p "$work/up" -e "$work/up/error.log" -c "$work/up/nginx.conf" || die "the upstream nginx did not start"
for _ in $(seq 50); do listening "$up_port" && break; sleep 0.1; done
export BENCH_UPSTREAM=http://127.0.0.1:$up_port

# cpu TARGET: one round; prints "req/s user_us sys_us".
cpu() {
    local target=$1 port w pid pids u0 s0 u1 s1 out n
    pick_port port
    w=$work/$target.$port
    "$bench/targets/$target.sh" start "$port" "$work/certs/ecdsa/localhost.crt" \
        "$work/certs/ecdsa/localhost.key" "$work/doc" "$w" >/dev/null 2>&1 ||
        die "$target did not start"
    running+=("$target:$w")
    pid=$(cat "$w/pid" 2>/dev/null || cat "$w/nginx.pid")
    pids="$pid $( (pgrep -P "$pid" || true) | tr "\n" " ")"
    wrk -t1 -c32 -d1s "https://localhost:$port/$P" >/dev/null
    ticks() { local u=0 s=0 a b; for p in $pids; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
    read -r u0 s0 < <(ticks)
    out=$(wrk -t1 -c32 -d"${SECS}s" "https://localhost:$port/$P")
    read -r u1 s1 < <(ticks)
    "$bench/targets/$target.sh" stop "$w" >/dev/null 2>&1 || true
    unset 'running[-1]'
    n=$(echo "$out" | awk '/requests in/ {print $1}')
    [ "${n:-0}" -gt 0 ] || die "$target served nothing on /$P"
    awk -v n="$n" -v t="$(getconf CLK_TCK)" -v u=$((u1 - u0)) -v s=$((s1 - s0)) \
        -v r="$(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
        'BEGIN {printf "%d %.1f %.1f\n", r, u * 1e6 / t / n, s * 1e6 / t / n}'
}

echo "# bench-cpu-split.sh /$P: wrk -t1 -c32 -d${SECS}s, $ROUNDS rounds, medians ($(date -u +%F), $(nproc) cores)"
printf '%-6s %10s %8s %8s %8s\n' target 'req/s' 'user µs' 'sys µs' 'total µs'
for target in clace nginx; do : >"$work/$target.rounds"; done
for _ in $(seq "$ROUNDS"); do
    for target in clace nginx; do cpu "$target" >>"$work/$target.rounds"; done
done
for target in clace nginx; do
    f=$work/$target.rounds
    printf '%-6s %10s %8s %8s %8s\n' "$target" "$(cut -d' ' -f1 "$f" | median_real)" \
        "$(cut -d' ' -f2 "$f" | median_real)" "$(cut -d' ' -f3 "$f" | median_real)" \
        "$(awk '{print $2 + $3}' "$f" | median_real)"
done
