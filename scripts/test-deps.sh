#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (as root), or says
# exactly what to install. The tests need: openssl (to prove TLS 1.1 is
# refused), pebble (Let's Encrypt's test CA and its mock DNS,
# pebble-challtestsrv: the ACME tests run the real thing), caddy (the ACME
# compatibility test reads a storage folder Caddy filled), libcap2-bin
# (setcap), haproxy (the cluster tests balance TLS across instances with
# it), postgresql (the cluster tests run a throwaway server: initdb, pg_ctl,
# psql) and rustfmt/clippy for the lint step.
set -euo pipefail

# has COMMAND: on the PATH, or in the sbin folders a non-root PATH lacks.
has() {
    command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]
}

# has_initdb: PostgreSQL's server binaries, which Debian keeps in
# /usr/lib/postgresql/<version>/bin, off the PATH ($PG_BIN wins).
has_initdb() {
    [[ -n ${PG_BIN:-} && -x $PG_BIN/initdb ]] && return 0
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || has initdb
}

missing=()
has openssl || missing+=(openssl)
{ has "${PEBBLE_BIN:-pebble}" && has "${PEBBLE_CHALLTESTSRV_BIN:-pebble-challtestsrv}"; } || missing+=(pebble)
has "${CADDY_BIN:-caddy}" || missing+=(caddy)
has setcap || missing+=(libcap2-bin)
has "${HAPROXY_BIN:-haproxy}" || missing+=(haproxy)
has_initdb || missing+=(postgresql)

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
        echo "missing: ${missing[*]}; install them with: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
fi

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            rustup component add "$component"
        else
            echo "missing: the $component component; install it with: rustup component add $component" >&2
            exit 1
        fi
    fi
done
