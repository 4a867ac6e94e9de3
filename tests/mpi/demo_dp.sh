#!/bin/sh
# The demo's data-parallel mode: 2 processes with half of each batch print
# the same losses and parameter checksums, bit for bit, as 1 process that
# takes both halves in turn.  Usage: demo_dp.sh MPIEXEC JOPT_DEMO DIGITS
set -eu
mpiexec=$1 demo=$2 data=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$demo" --data-parallel --epochs 3 "$data" > "$tmp/one"
"$mpiexec" -n 2 "$demo" --data-parallel --epochs 3 "$data" > "$tmp/two"
cat "$tmp/two"
# the tables and checksums, without the header and the per-rank lines
filter() { grep -E '^ *[0-9]+   |FNV-1a' "$1"; }
filter "$tmp/one" > "$tmp/one.rows"
filter "$tmp/two" > "$tmp/two.rows"
test -s "$tmp/one.rows"
if ! diff "$tmp/one.rows" "$tmp/two.rows"; then
    echo "demo_dp: 2 processes differ from 1" >&2
    exit 1
fi
echo "demo_dp: 2 processes print what 1 process prints, bit for bit"
