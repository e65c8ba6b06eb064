#!/usr/bin/env bash
# bench/run.sh — what `make bench` runs: weft's benchmarks beside their peers.
#
#   bash bench/run.sh [BUILD_DIR]          (BUILD_DIR defaults to "build")
#
# Builds the peers (Go programs in bench/go/, the C servers bench/peer_*.c)
# into BUILD_DIR/bench/, runs every row of the table below, and prints weft's
# number, the peer's number, the ratio weft/peer and whether it meets the row's
# target. A missed target never fails the run: the exit status is 0 unless
# something broke (a build failed, a benchmark crashed, hung or printed no
# result, a server died or answered wrongly).
#
# Every benchmark program prints one line per measured case on stdout:
#     RESULT <case> <value> <unit>
# Units ending in "/s" (req/s, msg/s, MB/s) are higher-is-better, all others
# (ns/op, us, ms, kB) lower-is-better. The ratio is always weft/peer, so time
# targets read "<= X" and throughput targets ">= X".
#
# Environment:
#   BENCH_ROUNDS       times each row is measured, weft and peer in turn
#                      (default 3); the row reports the median ratio
#   BENCH_SECONDS      length of each wrk / echo load run (default 5)
#   BENCH_ONLY         extended regex: run only rows whose name matches
#   BENCH_RUN_TIMEOUT  limit for one run of a "run" row's program, s (default 300)
#   BENCH_VERBOSE=1    print every measured program's output
#   CC                 C compiler for the C peers (default cc)
#   GO                 go command (default go)

# =============================================================================
# THE TABLE — add a benchmark by adding a line.
#
# Columns, separated by "|" (spaces around them are ignored):
#   name    row name, unique
#   kind    how both sides are measured:
#             run          run the command; read RESULT <case> from its stdout
#             http:N       start the command as a server (the port is appended
#                          as its last argument), load it for BENCH_SECONDS with
#                          `wrk -t2 -cN`, sampling the server's VmRSS meanwhile;
#                          gives cases http_N (req/s) and rss_N (peak VmRSS, kB)
#             echo:N:SIZE  start the command as a server (port appended), drive
#                          it with the Go echo client: N connections, SIZE-byte
#                          ping-pong for BENCH_SECONDS; gives case echo_N (msg/s)
#           Under http and echo rows a note gives each server's CPU time per
#           request or message: the load generator shares the two cores, so
#           throughput alone understates what a leaner server saves.
#   weft    weft's command: a path relative to BUILD_DIR, then its arguments
#   wcase   the RESULT case to read from weft's side
#   peer    the label printed for the peer side
#   pcmd    the peer's command, like weft's
#   pcase   the RESULT case to read from the peer's side
#   target  on the ratio weft/peer: "<=X" or ">=X"
#
# Each row is measured BENCH_ROUNDS times, its weft side and its peer side
# in turn (w p w p w p), so that a machine that speeds up or slows down
# mid-run moves both sides of a round alike; the row reports the round with
# the median ratio and lists every round's ratio after it. Measurements are
# not shared between rows (a weft run taken for an earlier row would be
# minutes away from this row's peer run); within a row, a side whose kind
# and command equal the other's reads the same run (budget rows, trace_skynet).
# A row whose weft binary does not exist yet is skipped, not failed.
# -----------------------------------------------------------------------------
# name                | kind         | weft                            | wcase           | peer     | pcmd                          | pcase           | target
TABLE='
skynet                | run          | bench/bench_sched skynet          | skynet          | go       | bench/go/skynet               | skynet          | <=0.3
spawn_join            | run          | bench/bench_sched spawn_join      | spawn_join      | go       | bench/go/spawn                | spawn_join      | <=0.5
chan_pingpong         | run          | bench/bench_sched chan_pingpong   | chan_pingpong   | go       | bench/go/pingpong             | chan_pingpong   | <=0.5
yield_pingpong        | run          | bench/bench_sched yield_pingpong  | yield_pingpong  | go       | bench/go/pingpong             | yield_pingpong  | <=0.5
mutex_contended       | run          | bench/bench_sched mutex_contended | mutex_contended | go       | bench/go/pingpong             | mutex_contended | <=0.5
switch                | run          | bench/bench_switch switch         | switch          | fcontext | bench/bench_switch fcontext   | fcontext        | <=1.0
handoff               | run          | bench/bench_switch handoff        | handoff         | fcontext | bench/bench_switch fcontext_handoff | fcontext_handoff | <=1.0
spawn_join_1w         | run          | bench/bench_switch spawn_join_1w  | spawn_join_1w   | budget   | bench/bench_switch spawn_join_1w | spawn_join_budget | <=1.0
stack_alloc_free      | run          | bench/bench_switch stack_alloc_free | stack_alloc_free | mmap  | bench/bench_switch mmap_stack | mmap_stack_alloc_free | <=0.1
timer_late_p99        | run          | bench/bench_timers timers         | timer_late_p99  | budget   | bench/bench_timers timers     | timer_budget    | <=1.0
idle_cpu              | run          | bench/bench_timers idle           | idle_cpu        | budget   | bench/bench_timers idle       | idle_budget     | <=1.0
idle_beside_busy      | run          | bench/bench_timers beside         | beside_cpu      | budget   | bench/bench_timers beside     | beside_budget   | <=1.0
spawn_join_batch      | run          | bench/bench_sched spawn_join_batch | spawn_join_batch | go    | bench/go/spawn                | spawn_join_batch | <=0.5
fanout_1              | run          | bench/bench_sched fanout_1        | fanout_1        | go       | bench/go/fanout               | fanout_1        | <=1.0
fanout_2              | run          | bench/bench_sched fanout_2        | fanout_2        | go       | bench/go/fanout               | fanout_2        | <=1.0
# CPU-bound fan-out on 2 workers against weft itself on 1: >= 1.8x faster means ratio <= 0.556
fanout_scaling        | run          | bench/bench_sched fanout_2        | fanout_2        | weft-1w  | bench/bench_sched fanout_1    | fanout_1        | <=0.556
trace_skynet          | run          | bench/bench_trace                 | skynet_trace_on | trace-off| bench/bench_trace             | skynet_trace_off| <=2.0
http_hello_100        | http:100     | examples/http_hello               | http_100        | go       | bench/go/http                 | http_100        | >=1.5
http_hello_10000      | http:10000   | examples/http_hello               | http_10000      | go       | bench/go/http                 | http_10000      | >=1.5
http_hello_100_epoll  | http:100     | examples/http_hello               | http_100        | epoll    | bench/peer_epoll_http         | http_100        | >=0.9
http_hello_10000_epoll| http:10000   | examples/http_hello               | http_10000      | epoll    | bench/peer_epoll_http         | http_10000      | >=0.9
http_rss_10000        | http:10000   | examples/http_hello               | rss_10000       | thread   | bench/peer_thread_http        | rss_10000       | <=0.25
echo_1000             | echo:1000:64 | examples/echo_server              | echo_1000       | go       | bench/go/echo                 | echo_1000       | >=1.5
'
# =============================================================================

set -u
set -o pipefail
export LC_ALL=C                 # "." as the decimal point, in printf, awk and wrk

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ARG=${1:-build}
BUILD_ARG=${BUILD_ARG%/}
mkdir -p "$BUILD_ARG/bench/go" "$BUILD_ARG/bench/out" || exit 1
BUILD=$(cd "$BUILD_ARG" && pwd)
OUT=$BUILD/bench/out            # every measured program's output is kept here
rm -f "$OUT"/*

SECONDS_PER_RUN=${BENCH_SECONDS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-300}
ONLY=${BENCH_ONLY:-}
VERBOSE=${BENCH_VERBOSE:-0}
CC=${CC:-cc}
GO=${GO:-go}

case $SECONDS_PER_RUN in ''|*[!0-9]*|0) echo "bench: BENCH_SECONDS must be a positive integer" >&2; exit 2;; esac
case $ROUNDS in ''|*[!0-9]*|0) echo "bench: BENCH_ROUNDS must be a positive integer" >&2; exit 2;; esac
case $RUN_TIMEOUT in ''|*[!0-9]*|0) echo "bench: BENCH_RUN_TIMEOUT must be a positive integer" >&2; exit 2;; esac

# 10,000 connections need more than the usual 1024 descriptors, in wrk and in
# the server alike; take 65536, or as many as the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- processes we started; all killed on exit ---------------------------------
# Everything long-lived is started under `timeout`, which bounds its life and
# makes it the leader of a process group of its own: PIDS holds those
# leaders, and a last-resort SIGKILL goes to the whole group.
PIDS=()
forget_pid() {
    local p keep=()
    for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null
    done
    PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

SERVER_PID= SERVER_TPID= SERVER_RC=0 PORT=
FAILURES=0
fail_note() { echo "error: $*"; FAILURES=$((FAILURES + 1)); }

echo "bench: build dir $BUILD_ARG, $ROUNDS rounds, ${SECONDS_PER_RUN}s per load run; outputs in $BUILD_ARG/bench/out/"

# --- build the peers --------------------------------------------------------------
HAVE_GO=0
if command -v "$GO" >/dev/null 2>&1; then
    HAVE_GO=1
    for f in "$SRC"/bench/go/*.go; do
        [ -e "$f" ] || continue
        name=$(basename "$f" .go)
        if ! (cd "$SRC" && GOCACHE="$BUILD/gocache" GOPATH="$BUILD/gopath" GOFLAGS= \
                GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
                "$GO" build -o "$BUILD/bench/go/$name" "bench/go/$name.go") >"$OUT/build-go-$name.log" 2>&1; then
            fail_note "go build bench/go/$name.go failed:"
            sed 's/^/    /' "$OUT/build-go-$name.log"
            rm -f "$BUILD/bench/go/$name"
        fi
    done
else
    echo "note: '$GO' not found: Go peers not built, their rows are skipped"
fi
for name in peer_epoll_http peer_thread_http; do
    if ! "$CC" -O2 -pthread -o "$BUILD/bench/$name" "$SRC/bench/$name.c" >"$OUT/build-$name.log" 2>&1; then
        fail_note "$CC -O2 -pthread bench/$name.c failed:"
        sed 's/^/    /' "$OUT/build-$name.log"
        rm -f "$BUILD/bench/$name"
    fi
done
HAVE_WRK=0; command -v wrk >/dev/null 2>&1 && HAVE_WRK=1
HAVE_CURL=0; command -v curl >/dev/null 2>&1 && HAVE_CURL=1

# --- servers --------------------------------------------------------------------------
# Ports are drawn below the kernel's ephemeral range (32768+ by default), so
# the load generator's own 10,000 client ports never collide with them.
port_free() {
    if command -v ss >/dev/null 2>&1 && ss -Htln "sport = :$1" 2>/dev/null | grep -q .; then
        return 1
    fi
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
port_accepts() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# start_server LOG CMD... : start CMD PORT on a free loopback port and wait
# until it accepts. Sets PORT, SERVER_TPID (the `timeout` guard around it)
# and SERVER_PID (the server itself). Returns 1 if it never came up.
start_server() {
    local log=$1; shift
    local attempt i
    for attempt in 1 2 3 4 5; do
        PORT=$((20000 + RANDOM % 12000))
        port_free "$PORT" || continue
        # The guard bounds the server's life even if this script is killed hard.
        timeout -k 5 $((SECONDS_PER_RUN + 600)) "$@" "$PORT" >"$log" 2>&1 &
        SERVER_TPID=$!
        PIDS+=("$SERVER_TPID")
        for i in $(seq 1 100); do
            if ! kill -0 "$SERVER_TPID" 2>/dev/null; then break; fi
            if port_accepts "$PORT"; then
                SERVER_PID=$(cat "/proc/$SERVER_TPID/task/$SERVER_TPID/children" 2>/dev/null | awk '{print $1}')
                [ -n "$SERVER_PID" ] || SERVER_PID=$(pgrep -P "$SERVER_TPID" | head -n1)
                return 0
            fi
            sleep 0.1
        done
        # It died (perhaps the port was taken after all) or never accepted.
        stop_server
    done
    return 1
}

# stop_server: returns 1 if the server had already died before we stopped it.
stop_server() {
    local alive=0 rc
    kill -0 "$SERVER_TPID" 2>/dev/null && alive=1
    kill -TERM "$SERVER_TPID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$SERVER_TPID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$SERVER_TPID" 2>/dev/null || kill -KILL "$SERVER_TPID" 2>/dev/null
    wait "$SERVER_TPID" 2>/dev/null; rc=$?
    forget_pid "$SERVER_TPID"
    SERVER_PID=
    [ $alive = 1 ] && return 0
    SERVER_RC=$rc
    return 1
}

# cpu_ticks PID : user + system CPU time of PID so far, in clock ticks (empty
# if it is gone). The fields after the command name, which may hold spaces.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cpu_ticks() {
    sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }'
}

# cpu_note T0 T1 RATE WHAT : "server CPU <us> us per WHAT", from the ticks
# before and after a load of BENCH_SECONDS that made RATE of them a second;
# nothing if unknown.
cpu_note() {
    [ -n "$1" ] && [ -n "$2" ] || return 0
    awk -v a="$1" -v b="$2" -v n="$3" -v s="$SECONDS_PER_RUN" -v hz="$CLK_TCK" -v what="$4" \
        'BEGIN { n *= s; if (n > 0) printf "server CPU %.1f us per %s (the whole load, its connects included)\n", (b - a) / hz * 1e6 / n, what }'
}

# --- measurements ---------------------------------------------------------------------
# measure ROUND KIND CMD : leaves the output with RESULT lines in the file
# $M_OUT and the reason for a failure in $M_ERR (empty if it worked).
# Memoised per row ($name) and round.
declare -A MEMO_OUT MEMO_ERR
M_SEQ=0

measure() {
    local round=$1; shift
    local kind=$1 cmd=$2 key="$name|$round|$1|$2"
    if [ -n "${MEMO_OUT[$key]+x}" ]; then
        M_OUT=${MEMO_OUT[$key]}; M_ERR=${MEMO_ERR[$key]}
        return
    fi
    M_SEQ=$((M_SEQ + 1))
    local tag
    tag=$(printf '%02d-%s' "$M_SEQ" "$(echo "$kind $cmd" | tr -c 'A-Za-z0-9_.\n-' '_')")
    M_OUT=$OUT/$tag.out
    M_ERR=
    : >"$M_OUT"
    local -a argv
    read -r -a argv <<<"$cmd"
    argv[0]=$BUILD/${argv[0]}
    case $kind in
        run)          measure_run "$tag" "${argv[@]}" ;;
        http:*)       measure_http "$tag" "${kind#http:}" "${argv[@]}" ;;
        echo:*:*)     local n=${kind#echo:}; measure_echo "$tag" "${n%%:*}" "${n#*:}" "${argv[@]}" ;;
        *)            M_ERR="unknown kind '$kind'" ;;
    esac
    if [ "$VERBOSE" = 1 ]; then
        echo "---- round $round: $kind $cmd"; cat "$M_OUT"; [ -s "$OUT/$tag.err" ] && cat "$OUT/$tag.err"
    fi
    MEMO_OUT[$key]=$M_OUT
    MEMO_ERR[$key]=$M_ERR
}

describe_rc() {
    case $1 in
        124)     echo "timed out" ;;
        137)     echo "killed (SIGKILL: timed out and did not stop on SIGTERM, or out of memory)" ;;
        0)       echo "ok" ;;
        *)       if [ "$1" -gt 128 ]; then echo "killed by signal $(( $1 - 128 )) ($(kill -l $(( $1 - 128 )) 2>/dev/null))"; else echo "exit status $1"; fi ;;
    esac
}

# run_bounded OUT ERR LIMIT CMD... : run CMD for at most LIMIT seconds; sets
# RB_RC. In the background and waited for, so that INT/TERM interrupt it.
run_bounded() {
    local out=$1 err=$2 lim=$3; shift 3
    timeout -k 5 "$lim" "$@" >"$out" 2>"$err" </dev/null &
    local p=$!
    PIDS+=("$p")
    wait "$p"; RB_RC=$?
    forget_pid "$p"
}

measure_run() {
    local tag=$1; shift
    run_bounded "$M_OUT" "$OUT/$tag.err" "$RUN_TIMEOUT" "$@"
    [ $RB_RC = 0 ] || M_ERR="$(describe_rc $RB_RC) (see $OUT/$tag.err)"
}

# measure_http TAG CONNS CMD... : wrk against the server; RSS sampled meanwhile.
measure_http() {
    local tag=$1 conns=$2; shift 2
    if ! start_server "$OUT/$tag.err" "$@"; then
        M_ERR="server did not start accepting (see $OUT/$tag.err)"; return
    fi
    if [ $HAVE_CURL = 1 ]; then
        local body
        body=$(timeout 5 curl -s "http://127.0.0.1:$PORT/"; echo x)
        if [ "$body" != $'Hello, World!\nx' ]; then
            M_ERR="wrong answer to GET / (curl got: $(printf %q "${body%x}"))"
            stop_server; return
        fi
    fi
    local wrk_out=$OUT/$tag.wrk
    timeout -k 5 $((SECONDS_PER_RUN + 60)) \
        wrk -t2 -c"$conns" -d"${SECONDS_PER_RUN}s" "http://127.0.0.1:$PORT/" >"$wrk_out" 2>&1 </dev/null &
    local wpid=$!
    PIDS+=("$wpid")
    local peak=0 rss threads=0 t t0
    t0=$(cpu_ticks "${SERVER_PID:-0}")
    while kill -0 "$wpid" 2>/dev/null; do
        if [ -n "${SERVER_PID:-}" ] && [ -r "/proc/$SERVER_PID/status" ]; then
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)
            t=$(awk '/^Threads:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)
            if [ -n "$rss" ] && [ "$rss" -gt "$peak" ]; then peak=$rss; threads=${t:-0}; fi
        fi
        sleep 0.2
    done
    wait "$wpid"; local wrc=$?
    local t1
    t1=$(cpu_ticks "${SERVER_PID:-0}")
    forget_pid "$wpid"
    local hwm=
    [ -n "${SERVER_PID:-}" ] && hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null)
    if ! stop_server; then
        M_ERR="server died during the load: $(describe_rc "$SERVER_RC") (see $OUT/$tag.err)"; return
    fi
    if [ $wrc != 0 ]; then
        M_ERR="wrk: $(describe_rc $wrc) (see $wrk_out)"; return
    fi
    local rps
    rps=$(awk '/^Requests\/sec:/ {print $2}' "$wrk_out")
    if [ -z "$rps" ]; then
        M_ERR="no Requests/sec in wrk's output (see $wrk_out)"; return
    fi
    {
        sed 's/^/wrk: /' "$wrk_out"
        echo "server peak VmRSS ${peak} kB with ${threads} threads, VmHWM ${hwm:-?} kB"
        cpu_note "$t0" "$t1" "$rps" request
        echo "RESULT http_$conns $rps req/s"
        [ "$peak" -gt 0 ] && echo "RESULT rss_$conns $peak kB"
    } >"$M_OUT"
    if grep -q 'Non-2xx or 3xx responses' "$wrk_out"; then
        M_ERR="server sent non-2xx answers (see $wrk_out)"
    fi
}

# measure_echo TAG CONNS SIZE CMD... : the Go echo client against the server.
measure_echo() {
    local tag=$1 conns=$2 size=$3; shift 3
    if ! start_server "$OUT/$tag.err" "$@"; then
        M_ERR="server did not start accepting (see $OUT/$tag.err)"; return
    fi
    local t0 t1
    t0=$(cpu_ticks "${SERVER_PID:-0}")
    run_bounded "$M_OUT" "$OUT/$tag.client.err" $((SECONDS_PER_RUN + 60)) \
        "$BUILD/bench/go/echo" client "$PORT" "$conns" "$SECONDS_PER_RUN" "$size"
    local rc=$RB_RC
    t1=$(cpu_ticks "${SERVER_PID:-0}")
    if result "$M_OUT" "echo_$conns"; then
        cpu_note "$t0" "$t1" "$R_VAL" message >>"$M_OUT"
    fi
    if ! stop_server; then
        M_ERR="server died during the load: $(describe_rc "$SERVER_RC") (see $OUT/$tag.err)"; return
    fi
    [ $rc = 0 ] || M_ERR="echo client: $(describe_rc $rc) (see $OUT/$tag.client.err)"
}

# --- the rows ---------------------------------------------------------------------------
trim() { local s=$1; s=${s#"${s%%[![:space:]]*}"}; s=${s%"${s##*[![:space:]]}"}; printf '%s' "$s"; }

# result FILE CASE : sets R_VAL and R_UNIT from the last "RESULT CASE v u" line.
result() {
    local line
    line=$(awk -v c="$2" '$1 == "RESULT" && $2 == c { v = $3; u = $4 } END { if (v != "") print v, u }' "$1" 2>/dev/null)
    R_VAL=${line%% *}; R_UNIT=${line#* }
    [ -n "$line" ] && [[ $R_VAL =~ ^[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$ ]]
}

# Scale of a unit within its family, so "us" and "ms" compare; empty if none.
unit_scale() {
    case $1 in
        ps|ps/op) echo 1e-3 ;; ns|ns/op) echo 1 ;;   us|us/op) echo 1e3 ;;  ms|ms/op) echo 1e6 ;;  s|s/op) echo 1e9 ;;
        B) echo 1 ;;          kB|KB|KiB) echo 1e3 ;;  MB|MiB) echo 1e6 ;;    GB|GiB) echo 1e9 ;;
        *) echo "" ;;
    esac
}
unit_family() {
    case $1 in ps|ns|us|ms|s) echo t ;; ps/op|ns/op|us/op|ms/op|s/op) echo t/op ;; B|kB|KB|KiB|MB|MiB|GB|GiB) echo mem ;; *) echo "" ;; esac
}

ROWS=0 OK=0 MISS=0 SKIP=0 ROWFAIL=0
row_fail() { printf '%-22s FAILED: %s\n' "$1" "$2"; ROWFAIL=$((ROWFAIL + 1)); }
row_skip() { echo "skip: $1 ($2)"; SKIP=$((SKIP + 1)); }

# The binary a command runs, and why a row cannot run yet (empty if it can).
missing_reason() {
    local bin=${1%% *}
    if [ ! -x "$BUILD/$bin" ]; then
        if [ $HAVE_GO = 0 ] && [[ $bin == bench/go/* ]]; then
            echo "$GO not found, Go peer $BUILD_ARG/$bin not built"
        else
            echo "$BUILD_ARG/$bin missing"
        fi
    fi
}

# run_round K : round K of the row being read (kind, wcmd, wcase, pcmd, pcase):
# both sides, then their ratio. Sets W_VAL/W_UNIT, P_VAL/P_UNIT, RATIO
# (weft/peer, a plain number), w_out/p_out, and ROUND_ERR when it failed.
run_round() {
    local k=$1 wscale=1 pscale=1
    measure "$k" "$kind" "$wcmd"; w_out=$M_OUT
    if [ -n "$M_ERR" ]; then ROUND_ERR="weft side ($wcmd): $M_ERR"; return 1; fi
    if ! result "$w_out" "$wcase"; then ROUND_ERR="weft side ($wcmd) printed no 'RESULT $wcase <value> <unit>' (see $w_out)"; return 1; fi
    W_VAL=$R_VAL; W_UNIT=$R_UNIT
    measure "$k" "$kind" "$pcmd"; p_out=$M_OUT
    if [ -n "$M_ERR" ]; then ROUND_ERR="peer side ($pcmd): $M_ERR"; return 1; fi
    if ! result "$p_out" "$pcase"; then ROUND_ERR="peer side ($pcmd) printed no 'RESULT $pcase <value> <unit>' (see $p_out)"; return 1; fi
    P_VAL=$R_VAL; P_UNIT=$R_UNIT
    # Bring both to one unit when they differ within a family (us vs ms, ...).
    if [ "$W_UNIT" != "$P_UNIT" ]; then
        if [ -n "$(unit_family "$W_UNIT")" ] && [ "$(unit_family "$W_UNIT")" = "$(unit_family "$P_UNIT")" ]; then
            wscale=$(unit_scale "$W_UNIT"); pscale=$(unit_scale "$P_UNIT")
        else
            ROUND_ERR="units differ: weft $W_UNIT, peer $P_UNIT"; return 1
        fi
    fi
    RATIO=$(awk -v w="$W_VAL" -v p="$P_VAL" -v ws="$wscale" -v ps="$pscale" \
        'BEGIN { if (p * ps == 0) print "nan"; else printf "%.6g\n", (w * ws) / (p * ps) }')
    if [ "$RATIO" = nan ]; then ROUND_ERR="peer measured 0 $P_UNIT"; return 1; fi
}

while IFS= read -r -u 9 raw; do
    line=$(trim "$raw")
    [ -z "$line" ] && continue
    [[ $line == \#* ]] && continue
    IFS='|' read -r name kind wcmd wcase plabel pcmd pcase target extra <<<"$line"
    name=$(trim "$name"); kind=$(trim "$kind"); wcmd=$(trim "$wcmd"); wcase=$(trim "$wcase")
    plabel=$(trim "$plabel"); pcmd=$(trim "$pcmd"); pcase=$(trim "$pcase"); target=$(trim "$target")
    if [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]]; then continue; fi
    ROWS=$((ROWS + 1))
    if [ -z "$target" ] || [ -n "$(trim "${extra:-}")" ] || ! [[ $target =~ ^(\<=|\>=)[0-9]+([.][0-9]+)?$ ]]; then
        row_fail "$name" "malformed table row: $line"; continue
    fi
    top=${target:0:2}; tval=${target:2}

    why=$(missing_reason "$wcmd"); [ -n "$why" ] && { row_skip "$name" "$why"; continue; }
    why=$(missing_reason "$pcmd"); [ -n "$why" ] && { row_skip "$name" "$why"; continue; }
    case $kind in
        http:*) [ $HAVE_WRK = 1 ] || { row_skip "$name" "wrk not found"; continue; } ;;
        echo:*) why=$(missing_reason bench/go/echo); [ -n "$why" ] && { row_skip "$name" "echo client: $why"; continue; } ;;
    esac

    # Every round's ratio, and the outputs of each, kept by ratio for the median.
    ROUND_ERR= rounds=() w_outs=() p_outs=()
    for k in $(seq 1 "$ROUNDS"); do
        run_round "$k" || break
        rounds+=("$RATIO $W_VAL $W_UNIT $P_VAL $P_UNIT $k")
        w_outs[$k]=$w_out; p_outs[$k]=$p_out
    done
    if [ -n "$ROUND_ERR" ]; then row_fail "$name" "$ROUND_ERR"; continue; fi
    # The median round (the lower one of the middle two for an even count).
    median=$(printf '%s\n' "${rounds[@]}" | sort -g -k1,1 | sed -n "$(( (ROUNDS + 1) / 2 ))p")
    read -r ratio_raw wval wunit pval punit mk <<<"$median"
    w_out=${w_outs[$mk]}; p_out=${p_outs[$mk]}
    spread=$(printf '%s\n' "${rounds[@]}" | sort -n -k6,6 | awk '{ printf "%s%.2f", (NR > 1 ? " " : ""), $1 }')
    verdict=$(awk -v r="$ratio_raw" -v op="$top" -v t="$tval" 'BEGIN {
        ok = (op == "<=") ? (r <= t + 1e-12) : (r >= t - 1e-12)
        printf "%.2f %s\n", r, ok ? "OK" : "MISS" }')
    ratio=${verdict% *}; status=${verdict#* }
    printf '%-22s weft %10s %-5s  %-8s %10s %-5s  ratio %6s  (target %s %.2f)  %s' \
        "$name" "$wval" "$wunit" "$plabel" "$pval" "$punit" "$ratio" "$top" "$tval" "$status"
    [ "$ROUNDS" -gt 1 ] && printf '  [rounds: %s]' "$spread"
    printf '\n'
    if [ "$status" = OK ]; then OK=$((OK + 1)); else MISS=$((MISS + 1)); fi
    # Worth knowing beside the number: wrk's socket errors; for memory rows
    # how many threads the server had when its RSS peaked; for throughput
    # rows the server's CPU per request, which the load generator sharing
    # the machine's cores does not blur.
    for side in weft:"$w_out":"$wcase" "$plabel":"$p_out":"$pcase"; do
        IFS=: read -r slabel sout scase <<<"$side"
        grep -h '^wrk: *Socket errors' "$sout" 2>/dev/null | sed "s/^wrk: */    note ($slabel): wrk /"
        [[ $scase == rss_* ]] && grep -h '^server peak' "$sout" 2>/dev/null | sed "s/^/    note ($slabel): /"
        [[ $scase == http_* || $scase == echo_* ]] && grep -h '^server CPU' "$sout" 2>/dev/null | sed "s/^/    note ($slabel): /"
    done
done 9<<<"$TABLE"

if [ $ROWFAIL -gt 0 ] || [ $FAILURES -gt 0 ]; then
    echo "bench: FAILED: $ROWFAIL row(s) broken, $FAILURES build error(s) (outputs in $BUILD_ARG/bench/out/)"
fi
echo "bench: $ROWS rows, $OK ok, $MISS miss, $SKIP skipped"
[ $ROWFAIL = 0 ] && [ $FAILURES = 0 ]
