# Helpers shared by the project's bench scripts (bench-acme.sh,
# bench-cluster.sh), sourced after `set -euo pipefail`.

# pick_port VAR: sets VAR to a TCP port on 127.0.0.1 that nothing listens on,
# below the ephemeral range (so an outgoing connection does not take it
# meanwhile), not handed out before in this run. (Not called in a $(...):
# the list of ports handed out must outlive the call.)
used_ports=' '
pick_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        case $used_ports in *" $p "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports="$used_ports$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

# listening PORT: whether something accepts connections on 127.0.0.1:PORT.
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# median_real: the median of the numbers (fractions too) on standard input.
median_real() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# median: the median of the whole numbers on standard input ("-" if none).
median() { sort -n | awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print int((a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
