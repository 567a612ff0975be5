#!/usr/bin/env bash
# Starts and stops an S3-compatible server on loopback for the ticket-file tests and a local run:
# s3s-fs (crates.io, built by scripts/setup.sh into ~/.cache/boxoffice/s3s-fs-<version>), which
# keeps each bucket as a directory of DIR/data and checks every request's SigV4 signature against
# one access key and secret key.
#
#   scripts/s3.sh start DIR ACCESS_KEY SECRET_KEY [PORT]
#                       starts it (a free port unless PORT) and prints `s3=http://127.0.0.1:PORT`
#                       once it takes connections; make a bucket with `mkdir DIR/data/NAME`
#   scripts/s3.sh stop DIR
#                       stops it (SIGTERM, then SIGKILL); the data stays
#
# Its pid is in DIR/s3.pid, its log in DIR/s3.log.
set -euo pipefail
source "$(dirname "$0")/daemon.sh"

usage() { echo "usage: $0 start DIR ACCESS_KEY SECRET_KEY [PORT] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

# Keep in step with scripts/setup.sh.
s3s_version=0.14.1
s3s=${XDG_CACHE_HOME:-$HOME/.cache}/boxoffice/s3s-fs-$s3s_version/bin/s3s-fs

case $action in
start)
    [[ $# -ge 4 && $# -le 5 ]] || usage
    [[ -x $s3s ]] || { echo "s3: $s3s is not built; run scripts/setup.sh" >&2; exit 1; }
    refuse_running s3s-fs "$dir/s3.pid" s3s-fs
    port=${5:-$(free_port)}
    mkdir -p "$dir/data"
    # The keys as flags: a test server's, visible to this host's users only.
    "$s3s" --host 127.0.0.1 --port "$port" --access-key "$3" --secret-key "$4" "$dir/data" \
        >>"$dir/s3.log" 2>&1 </dev/null &
    echo $! >"$dir/s3.pid"
    wait_for_port s3s-fs "$port" "$dir/s3.pid" "$dir/s3.log"
    echo "s3=http://127.0.0.1:$port"
    ;;
stop)
    stop_pid_file "$dir/s3.pid" s3s-fs
    ;;
*) usage ;;
esac
