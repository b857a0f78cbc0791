#!/usr/bin/env bash
# A/B of `nrfca sign` between two builds on the same requests, alternating runs so drift of
# the machine hits both alike; prints each run and the medians of wall and CPU (user+sys).
#   scripts/ab.sh OLD_BIN NEW_BIN [N=100000] [ROUNDS=5]
set -euo pipefail
OLD=$1; NEW=$2; N=${3:-100000}; ROUNDS=${4:-5}
W=$(mktemp -d /tmp/nrfca-ab.XXXXXX); trap 'rm -rf "$W"' EXIT
age-keygen -o "$W/id" 2>/dev/null; R=$(age-keygen -y "$W/id")
"$NEW" gen --count "$N" --format lines --out "$W/req.txt" >/dev/null 2>&1
for i in $(seq "$ROUNDS"); do
  for which in old new; do
    B=$OLD; [ $which = new ] && B=$NEW
    rm -rf "$W/ca" "$W/out"
    "$B" ca init --ca-dir "$W/ca" --subject "CN=ab" --recipient "$R" >/dev/null 2>&1
    /usr/bin/time -f "$which %e %U %S %M" -o "$W/t" "$B" sign --ca-dir "$W/ca" --identity "$W/id" --out "$W/out" "$W/req.txt" >/dev/null 2>&1
    cat "$W/t" | tee -a "$W/all"
  done
done
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for which in old new; do
  WALL=$(grep "^$which " "$W/all" | awk '{ print $2 }' | median)
  CPU=$(grep "^$which " "$W/all" | awk '{ print $3 + $4 }' | median)
  RSS=$(grep "^$which " "$W/all" | awk '{ print $5 }' | median)
  awk -v w="$which" -v n="$N" -v wall="$WALL" -v cpu="$CPU" -v rss="$RSS" 'BEGIN {
    printf "%s median of %d: %.2f s wall (%.0f dev/s), %.2f s CPU, %.0f MB\n", w, '"$ROUNDS"', wall, n / wall, cpu, rss / 1024 }'
done
