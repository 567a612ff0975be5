#!/usr/bin/env bash
# Overload from an external load tool: h2load keeps ten times the per-event admission bound of
# Reserve calls in flight against a boxoffice started here (data in a temporary directory), while
# a second h2load checks health ten times a second. Prints h2load's figures, the server's answers
# by outcome with their latency (from its histogram), its resident memory before and after, and
# with AGAIN=1 two more rounds to show that memory stays where it went.
#
#   cargo build --release -p server && scripts/overload.sh          # BOUND=64 N=400000
#
# Needs h2load (Debian: apt-get install nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v h2load >/dev/null || { echo "h2load is missing: apt-get install nghttp2-client" >&2; exit 1; }
BIN=${BIN:-target/release}
BOUND=${BOUND:-64}
N=${N:-400000}
GRPC=127.0.0.1:${PORT:-50071}
METRICS=127.0.0.1:${METRICS_PORT:-9471}
DIR=$(mktemp -d)
python3 scripts/grpc-frames.py "$DIR/frames" >/dev/null
printf '\x00\x00\x00\x00\x00' > "$DIR/frames/empty.bin"
BOXOFFICE_STORAGE__DATA_DIR=$DIR/data BOXOFFICE_API__LISTEN=$GRPC BOXOFFICE_METRICS__LISTEN=$METRICS \
BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_CUSTOMER=1000000 BOXOFFICE_LIMITS__MAX_OPEN_HOLDS_PER_EVENT=100000000 \
BOXOFFICE_LIMITS__MAX_CAPACITY_PER_TIER=1000000000 BOXOFFICE_ENGINE__MAX_IN_FLIGHT_PER_EVENT=$BOUND \
BOXOFFICE_LOG__FILTER=warn "$BIN/boxoffice" serve > "$DIR/serve.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do grep -q "boxoffice serving" "$DIR/serve.log" && break; sleep 0.1; done
H=(-H 'content-type: application/grpc' -H 'te: trailers' -H 'authorization: Bearer boxoffice-dev-key')
h2load -n 1 -c 1 -d "$DIR/frames/create.bin" "${H[@]}" "http://$GRPC/boxoffice.v1.EventAdmin/CreateEvent" > /dev/null
rss() { awk '/VmRSS/ {printf "%.0f MiB\n", $2/1024}' "/proc/$PID/status"; }
reserve() {
    # 10 connections x BOUND streams: ten times the bound in flight.
    h2load -n "$N" -c 10 -m "$BOUND" -t 1 -d "$DIR/frames/reserve.bin" "${H[@]}" \
        "http://$GRPC/boxoffice.v1.Reservations/Reserve" | grep -E "finished in|requests:|time for request"
}
echo "resident memory before: $(rss)"
h2load -n 150 -c 1 --rps 10 -d "$DIR/frames/empty.bin" "${H[@]}" \
    "http://$GRPC/grpc.health.v1.Health/Check" > "$DIR/health.txt" &
HEALTH=$!
reserve
echo "resident memory after: $(rss)"
if [[ -n ${AGAIN:-} ]]; then
    for round in 2 3; do reserve | grep "finished in"; echo "resident memory after round $round: $(rss)"; done
fi
wait $HEALTH
echo "health checks during the load:"
grep -E "requests:|time for request" "$DIR/health.txt"
python3 - "http://$METRICS/metrics" <<'PY'
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1]).read().decode()
buckets = {}
for line in text.splitlines():
    m = re.match(r'boxoffice_rpc_duration_seconds_bucket\{rpc="Reserve",outcome="(\w+)",le="([^"]+)"\} (\d+)', line)
    if m:
        le = float('inf') if m[2] == '+Inf' else float(m[2])
        buckets.setdefault(m[1], []).append((le, int(m[3])))
for outcome, bs in sorted(buckets.items()):
    bs.sort()
    total = bs[-1][1]
    q = lambda p: next(le for le, n in bs if n >= p * total) * 1e3
    print(f"Reserve {outcome}: {total} answers; server-side latency p50 <= {q(0.5):g} ms, "
          f"p99 <= {q(0.99):g} ms, p99.9 <= {q(0.999):g} ms (histogram bucket bounds)")
PY
