#!/usr/bin/env bash
# Starts and stops the bench baselines on loopback: a PostgreSQL server and a Redis server, each
# with its files in one directory and durable the way the platforms boxoffice replaces run them
# (PostgreSQL: fsync on, synchronous_commit on; Redis: AOF with `appendfsync always`).
#
#   scripts/baselines.sh start DIR   prints `postgres=URL` and `redis=URL`, ready for
#                                    `boxoffice-bench run --target postgres=URL --target redis=URL`
#   scripts/baselines.sh stop DIR    stops both and leaves their files in DIR
#
# The servers come from Debian's packages (scripts/setup.sh installs them). PostgreSQL refuses to
# run as root, so as root it runs as the `postgres` user the package creates.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $action in
start)
    [[ -n $pg_bin ]] || { echo "baselines: PostgreSQL is not installed; run scripts/setup.sh" >&2; exit 1; }
    command -v redis-server >/dev/null || { echo "baselines: redis-server is not installed; run scripts/setup.sh" >&2; exit 1; }
    # The postgres user must reach its data directory.
    chmod 755 "$dir"
    mkdir -p "$dir/pg" "$dir/redis"
    if [[ $(id -u) -eq 0 ]]; then chown postgres "$dir/pg"; fi
    chmod 700 "$dir/pg"
    if [[ ! -f $dir/pg/PG_VERSION ]]; then
        as_pg "$pg_bin/initdb" -D "$dir/pg" -U bench --auth=trust >"$dir/pg-initdb.log"
    fi
    pg_port=$(free_port)
    as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -l "$dir/pg/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$dir/pg \
            -c fsync=on -c synchronous_commit=on -c max_connections=300 -c shared_buffers=256MB" \
        start >/dev/null
    echo "$pg_port" >"$dir/pg.port"

    redis_port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" \
        --appendonly yes --appendfsync always --save "" \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && break
        sleep 0.1
    done
    redis-cli -p "$redis_port" ping | grep -q PONG
    echo "postgres=postgres://bench@127.0.0.1:$pg_port/postgres"
    echo "redis=redis://127.0.0.1:$redis_port"
    ;;
stop)
    if [[ -f $dir/pg/postmaster.pid ]]; then
        as_pg "$pg_bin/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null || true
    fi
    if [[ -f $dir/redis.pid ]]; then
        pid=$(cat "$dir/redis.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    ;;
*) usage ;;
esac
