#!/usr/bin/env bash
# bench-ws.sh [ROUNDS] -- WebSocket echo through a reverse proxy: clace's
# `proxy` route against nginx (`proxy_pass` with the Upgrade/Connection
# headers), both in front of the same plain-HTTP echo upstream on 127.0.0.1.
# 32 connections, each sending a 1 KiB message and waiting for its echo, in
# a loop for BENCH_SECONDS (default 10); ROUNDS (default 3) rounds, the two
# proxies in turn. Reports messages per second and the proxy's own CPU
# (utime + stime of its processes, from /proc) per message; medians.
#
#   CLACE_BIN  default: target/release/clace (cargo build --release)
#   Needs: nginx, python3 with websockets (apt-get install -y nginx
#   python3-websockets). Everything listens on 127.0.0.1 and is stopped when
#   the script ends, whatever the outcome.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CLACE_BIN=${CLACE_BIN:-$repo/target/release/clace}
ROUNDS=${1:-3}
SECONDS_PER_RUN=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNS:-32}

die() { echo "bench-ws.sh: $*" >&2; exit 1; }
[ -x "$CLACE_BIN" ] || die "no $CLACE_BIN: run cargo build --release, or set CLACE_BIN"
command -v nginx >/dev/null || die "no nginx: apt-get install -y nginx"
python3 -c 'import websockets' 2>/dev/null || die "no python3 websockets: apt-get install -y python3-websockets"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-ws.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -f "$work/nginx/nginx.pid" ] && kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() {
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
    die "nothing listens on 127.0.0.1:$1"
}
# CPU ticks (utime + stime) of the given pids and their threads.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

up_port=$(free_port)
cat > "$work/echo.py" <<'PY'
import asyncio, sys, websockets
async def echo(ws, *_):
    async for msg in ws:
        await ws.send(msg)
async def main():
    async with websockets.serve(echo, "127.0.0.1", int(sys.argv[1]), max_size=None, compression=None):
        await asyncio.Future()
asyncio.run(main())
PY
python3 "$work/echo.py" "$up_port" > "$work/echo.log" 2>&1 &
pids+=($!)
wait_port "$up_port"

cat > "$work/load.py" <<'PY'
import asyncio, sys, time, websockets
url, conns, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
payload = b"x" * 1024
async def one(stop, counts, i):
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        while time.monotonic() < stop:
            await ws.send(payload)
            got = await ws.recv()
            assert len(got) == len(payload)
            counts[i] += 1
async def main():
    counts = [0] * conns
    start = time.monotonic()
    await asyncio.gather(*(one(start + secs, counts, i) for i in range(conns)))
    print(sum(counts), time.monotonic() - start)
asyncio.run(main())
PY

# clace: HTTP listener, one proxy route.
clace_port=$(free_port)
mkdir -p "$work/clace"
printf '[http]\nhost = "127.0.0.1"\nport = %s\n[https]\nport = -1\n[[route]]\npath = "/"\nproxy = "http://127.0.0.1:%s"\n[logging]\nlevel = "warn"\n' \
    "$clace_port" "$up_port" > "$work/clace/clace.toml"
CL_HOME=$work/clace "$CLACE_BIN" serve > "$work/clace/out.log" 2>&1 &
clace_pid=$!
pids+=("$clace_pid")
wait_port "$clace_port"

# nginx: 2 workers (as the shared bench's nginx target), WebSocket proxying.
nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://127.0.0.1:$up_port;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host \$host;
            proxy_read_timeout 3600s;
        }
    }
}
EOF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon on;'
wait_port "$nginx_port"
nginx_pids() { pgrep -P "$(cat "$work/nginx/nginx.pid")" | tr '\n' ' '; cat "$work/nginx/nginx.pid"; }

hz=$(getconf CLK_TCK)
declare -A rate cpu
run() {
    local name=$1 port=$2; shift 2
    local before after out msgs secs
    before=$(ticks "$@")
    out=$(timeout $((SECONDS_PER_RUN + 60)) python3 "$work/load.py" "ws://127.0.0.1:$port/echo" "$CONNS" "$SECONDS_PER_RUN")
    after=$(ticks "$@")
    read -r msgs secs <<< "$out"
    local r c
    r=$(python3 -c "print(round($msgs / $secs))")
    c=$(python3 -c "print(round(($after - $before) * 1e6 / $hz / max($msgs, 1), 1))")
    echo "round $round $name: $r msg/s, server CPU $c us/msg ($msgs messages)"
    rate[$name]+="$r "
    cpu[$name]+="$c "
}
median() { python3 -c 'import statistics,sys; print(statistics.median([float(x) for x in sys.argv[1:]]))' "$@"; }

echo "# bench-ws.sh $(date -u +%FT%TZ): $CONNS connections, 1 KiB messages, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds"
echo "# host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); client, proxies and upstream share the cores"
echo "# clace: $("$CLACE_BIN" version 2>&1 | head -1); nginx: $(nginx -v 2>&1)"
for round in $(seq "$ROUNDS"); do
    run clace "$clace_port" "$clace_pid"
    # shellcheck disable=SC2046
    run nginx "$nginx_port" $(nginx_pids)
done
echo
echo "| proxy | messages/s (median) | server CPU µs per message (median) |"
echo "| --- | --- | --- |"
for name in clace nginx; do
    # shellcheck disable=SC2086
    echo "| $name | $(median ${rate[$name]}) | $(median ${cpu[$name]}) |"
done
