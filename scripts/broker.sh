#!/usr/bin/env bash
# Starts and stops a Kafka-protocol broker on loopback for the tests, the bench and a local run:
# tansu, built once by scripts/setup.sh, with its SQLite storage engine so that what it
# acknowledged survives a SIGKILL and a restart (its default in-memory engine does not).
#
#   scripts/broker.sh start DIR [PORT]  starts it with its files in DIR (a free port unless PORT)
#                                       and prints `kafka=127.0.0.1:PORT` once it takes
#                                       connections; start it again on the same DIR and PORT
#                                       after a kill and it has every message it acknowledged
#   scripts/broker.sh stop DIR          stops it (SIGTERM, then SIGKILL) and leaves its files
#
# Its pid is in DIR/broker.pid, its log in DIR/broker.log. `start` succeeds only once the tansu
# it started says it listens: a PORT that something else holds (a killed broker not yet gone,
# another process) fails at once, never with another process's listener taken for this one.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

tansu_version=0.6.0
tansu=${XDG_CACHE_HOME:-$HOME/.cache}/boxoffice/tansu-$tansu_version/bin/tansu

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

takes_connections() {
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null
}

# Whether process $1 runs: not a zombie (where PID 1 does not reap orphans, as in some
# containers, a dead broker stays one, and `kill -0` still finds it).
running() {
    kill -0 "$1" 2>/dev/null || return 1
    local stat
    read -r stat <"/proc/$1/stat" 2>/dev/null || return 0
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

case $action in
start)
    [[ -x $tansu ]] || { echo "broker: $tansu is not built; run scripts/setup.sh" >&2; exit 1; }
    port=${3:-$(free_port)}
    if takes_connections "$port"; then
        echo "broker: 127.0.0.1:$port already takes connections (a broker killed but not gone yet, or another process); not starting" >&2
        exit 1
    fi
    # Only what this start writes to the log counts: tansu prints `ready in ...` once it listens.
    log_from=$(($(stat -c %s "$dir/broker.log" 2>/dev/null || echo 0) + 1))
    # The SQLite path is relative to the broker's working directory.
    (
        cd "$dir"
        exec "$tansu" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://broker.db" \
            >>broker.log 2>&1 </dev/null
    ) &
    pid=$!
    echo "$pid" >"$dir/broker.pid"
    for _ in $(seq 300); do
        if tail -c "+$log_from" "$dir/broker.log" 2>/dev/null | grep -q '^ready in ' &&
            running "$pid" && takes_connections "$port"; then
            # tansu 0.6.0 reads a record's headers by (partition, offset) from a table that has
            # no index on them, so each record fetched scans every header stored: a consumer
            # catching up on 10,000 records waited about 40 s for one fetch (and librdkafka gave
            # up on it). The index makes that lookup direct. Its schema exists once it listens.
            python3 - "$dir/broker.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("create index if not exists header_topition_offset on header (topition, offset_id)")
db.commit()
PY
            echo "kafka=127.0.0.1:$port"
            exit 0
        fi
        running "$pid" || break
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    echo "broker: tansu did not start on 127.0.0.1:$port; its log, $dir/broker.log:" >&2
    tail -c "+$log_from" "$dir/broker.log" | tail -n 20 >&2
    exit 1
    ;;
stop)
    if [[ -f $dir/broker.pid ]]; then
        pid=$(cat "$dir/broker.pid")
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/broker.pid"
    fi
    ;;
*) usage ;;
esac
