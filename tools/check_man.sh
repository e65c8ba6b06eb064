#!/usr/bin/env bash
# The manual pages must cover the API and render cleanly.
#
#   tools/check_man.sh [ROOT [LIBWEFT_SO]]
#
# 1. Every public function has a page: the WEFT_API declarations of
#    include/weft.h, and the defined weft_* text symbols of the shared
#    library (build/libweft.so, when it has been built), each need
#    man/man3/NAME.3, and the page it is (or its .so link names) must list
#    NAME in its NAME section.
# 2. Every page renders without a warning (groff -ww, every warning; a
#    link page is one ".so" line naming a page of its own, and renders as
#    that page), and a page has the sections every page of this manual has.
# 3. Every weft page named in a SEE ALSO exists, every tree path a page
#    names (docs/..., src/..., include/..., examples/...) exists, and weft(7)
#    lists every page of section 3.
#
# Prints each problem, then "check_man: N pages, N symbols, N problems";
# exits 1 if there is one. Run by `make check` (test/test_man_posix.c).
set -u
ROOT=${1:-$(dirname "$0")/..}
cd "$ROOT" || exit 2
SO=${2:-build/libweft.so}
problems=0
say() { echo "$*"; problems=$((problems + 1)); }

# ------------------------------------------------------------ the symbols
syms=$(sed -nE 's/^WEFT_API[^(]*[^A-Za-z0-9_](weft_[A-Za-z0-9_]+)[[:space:]]*\(.*/\1/p' include/weft.h)
if [ -e "$SO" ] && command -v nm >/dev/null; then
    exported=$(nm -D --defined-only "$SO" | awk '$2 == "T" && $3 ~ /^weft_/ { print $3 }')
    for s in $exported; do
        grep -qx "$s" <<<"$syms" || say "$SO exports $s, which include/weft.h does not declare"
    done
    syms=$(printf '%s\n%s\n' "$syms" "$exported")
fi
syms=$(sort -u <<<"$syms" | grep .)
nsyms=$(wc -l <<<"$syms")

# The page a link page (".so man3/x.3") stands for, else the page itself.
target() {
    local first
    first=$(head -n 1 "$1")
    case "$first" in
    .so\ *) echo "man/${first#.so }" ;;
    *) echo "$1" ;;
    esac
}

# "page name" for every name the NAME section of a page of its own lists
# ("a, b, c \- what they do"), all pages in one pass.
listed=$(awk '
    FNR == 1 { in_name = 0; link = ($0 ~ /^\.so /) }
    link { next }
    /^\.SH/ { in_name = ($0 == ".SH NAME"); next }
    in_name {
        line = $0
        sub(/\\-.*/, "", line)
        gsub(/\\f[BIRP]|[ \t]/, "", line)
        n = split(line, a, ",")
        for (i = 1; i <= n; i++) if (a[i] != "") print FILENAME, a[i]
    }' man/man3/*.3 man/man7/*.7 2>/dev/null)

for s in $syms; do
    page=man/man3/$s.3
    if [ ! -f "$page" ]; then
        say "$s: no page $page"
        continue
    fi
    real=$(target "$page")
    if [ ! -f "$real" ]; then
        say "$page: links to $real, which does not exist"
    elif ! grep -qx "$real $s" <<<"$listed"; then
        say "$real: its NAME section does not list $s"
    fi
done

# ------------------------------------------------------------- rendering
pages=$(ls man/man3/*.3 man/man7/*.7 2>/dev/null)
npages=$(grep -c . <<<"$pages")
# Every groff warning (-ww), at the width the pages are read at; one groff
# for all pages, which names the file of each warning.
own=()
for p in $pages; do
    real=$(target "$p")
    if [ "$real" != "$p" ]; then
        # a link page renders as the page it names, which is rendered below
        [ -f "$real" ] && [ "$(target "$real")" = "$real" ] ||
            say "$p: links to $real, which is not a page of its own"
        [ "$(wc -l <"$p")" -eq 1 ] || say "$p: a link page is one .so line"
        continue
    fi
    own+=("$p")
    want=(NAME DESCRIPTION "SEE ALSO")
    case "$p" in
    man/man3/*) want+=(SYNOPSIS "RETURN VALUE" ERRORS CONTEXT) ;;
    esac
    for sec in "${want[@]}"; do
        grep -qE "^\.SH \"?$sec\"?\$" "$p" || say "$p: no $sec section"
    done
done

if [ ${#own[@]} -gt 0 ]; then
    while IFS= read -r line; do
        say "renders with a warning: $line"
    done < <(LC_ALL=C.UTF-8 groff -k -man -ww -z -Tutf8 -rLL=80n "${own[@]}" 2>&1)
fi

# ---------------------------------------------------------- cross-references
for p in $pages; do
    [ "$(target "$p")" = "$p" ] || continue
    refs=$(sed -n -E '/^\.SH "?SEE ALSO"?$/,/^\.SH/p' "$p" |
        grep -oE '(\.BR? +|\\fB)weft[A-Za-z0-9_-]*(\\f[RP])? *\([0-9]\)' |
        sed -E 's/^(\.BR? +|\\fB)//; s/\\f[RP]//; s/ //g')
    for r in $refs; do
        name=${r%(*}
        sec=${r#*(}
        sec=${sec%)}
        [ -f "man/man$sec/$name.$sec" ] || say "$p: SEE ALSO names $r, which has no page"
    done
    for path in $(sed 's/\\-/-/g' "$p" | grep -oE '(docs|src|include|examples|tools|test)/[A-Za-z0-9_./-]*[A-Za-z0-9_]' | sort -u); do
        [ -e "$path" ] || say "$p: names $path, which is not in the tree"
    done
done
for p in man/man3/*.3; do
    n=$(basename "$p" .3)
    grep -qE "(^|[^A-Za-z0-9_])$n([^A-Za-z0-9_]|$)" man/man7/weft.7 || say "man/man7/weft.7: does not list $n(3)"
done

echo "check_man: $npages pages, $nsyms symbols, $problems problems"
[ "$problems" -eq 0 ]
