#!/usr/bin/env bash
# Throwaway PostgreSQL server for Tact's test suite.
#
#   scripts/pg-test-server.sh start    start one (or find the running one); print its DSN
#   scripts/pg-test-server.sh stop     stop it and delete its data directory
#   scripts/pg-test-server.sh status   print the DSN if it runs, exit 1 if not
#   scripts/pg-test-server.sh restart  restart the running one (fast shutdown: every
#                                      connection is dropped); wait until it accepts
#                                      connections again, print its DSN
#
# The server listens on 127.0.0.1 only, trusts every local connection and runs with
# fsync off: it is for tests and nothing else. Only the DSN goes to stdout, so
# `export TACT_TEST_POSTGRES_DSN="$(scripts/pg-test-server.sh start)"` works.
#
# Environment:
#   TACT_PG_PORT      first port to try (default 54329; the next free one is taken)
#   TACT_PG_BINDIR    PostgreSQL's bin directory (default: newest /usr/lib/postgresql/*/bin)
#   TACT_PG_BASEDIR   where the data directory goes (default /tmp)
#   TACT_PG_STATE     the state file recording port and data directory
#                     (default /tmp/tact-pg-test-server.state)
#
# Exit codes: 0 ok, 1 failure, 2 usage, 3 no PostgreSQL server binaries on this machine.
set -euo pipefail

readonly DEFAULT_PORT="${TACT_PG_PORT:-54329}"
readonly BASE_DIR="${TACT_PG_BASEDIR:-/tmp}"
readonly STATE_FILE="${TACT_PG_STATE:-/tmp/tact-pg-test-server.state}"
readonly LOCK_FILE="${STATE_FILE}.lock"
readonly SUPERUSER=postgres
readonly TEST_ROLE=tact
readonly TEST_DATABASE=tact

say() { printf 'pg-test-server: %s\n' "$*" >&2; }

find_bindir() {
    if [[ -n "${TACT_PG_BINDIR:-}" ]]; then
        [[ -x "$TACT_PG_BINDIR/initdb" ]] && { printf '%s\n' "$TACT_PG_BINDIR"; return 0; }
        return 1
    fi
    local candidate
    candidate="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
    [[ -n "$candidate" && -x "$candidate/initdb" ]] || return 1
    printf '%s\n' "$candidate"
}

# initdb and postgres refuse to run as root: as root, run them as the postgres user.
as_server_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        (cd / && runuser -u "$SUPERUSER" -- "$@")
    else
        "$@"
    fi
}

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local port
    for ((port = DEFAULT_PORT; port < DEFAULT_PORT + 100; port++)); do
        if ! port_in_use "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    say "no free port in $DEFAULT_PORT..$((DEFAULT_PORT + 99))"
    return 1
}

dsn_for() { printf 'postgresql://%s@127.0.0.1:%s/%s\n' "$TEST_ROLE" "$1" "$TEST_DATABASE"; }

# Sets STATE_PORT, STATE_DATADIR and STATE_BINDIR from the state file; fails if absent.
read_state() {
    [[ -f "$STATE_FILE" ]] || return 1
    STATE_PORT="" STATE_DATADIR="" STATE_BINDIR=""
    local key value
    while IFS='=' read -r key value; do
        case "$key" in
            port) STATE_PORT="$value" ;;
            datadir) STATE_DATADIR="$value" ;;
            bindir) STATE_BINDIR="$value" ;;
        esac
    done <"$STATE_FILE"
    [[ -n "$STATE_PORT" && -n "$STATE_DATADIR" && -n "$STATE_BINDIR" ]]
}

recorded_server_is_running() {
    read_state || return 1
    [[ -d "$STATE_DATADIR" ]] || return 1
    as_server_user "$STATE_BINDIR/pg_ctl" -D "$STATE_DATADIR" status >/dev/null 2>&1 || return 1
    "$STATE_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$STATE_PORT" -t 5
}

stop_recorded_server() {
    if read_state; then
        if [[ -d "$STATE_DATADIR" ]]; then
            if as_server_user "$STATE_BINDIR/pg_ctl" -D "$STATE_DATADIR" status >/dev/null 2>&1; then
                say "stopping the server on port $STATE_PORT"
                as_server_user "$STATE_BINDIR/pg_ctl" -D "$STATE_DATADIR" -m fast -w -t 60 stop \
                    >/dev/null
            fi
            rm -rf -- "$STATE_DATADIR"
            say "removed $STATE_DATADIR"
        fi
        rm -f -- "$STATE_FILE"
    fi
}

show_log_tail() {
    if [[ -f "$1/server.log" ]]; then
        say "last lines of $1/server.log:"
        tail -n 30 "$1/server.log" >&2 || true
    fi
}

start() {
    if recorded_server_is_running; then
        say "already running on port $STATE_PORT ($STATE_DATADIR)"
        dsn_for "$STATE_PORT"
        return 0
    fi
    stop_recorded_server

    local bindir
    if ! bindir="$(find_bindir)"; then
        say "no PostgreSQL server binaries (looked for ${TACT_PG_BINDIR:-/usr/lib/postgresql/*/bin}/initdb);"
        say "install them, e.g. 'apt-get install postgresql-15', or set TACT_TEST_POSTGRES_DSN"
        return 3
    fi
    if [[ "$(id -u)" -eq 0 ]] && ! id -u "$SUPERUSER" >/dev/null 2>&1; then
        say "running as root, but there is no '$SUPERUSER' user to run the server as"
        return 1
    fi

    local port datadir
    port="$(free_port)"
    datadir="$BASE_DIR/tact-pg-$port"
    rm -rf -- "$datadir"
    mkdir -p -- "$datadir"
    chmod 700 "$datadir"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown "$SUPERUSER:" "$datadir"
    fi
    printf 'port=%s\ndatadir=%s\nbindir=%s\n' "$port" "$datadir" "$bindir" >"$STATE_FILE"

    say "initialising $datadir with $bindir"
    local initdb_output
    if ! initdb_output="$(as_server_user "$bindir/initdb" -D "$datadir" -U "$SUPERUSER" \
        --auth=trust --encoding=UTF8 --locale=C --no-sync 2>&1)"; then
        printf '%s\n' "$initdb_output" >&2
        stop_recorded_server
        return 1
    fi

    as_server_user tee -a "$datadir/postgresql.conf" >/dev/null <<EOF

# Throwaway test server written by scripts/pg-test-server.sh
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$datadir'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF

    say "starting on 127.0.0.1:$port"
    # The server must not inherit the lock (fd 9) nor the caller's output pipes.
    if ! as_server_user "$bindir/pg_ctl" -D "$datadir" -l "$datadir/server.log" -w -t 60 start \
        </dev/null >/dev/null 2>&1 9>&-; then
        show_log_tail "$datadir"
        stop_recorded_server
        return 1
    fi
    if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -t 30; then
        say "the server did not become ready"
        show_log_tail "$datadir"
        stop_recorded_server
        return 1
    fi

    "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$SUPERUSER" -d postgres \
        -c "CREATE ROLE $TEST_ROLE LOGIN CREATEDB" \
        -c "CREATE DATABASE $TEST_DATABASE OWNER $TEST_ROLE" >&2
    say "ready; stop it with: $0 stop"
    dsn_for "$port"
}

restart() {
    if ! recorded_server_is_running; then
        say "not running; start it with: $0 start"
        return 1
    fi
    say "restarting the server on port $STATE_PORT"
    # As in start: the server must not inherit the lock (fd 9) nor the caller's output pipes.
    if ! as_server_user "$STATE_BINDIR/pg_ctl" -D "$STATE_DATADIR" -l "$STATE_DATADIR/server.log" \
        -m fast -w -t 60 restart </dev/null >/dev/null 2>&1 9>&-; then
        show_log_tail "$STATE_DATADIR"
        return 1
    fi
    if ! "$STATE_BINDIR/pg_isready" -q -h 127.0.0.1 -p "$STATE_PORT" -t 30; then
        say "the server did not become ready again"
        show_log_tail "$STATE_DATADIR"
        return 1
    fi
    dsn_for "$STATE_PORT"
}

status() {
    if recorded_server_is_running; then
        dsn_for "$STATE_PORT"
    else
        say "not running"
        return 1
    fi
}

main() {
    local command="${1:-}"
    case "$command" in
        start | stop | status | restart) ;;
        *)
            say "usage: $0 start|stop|status|restart"
            return 2
            ;;
    esac
    exec 9>"$LOCK_FILE"
    flock 9
    case "$command" in
        start) start ;;
        stop) stop_recorded_server ;;
        status) status ;;
        restart) restart ;;
    esac
}

main "$@"
