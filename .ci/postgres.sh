#!/usr/bin/env bash
# A throwaway PostgreSQL for the test suite.
#
#   eval "$(bash .ci/postgres.sh start)"    # prints the two exports below
#   bash .ci/postgres.sh stop               # stops it and removes its data
#
# start: installs PostgreSQL from Debian's packages if it is missing (waiting
# for an apt/dpkg already running rather than racing it), creates a cluster as
# the `postgres` user (initdb refuses root) with UTF8 / C.UTF-8 (without it the
# cluster is SQL_ASCII and non-ASCII partner names fail to insert), starts it
# on 127.0.0.1 on a free port and creates a database. It prints
#   export EDI_INBOX_TEST_PG_URL=postgresql://postgres@127.0.0.1:PORT/edi_inbox_test
#   export EDI_INBOX_TEST_PG_DATADIR=/tmp/edi-inbox-pg.XXXX/data
# on stdout (and writes them to $EDI_INBOX_PG_ENV_FILE when set); progress goes
# to stderr. The restart test uses the data directory (pg_ctl restart).
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

wait_for_apt() {
    # The lead's machine set-up may still be installing packages: wait for it.
    local deadline=$((SECONDS + 900))
    while pgrep -x 'apt-get|apt|dpkg' >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            log "apt/dpkg still running after 15 minutes"
            return 1
        fi
        sleep 2
    done
}

pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]]; then
        echo "$dir"
    fi
}

install_postgres() {
    if [[ -n "$(pg_bindir)" ]]; then
        return 0
    fi
    wait_for_apt
    if [[ -n "$(pg_bindir)" ]]; then
        return 0
    fi
    log "installing PostgreSQL from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=900 update >&2
    apt-get -o DPkg::Lock::Timeout=900 install -y --no-install-recommends postgresql >&2
    if [[ -z "$(pg_bindir)" ]]; then
        log "PostgreSQL installed but no initdb/pg_ctl under /usr/lib/postgresql"
        return 1
    fi
}

# Run a command as the cluster owner: `postgres` when we are root.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    # A random high port nothing answers on (bash's /dev/tcp: no python needed).
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

start() {
    install_postgres
    local bindir base datadir port url
    bindir=$(pg_bindir)
    base=$(mktemp -d /tmp/edi-inbox-pg.XXXXXX)
    datadir="$base/data"
    chmod 755 "$base"
    if [[ $(id -u) -eq 0 ]]; then
        chown postgres: "$base"
    fi
    as_owner "$bindir/initdb" -D "$datadir" -U postgres -E UTF8 --locale=C.UTF-8 \
        --auth=trust >"$base/initdb.log" 2>&1 || {
        cat "$base/initdb.log" >&2
        return 1
    }
    port=$(free_port)
    # fsync=off: a test cluster needs no durability, only speed.
    as_owner "$bindir/pg_ctl" -D "$datadir" -l "$base/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $base -c fsync=off -c full_page_writes=off -c synchronous_commit=off" \
        start >&2 || {
        cat "$base/server.log" >&2
        return 1
    }
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U postgres edi_inbox_test >&2
    url="postgresql://postgres@127.0.0.1:$port/edi_inbox_test"
    local exports
    exports="export EDI_INBOX_TEST_PG_URL=$url
export EDI_INBOX_TEST_PG_DATADIR=$datadir"
    if [[ -n "${EDI_INBOX_PG_ENV_FILE:-}" ]]; then
        echo "$exports" >"$EDI_INBOX_PG_ENV_FILE"
    fi
    echo "$exports"
    log "PostgreSQL running at $url (data in $datadir)"
}

stop() {
    local datadir="${1:-${EDI_INBOX_TEST_PG_DATADIR:-}}"
    if [[ -z "$datadir" || ! -d "$datadir" ]]; then
        log "nothing to stop (EDI_INBOX_TEST_PG_DATADIR unset or gone)"
        return 0
    fi
    local bindir
    bindir=$(pg_bindir)
    as_owner "$bindir/pg_ctl" -D "$datadir" -m immediate -w stop >&2 || true
    case "$datadir" in
    /tmp/edi-inbox-pg.*/data) rm -rf "$(dirname "$datadir")" ;;
    esac
}

case "${1:-start}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start|stop [DATADIR]" >&2
    exit 2
    ;;
esac
