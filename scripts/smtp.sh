#!/usr/bin/env bash
# Starts and stops an SMTP server on loopback for the email adapter's tests and a local run:
# aiosmtpd (from PyPI, installed by scripts/setup.sh), delivering every message it accepts into a
# maildir, so a test reads back exactly what arrived; recipients `refuse...@` get 550 and
# `busy...@` 451 (smtp_handler.py).
#
#   scripts/smtp.sh start DIR [PORT]  starts it (a free port unless PORT), messages in
#                                     DIR/maildir/new, and prints `smtp=127.0.0.1:PORT` once it
#                                     takes connections
#   scripts/smtp.sh stop DIR          stops it (SIGTERM, then SIGKILL); the maildir stays
#
# Its pid is in DIR/smtp.pid, its log in DIR/smtp.log.
set -euo pipefail

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

case $action in
start)
    python3 -c 'import aiosmtpd' 2>/dev/null ||
        { echo "smtp: aiosmtpd is not installed; run scripts/setup.sh" >&2; exit 1; }
    port=${3:-$(free_port)}
    mkdir -p "$dir/maildir/tmp" "$dir/maildir/new" "$dir/maildir/cur"
    # -n: no setuid; the handler (smtp_handler.py beside this script) writes each message as one
    # file of the maildir, and refuses `refuse...@` (550) and `busy...@` (451) recipients.
    PYTHONPATH="$(cd "$(dirname "$0")" && pwd)" \
        python3 -m aiosmtpd -n -l "127.0.0.1:$port" -c smtp_handler.RefusingMailbox "$dir/maildir" \
        >>"$dir/smtp.log" 2>&1 </dev/null &
    echo $! >"$dir/smtp.pid"
    for _ in $(seq 300); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            echo "smtp=127.0.0.1:$port"
            exit 0
        fi
        kill -0 "$(cat "$dir/smtp.pid")" 2>/dev/null || break
        sleep 0.1
    done
    echo "smtp: aiosmtpd did not start; its log, $dir/smtp.log:" >&2
    tail -n 20 "$dir/smtp.log" >&2
    exit 1
    ;;
stop)
    if [[ -f $dir/smtp.pid ]]; then
        pid=$(cat "$dir/smtp.pid")
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$dir/smtp.pid"
    fi
    ;;
*) usage ;;
esac
