#!/usr/bin/env bash
# bench-rescan.sh [N] [SECONDS]: the CPU cost of clace's idle safety-net rescan
# with N certificates (default 10000). Starts the release daemon on a folder of
# N pairs (made by ../shared/bench/scale-certs.py, cached) with
# cert_rescan_interval = 1, waits until it serves, then samples the daemon's
# utime+stime from /proc over SECONDS (default 20) of idle time: every second
# is one full rescan (2N stat calls, no file read). Prints start-up time, peak
# RSS, and CPU per rescan. Needs python3 with `cryptography` and openssl.
set -euo pipefail
N=${1:-10000}
SECS=${2:-20}
here=$(cd "$(dirname "$0")/.." && pwd)
shared=${SHARED:-$here/../shared}
bin=${CLACE_BIN:-$here/target/release/clace}
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
cache=${TMPDIR:-/tmp}/bench-scale-certs/N$N
[ -f "$cache/complete" ] || python3 "$shared/bench/scale-certs.py" "$N" "$cache" >/dev/null
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/clace.toml" <<TOML
[http]
port = -1
[https]
host = "127.0.0.1"
port = 0
cert_location = "$cache/certs"
cert_rescan_interval = 1
[logging]
level = "warn"
TOML
t0=$(date +%s.%N)
CL_HOME=$work "$bin" serve -c "$work/clace.toml" 2> "$work/log" &
pid=$!
port=""
for _ in $(seq 1 600); do
    port=$(sed -n 's/^Server listening on https:\/\/[^:]*:\([0-9]*\).*/\1/p' "$work/log" | head -1)
    [ -n "$port" ] && break
    sleep 0.05
done
[ -n "$port" ] || { echo "daemon did not start" >&2; cat "$work/log" >&2; exit 1; }
until echo | timeout 2 openssl s_client -connect "127.0.0.1:$port" -servername n00000.test 2>/dev/null | grep -q "CN *= *n00000.test"; do sleep 0.05; done
t1=$(date +%s.%N)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
sleep 2  # let the first rescans after start settle
c0=$(ticks); s0=$(date +%s.%N)
sleep "$SECS"
c1=$(ticks); s1=$(date +%s.%N)
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
awk -v n="$N" -v start="$(echo "$t1 - $t0" | bc)" -v c="$((c1 - c0))" -v hz="$hz" -v el="$(echo "$s1 - $s0" | bc)" -v hwm="$hwm" 'BEGIN {
    cpu = c / hz; rescans = el / 1.0;
    printf "N=%d  start to first verified handshake: %.2f s  peak RSS: %.1f MiB\n", n, start, hwm / 1024;
    printf "idle with cert_rescan_interval=1: %.3f s CPU over %.1f s = %.1f ms CPU per rescan (%.1f%% of one core at 1 s; %.2f%% at the default 30 s)\n", cpu, el, 1000 * cpu / rescans, 100 * cpu / el, 100 * cpu / el / 30;
}'
