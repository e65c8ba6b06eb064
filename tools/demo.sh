#!/usr/bin/env bash
# make demo: the HTTP example under load, on loopback, for a few seconds.
#
#   tools/demo.sh BUILD_DIR
#
# Starts examples/http_hello on a free 127.0.0.1 port, drives it with
# examples/http_load (fibers too) for ~3 s, and prints what happened:
# requests/s and latency from the client, live fibers and RSS of the
# server (asked mid-run through SIGUSR1, read from /proc). Bounded in time;
# the server is stopped with SIGTERM (it shuts down through a signalfd).
set -euo pipefail
BUILD=${1:-build}
CONNS=${DEMO_CONNS:-100}
SECS=${DEMO_SECS:-3}
HELLO=$BUILD/examples/http_hello
LOAD=$BUILD/examples/http_load
for b in "$HELLO" "$LOAD"; do
    [ -x "$b" ] || { echo "demo: $b is missing (run make first)" >&2; exit 1; }
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
out=$(mktemp)
server=
cleanup() {
    if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server" 2>/dev/null || true
    fi
    rm -f "$out"
}
trap cleanup EXIT

"$HELLO" "$port" 127.0.0.1 >"$out" 2>&1 &
server=$!
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
grep -q listening "$out" || { echo "demo: the server did not start:" >&2; cat "$out" >&2; exit 1; }
sed -n 1p "$out"

rss_kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
idle_rss=$(rss_kb "$server" VmRSS)

# Mid-run: ask the server how many fibers are alive.
( sleep "$(awk -v s="$SECS" 'BEGIN { print s / 2 }')"; kill -USR1 "$server" 2>/dev/null;
  sleep 0.1; rss_kb "$server" VmRSS > "$out.rss" ) &
sampler=$!
echo "demo: $CONNS connections for ${SECS}s (http_load, one fiber per connection)"
timeout $((SECS + 20)) "$LOAD" -c "$CONNS" -d "$SECS" 127.0.0.1 "$port" | tee "$out.load"
wait "$sampler" || true
load_rss=$(cat "$out.rss" 2>/dev/null || echo "?")
peak_rss=$(rss_kb "$server" VmHWM)
stats=$(grep '^stats' "$out" | head -1)

kill -TERM "$server"
for _ in $(seq 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
wait "$server" 2>/dev/null || true
server=
echo
echo "server mid-run:  ${stats#stats }"
echo "server RSS:      idle ${idle_rss} KiB, under load ${load_rss} KiB, peak ${peak_rss} KiB"
echo "server exit:     $(tail -1 "$out")"
rm -f "$out.rss" "$out.load"
