#!/usr/bin/env bash
# A throwaway PostgreSQL server for the inventory tests, on 127.0.0.1 only, trust auth.
#
#   eval "$(scripts/postgres.sh start)"   # installs PostgreSQL if missing (apt), starts a fresh
#                                         # cluster in a temp dir on a free port, creates the
#                                         # database flowprint_test and prints:
#       export FLOWPRINT_TEST_POSTGRES=postgres://postgres@127.0.0.1:PORT/flowprint_test
#       export FLOWPRINT_TEST_POSTGRES_DIR=/tmp/flowprint-pg.XXXXXX
#   scripts/postgres.sh stop [DIR]        # stops it and removes DIR
#                                         # (default: $FLOWPRINT_TEST_POSTGRES_DIR)
#
# Only the export lines go to stdout; progress and errors go to stderr. As root (CI), the
# cluster runs as the `postgres` user, which refuses to run as root.
set -euo pipefail

log() { echo "postgres.sh: $*" >&2; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

# The newest installed server's bin directory (Debian keeps them out of PATH).
pg_bindir() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then
        echo "$dir"
    elif command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
    fi
}

# Runs a server command as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Whether something listens on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
    local bin
    bin=$(pg_bindir)
    if [ -z "$bin" ]; then
        log "installing postgresql"
        $SUDO apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
        bin=$(pg_bindir)
        [ -n "$bin" ] || { log "no initdb after installing postgresql"; exit 1; }
    fi

    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/flowprint-pg.XXXXXX")
    # Anything below fails: remove the half-made cluster.
    trap 'stop "$dir" >/dev/null 2>&1 || true' ERR
    chmod 755 "$dir"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$dir"; fi
    cd "$dir" # the owner must be able to stand in the working directory

    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C >"$dir/initdb.log" 2>&1 ||
        { cat "$dir/initdb.log" >&2; false; }

    local port="" attempt
    for attempt in 1 2 3 4 5 6 7 8 9 10; do
        port=$((20000 + (RANDOM % 20000)))
        port_busy "$port" && continue
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir'" \
            start >&2; then
            break
        fi
        log "start on port $port failed (attempt $attempt):"
        tail -n 5 "$dir/server.log" >&2 || true
        port=""
    done
    [ -n "$port" ] || { log "could not start the server"; false; }

    "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres flowprint_test
    trap - ERR
    log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, data in $dir"
    echo "export FLOWPRINT_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/flowprint_test"
    echo "export FLOWPRINT_TEST_POSTGRES_DIR=$dir"
}

stop() {
    local dir="${1:-${FLOWPRINT_TEST_POSTGRES_DIR:-}}"
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then
        log "stop: no cluster directory given"
        return 0
    fi
    case "$(basename "$dir")" in
    flowprint-pg.*) ;;
    *)
        log "stop: $dir is not a directory made by this script"
        return 1
        ;;
    esac
    local bin
    bin=$(pg_bindir)
    if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
        (cd "$dir" && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >&2) || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 start | stop [DIR]" >&2
    exit 2
    ;;
esac
