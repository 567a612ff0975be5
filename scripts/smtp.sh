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
source "$(dirname "$0")/daemon.sh"

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

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
    wait_for_port aiosmtpd "$port" "$dir/smtp.pid" "$dir/smtp.log"
    echo "smtp=127.0.0.1:$port"
    ;;
stop)
    stop_pid_file "$dir/smtp.pid"
    ;;
*) usage ;;
esac
