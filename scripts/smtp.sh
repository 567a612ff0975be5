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
# With SMTP_TLS=starttls it requires STARTTLS before MAIL; with SMTP_TLS=smtps it speaks TLS from
# the first byte. Either way it presents a certificate for 127.0.0.1 issued by a CA of its own,
# made once per DIR with openssl, and prints `ca=DIR/tls/ca.pem` for the client to trust.
#
# Its pid is in DIR/smtp.pid, its log in DIR/smtp.log.
set -euo pipefail
source "$(dirname "$0")/daemon.sh"

usage() { echo "usage: $0 start DIR [PORT] | stop DIR" >&2; exit 2; }

# A CA and a server certificate for 127.0.0.1 signed by it (P-256, two days), once per directory.
certificates() {
    local tls=$1
    [[ -s $tls/cert.pem && -s $tls/key.pem && -s $tls/ca.pem ]] && return 0
    command -v openssl >/dev/null || { echo "smtp: openssl is missing; run scripts/setup.sh" >&2; exit 1; }
    mkdir -p "$tls"
    local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -days 2 -subj "/CN=boxoffice test SMTP CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout "$tls/key.pem" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 2 -extfile "$tls/ext" -out "$tls/cert.pem" 2>/dev/null
}
[[ $# -ge 2 && $# -le 3 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)

case $action in
start)
    python3 -c 'import aiosmtpd' 2>/dev/null ||
        { echo "smtp: aiosmtpd is not installed; run scripts/setup.sh" >&2; exit 1; }
    refuse_running aiosmtpd "$dir/smtp.pid" aiosmtpd
    port=${3:-$(free_port)}
    mkdir -p "$dir/maildir/tmp" "$dir/maildir/new" "$dir/maildir/cur"
    tls=()
    case ${SMTP_TLS:-} in
    "") ;;
    starttls | smtps)
        certificates "$dir/tls"
        if [[ $SMTP_TLS == starttls ]]; then
            tls=(--tlscert "$dir/tls/cert.pem" --tlskey "$dir/tls/key.pem")
        else
            tls=(--smtpscert "$dir/tls/cert.pem" --smtpskey "$dir/tls/key.pem")
        fi
        ;;
    *) echo "smtp: SMTP_TLS must be starttls or smtps, not $SMTP_TLS" >&2; exit 2 ;;
    esac
    # -n: no setuid; the handler (smtp_handler.py beside this script) writes each message as one
    # file of the maildir, and refuses `refuse...@` (550) and `busy...@` (451) recipients.
    PYTHONPATH="$(cd "$(dirname "$0")" && pwd)" \
        python3 -m aiosmtpd -n -l "127.0.0.1:$port" "${tls[@]}" -c smtp_handler.RefusingMailbox "$dir/maildir" \
        >>"$dir/smtp.log" 2>&1 </dev/null &
    echo $! >"$dir/smtp.pid"
    wait_for_port aiosmtpd "$port" "$dir/smtp.pid" "$dir/smtp.log"
    echo "smtp=127.0.0.1:$port"
    [[ -z ${SMTP_TLS:-} ]] || echo "ca=$dir/tls/ca.pem"
    ;;
stop)
    stop_pid_file "$dir/smtp.pid" aiosmtpd
    ;;
*) usage ;;
esac
