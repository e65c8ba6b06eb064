#!/usr/bin/env bash
# Model-check the protocols (docs/model-checking.md).
#   model/check.sh [BUILD_DIR]
# Each line below is a model, what Spin must say, and the -D flags for spin
# (pan:-D... ones are for compiling its verifier, pan.c, run:... ones for
# running it). "ok": a full
# search finds no error. "bug": Spin finds a counterexample; the mutant
# deleted a fence or a step the protocol needs, and the check fails if
# Spin does NOT find it. Each run gets its own directory under
# BUILD_DIR/model, where a mutant's trail stays for `spin -t -p`.
# Last line, like `make check`: "N passed, N failed".
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-build}/model
mkdir -p "$out"

checks=(
  "wakeup  ok"
  "wakeup  ok  -DWORKER_SB"
  "wakeup  ok  -DNF=2 pan:-DHC4 run:-w25"
  "wakeup  bug -DMUTANT_NO_SUBMIT_FENCE"
  "wakeup  bug -DMUTANT_NO_RECHECK"
  "claim   ok"
  "claim   bug -DMUTANT_NO_HEAVY"
  "claim   bug -DMUTANT_CLAIM_NOT_CAS"
  "claim   bug -DMUTANT_READY_FIRST"
  "mutex   ok"
  "mutex   bug -DMUTANT_NO_HEAVY"
  "mutex   bug -DMUTANT_QUEUE_NO_CAS"
  "mutex   bug -DMUTANT_HANDOFF_SPLIT"
  "mutex   ok  -DCANCEL -DNF=2 -DITER0=3"
  "mutex   bug -DCANCEL -DNF=2 -DITER0=3 -DMUTANT_HANDOFF_NO_RELEASE"
)

# pan: safety properties only (assertions, invalid end states); states
# stored compressed (-DCOLLAPSE, unless a check asks for hash compaction,
# -DHC4, which is much slower combined with it), under a memory cap so that
# a model grown too big fails instead of swapping a shared machine. pan.c
# is large: a full search is compiled with -O1 (the best total of compile
# and search time), a mutant's, which stops at its first error, with -O0.
PAN_CFLAGS=${PAN_CFLAGS:--w -DSAFETY -DMEMLIM=1024}

# CPU seconds of our finished children (spin, cc, pan) into $cpu: the
# machine may be shared, so wall time alone says little. `times` must run
# in this shell, not in a $(...) subshell, to see them.
tf=$(mktemp) && trap 'rm -f "$tf"' EXIT
cpu_now() { times >"$tf"; cpu=$(awk 'NR == 2 { split($1, u, "m"); split($2, s, "m");
    print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$tf"); }

pass=0 fail=0
for c in "${checks[@]}"; do
    read -r model want flags <<<"$c"
    defs= pandefs= runargs=
    for f in $flags; do
        case $f in
        pan:*) pandefs+=" ${f#pan:}" ;;
        run:*) runargs+=" ${f#run:}" ;;
        *) defs+="${defs:+ }$f" ;;
        esac
    done
    name=$model$(echo "$defs$pandefs" | tr -d ' ' | sed 's/-D/-/g')
    dir=$out/$name
    rm -rf "$dir" && mkdir -p "$dir"
    cp "$here"/*.pml "$dir"/
    start=$(date +%s.%N)
    cpu_now; cpu0=$cpu
    # shellcheck disable=SC2086
    if ! (cd "$dir" && spin $defs -a "$model.pml" >spin.log 2>&1 &&
          ${CC_PAN:-gcc} $([ "$want" = ok ] && echo -O1 || echo -O0) $PAN_CFLAGS ${pandefs:- -DCOLLAPSE} \
              -o pan pan.c >cc.log 2>&1); then
        echo "FAIL $model $defs: spin or cc failed (see $dir)"
        fail=$((fail + 1))
        continue
    fi
    # shellcheck disable=SC2086
    (cd "$dir" && ./pan -m1000000 $runargs >pan.log 2>&1)
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    cpu_now; cpu=$(awk -v a="$cpu0" -v b="$cpu" 'BEGIN { print b - a }')
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$dir/pan.log" | tail -1)
    states=$(sed -n 's/^ *\([0-9e.+]*\) states, stored.*/\1/p' "$dir/pan.log")
    what=$(grep -m1 -E '^pan:[0-9]+: ' "$dir/pan.log" | sed 's/^pan:[0-9]*: //')
    partial=$(grep -E 'reached -DMEMLIM|max search depth too small|search not completed' "$dir/pan.log")
    msg=$(printf '%-7s %-58s %10s states %5.1f s cpu %5.1f s' "$model" "${flags:-(as written)}" \
          "${states:-?}" "$cpu" "$secs")
    if [ "$want" = ok ] && [ "${errors:-x}" = 0 ] && [ -z "$partial" ]; then
        echo "ok   $msg"
        pass=$((pass + 1))
    elif [ "$want" = bug ] && [ -n "$errors" ] && [ "$errors" != 0 ]; then
        echo "ok   $msg  found: $what (trail: $dir/$model.pml.trail)"
        pass=$((pass + 1))
    else
        echo "FAIL $msg  wanted $want, got errors=${errors:-?} $what $partial (see $dir/pan.log)"
        fail=$((fail + 1))
    fi
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
