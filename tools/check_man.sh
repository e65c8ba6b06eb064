#!/usr/bin/env bash
# The manual pages must cover the API and render cleanly.
#
#   tools/check_man.sh [ROOT [LIBWEFT_SO]]
#
# 1. Every public function has a page: the WEFT_API declarations of
#    include/weft.h, and the defined weft_* text symbols of the shared
#    library (build/libweft.so, when it has been built), each need
#    man/man3/NAME.3, and the page it is (or its .so line names) must list
#    NAME in its NAME section. The library may export nothing the header
#    does not declare.
# 2. Every page renders without a warning (groff -ww: every warning, at 80
#    columns). A link page is one ".so man3/x.3" line naming a page of its
#    own, and renders as that page. A page of its own has the sections
#    every page of this manual has.
# 3. Every weft page a SEE ALSO names exists, every tree path a page names
#    (docs/..., src/..., include/..., examples/...) exists, and weft(7)
#    names every page of section 3.
#
# Prints each problem, then "check_man: N pages, N symbols, N problems";
# exits 1 if there is one. Run by `make check` (test/test_man_posix.c).
# Written to fork little: make check runs it on a loaded machine.
set -u
ROOT=${1:-$(dirname "$0")/..}
cd "$ROOT" || exit 2
SO=${2:-build/libweft.so}
problems=0
say() { echo "$*"; problems=$((problems + 1)); }

shopt -s nullglob
pages=(man/man3/*.3 man/man7/*.7)

# ------------------------------------------------------- what each page says
# One awk pass over every page, one fact a line:
#   link PAGE TARGET      PAGE is ".so TARGET" (TARGET relative to man/)
#   lines PAGE N          PAGE has N lines
#   sec PAGE NAME         PAGE has the section NAME
#   name PAGE FN          PAGE's NAME section lists FN
#   see PAGE NAME(N)      PAGE's SEE ALSO names the weft page NAME(N)
#   path PAGE PATH        PAGE names the tree path PATH
facts=$(awk '
    function flush() { if (file != "") print "lines", file, n }
    FNR == 1 {
        flush(); file = FILENAME; n = 0; sec = ""
        if ($1 == ".so") print "link", FILENAME, $2
    }
    { n++ }
    /^\.SH/ {
        sec = $0; sub(/^\.SH +/, "", sec); gsub(/"/, "", sec)
        print "sec", FILENAME, sec
        next
    }
    sec == "NAME" {
        line = $0
        sub(/\\-.*/, "", line)
        gsub(/\\f[BIRP]|[ \t]/, "", line)
        k = split(line, a, ",")
        for (i = 1; i <= k; i++) if (a[i] != "") print "name", FILENAME, a[i]
    }
    sec == "SEE ALSO" {
        line = $0
        gsub(/\\f[BIRP]/, "", line)
        sub(/^\.BR? +/, "", line)
        while (match(line, /weft[A-Za-z0-9_-]* *\([0-9]\)/)) {
            ref = substr(line, RSTART, RLENGTH); gsub(/ /, "", ref)
            print "see", FILENAME, ref
            line = substr(line, RSTART + RLENGTH)
        }
    }
    {
        line = $0
        gsub(/\\-/, "-", line)
        while (match(line, /(docs|src|include|examples|tools|test)\/[A-Za-z0-9_.\/-]*[A-Za-z0-9_]/)) {
            print "path", FILENAME, substr(line, RSTART, RLENGTH)
            line = substr(line, RSTART + RLENGTH)
        }
    }
    END { flush() }' "${pages[@]}")

declare -A link lines has lists
while read -r kind page what; do
    case $kind in
    link) link[$page]=man/$what ;;
    lines) lines[$page]=$what ;;
    sec) has["$page|$what"]=1 ;;
    name) lists["$page|$what"]=1 ;;
    esac
done <<<"$facts"

# ------------------------------------------------------------ the symbols
declare -A declared
syms=()
while read -r s; do
    [ -n "$s" ] && [ -z "${declared[$s]:-}" ] && declared[$s]=1 && syms+=("$s")
done < <(sed -nE 's/^WEFT_API[^(]*[^A-Za-z0-9_](weft_[A-Za-z0-9_]+)[[:space:]]*\(.*/\1/p' include/weft.h)
if [ -e "$SO" ] && command -v nm >/dev/null; then
    while read -r s; do
        if [ -z "${declared[$s]:-}" ]; then
            say "$SO exports $s, which include/weft.h does not declare"
            declared[$s]=1
            syms+=("$s")
        fi
    done < <(nm -D --defined-only "$SO" | awk '$2 == "T" && $3 ~ /^weft_/ { print $3 }')
fi

for s in "${syms[@]}"; do
    page=man/man3/$s.3
    real=${link[$page]:-$page}
    if [ ! -f "$page" ]; then
        say "$s: no page $page"
    elif [ -z "${lists["$real|$s"]:-}" ]; then
        say "$real: its NAME section does not list $s"
    fi
done

# ------------------------------------------------------------- rendering
own=()
for p in "${pages[@]}"; do
    if [ -n "${link[$p]:-}" ]; then
        real=${link[$p]}
        [ -f "$real" ] && [ -z "${link[$real]:-}" ] ||
            say "$p: links to $real, which is not a page of its own"
        [ "${lines[$p]}" = 1 ] || say "$p: a link page is one .so line"
        continue
    fi
    own+=("$p")
    want=(NAME DESCRIPTION "SEE ALSO")
    case "$p" in
    man/man3/*) want+=(SYNOPSIS "RETURN VALUE" ERRORS CONTEXT) ;;
    esac
    for sec in "${want[@]}"; do
        [ -n "${has["$p|$sec"]:-}" ] || say "$p: no $sec section"
    done
done
# One groff for every page, which names the file of each warning.
if [ ${#own[@]} -gt 0 ]; then
    while IFS= read -r line; do
        say "renders with a warning: $line"
    done < <(LC_ALL=C.UTF-8 groff -k -man -ww -z -Tutf8 -rLL=80n "${own[@]}" 2>&1)
fi

# ---------------------------------------------------------- cross-references
while read -r kind page what; do
    case $kind in
    see)
        name=${what%(*}
        sec=${what#*(}
        sec=${sec%)}
        [ -f "man/man$sec/$name.$sec" ] || say "$page: SEE ALSO names $what, which has no page"
        ;;
    path)
        [ -e "$what" ] || say "$page: names $what, which is not in the tree"
        ;;
    esac
done <<<"$facts"

overview=$(<man/man7/weft.7)
for p in man/man3/*.3; do
    n=${p##*/}
    n=${n%.3}
    [[ $overview =~ (^|[^A-Za-z0-9_])$n([^A-Za-z0-9_]|$) ]] || say "man/man7/weft.7: does not list $n(3)"
done

echo "check_man: ${#pages[@]} pages, ${#syms[@]} symbols, $problems problems"
[ "$problems" -eq 0 ]
