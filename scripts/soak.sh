#!/usr/bin/env bash
# soak.sh [SECONDS]: mixed load on the release daemon for SECONDS (default
# 600) while its certificate is replaced every second and an actor is
# restarted every 30 s (http, https, certstore, watcher in turn). Not part of
# `make test`. Load, all at once:
#   - HTTP/1.1 keep-alive on a static file (wrk, 20 connections);
#   - HTTP/2 over TLS (h2load, 10 connections x 10 streams);
#   - one TLS handshake per request (wrk with Connection: close, 4 conns);
#   - the reverse proxy to a local upstream (wrk, 4 connections).
# Prints each tool's request and error counts and the daemon's RSS after a
# warm-up and at the end. Goal: no failed request or handshake besides the
# connections a restarted listener's old server closes; RSS flat within 10%.
# Needs wrk, h2load, openssl and python3 (the upstream).
set -euo pipefail
SECS=${1:-600}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${CLACE_BIN:-$here/target/release/clace}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
for tool in wrk h2load openssl python3; do
    command -v "$tool" >/dev/null || { echo "soak.sh needs $tool" >&2; exit 1; }
done
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/certs" "$work/site" "$work/upstream/up"
head -c 4096 /dev/urandom | base64 > "$work/site/index.html"
echo upstream > "$work/upstream/up/index.html"

# A new pair for localhost, swapped in as Kubernetes does a secret: both
# files in a new folder, then one rename of the `..data` link, so the
# daemon never sees half a pair; the previous folder is then removed.
version=0
new_pair() {
    version=$((version + 1))
    local dir="$work/certs/..v$version"
    mkdir "$dir"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$dir/localhost.key" -out "$dir/localhost.crt" \
        -days 30 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
    ln -sfn "..v$version" "$work/certs/..data.tmp"
    mv -T "$work/certs/..data.tmp" "$work/certs/..data"
    rm -rf "$work/certs/..v$((version - 1))"
}
new_pair
ln -s ..data/localhost.crt "$work/certs/localhost.crt"
ln -s ..data/localhost.key "$work/certs/localhost.key"

upstream_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$work/upstream" && exec python3 -m http.server "$upstream_port" --bind 127.0.0.1 >/dev/null 2>&1) &
pids+=($!)

cat > "$work/clace.toml" <<TOML
[http]
host = "127.0.0.1"
port = 0
[https]
host = "127.0.0.1"
port = 0
cert_location = "$work/certs"
[[route]]
path = "/"
static = "$work/site"
[[route]]
path = "/up"
proxy = "http://127.0.0.1:$upstream_port"
[logging]
level = "warn"
TOML
CL_HOME=$work "$bin" serve -c "$work/clace.toml" 2> "$work/log" &
daemon=$!
hp="" sp=""
for _ in $(seq 1 200); do
    hp=$(sed -n 's/^Server listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$work/log" | head -1)
    sp=$(sed -n 's/^Server listening on https:\/\/[^:]*:\([0-9]*\).*/\1/p' "$work/log" | head -1)
    [ -n "$hp" ] && [ -n "$sp" ] && break
    sleep 0.05
done
[ -n "$hp" ] && [ -n "$sp" ] || { echo "daemon did not start" >&2; cat "$work/log" >&2; exit 1; }
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$upstream_port/" >/dev/null && break
    sleep 0.05
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$daemon/status"; }
echo "clace $("$bin" version) on http :$hp, https :$sp; $SECS s of load"

wrk -t1 -c20 -d"${SECS}s" "http://127.0.0.1:$hp/index.html" > "$work/wrk-keepalive" 2>&1 &
pids+=($!)
h2load -D "$SECS" -c10 -m10 "https://127.0.0.1:$sp/index.html" > "$work/h2load" 2>&1 &
pids+=($!)
wrk -t1 -c4 -d"${SECS}s" -H 'Connection: close' "https://127.0.0.1:$sp/index.html" > "$work/wrk-handshakes" 2>&1 &
pids+=($!)
wrk -t1 -c4 -d"${SECS}s" "http://127.0.0.1:$hp/up/" > "$work/wrk-proxy" 2>&1 &
pids+=($!)
load_pids=("${pids[@]:1}")

sleep 10
rss_start=$(rss)
actors=(http https certstore watcher)
restarts=0 pairs=0
end=$((SECONDS + SECS - 12))
next_restart=$((SECONDS + 30))
while [ "$SECONDS" -lt "$end" ]; do
    new_pair
    pairs=$((pairs + 1))
    if [ "$SECONDS" -ge "$next_restart" ]; then
        CL_HOME=$work "$bin" restart -c "$work/clace.toml" "${actors[$((restarts % 4))]}" >/dev/null
        restarts=$((restarts + 1))
        next_restart=$((next_restart + 30))
    fi
    sleep 1
done
rss_end=$(rss)
wait "${load_pids[@]}" || true
kill -0 "$daemon" || { echo "the daemon died" >&2; cat "$work/log" >&2; exit 1; }

echo "pairs replaced: $pairs; actors restarted: $restarts"
for f in wrk-keepalive wrk-handshakes wrk-proxy; do
    reqs=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' "$work/$f")
    errs=$(grep -E 'Socket errors|Non-2xx' "$work/$f" | tr '\n' ' ' || true)
    echo "$f: $reqs requests; ${errs:-no errors}"
done
grep -E '^requests:|^status codes:' "$work/h2load" | sed 's/^/h2load: /' || true
echo "RSS after warm-up: ${rss_start} kB; at the end: ${rss_end} kB ($(( (rss_end - rss_start) * 100 / rss_start ))%)"
echo "daemon warnings and errors: $(grep -cE ' (WARN|ERROR) ' "$work/log" || true)"
grep -E ' (WARN|ERROR) ' "$work/log" | sed 's/^\[[^]]*Z /  /' | sort | uniq -c | sort -rn | head -10 || true
