#!/usr/bin/env bash
# Signing-speed and bench-parallelism benchmark (SPEC §9). Prints a table of devices/s for
# nrfca sign, the Python peer (shared/bench/peer_inprocess.py) and the machine's ECDSA limit
# (`openssl speed -multi $(nproc) ecdsap256`), the ratios, and peak RSS, all in one run.
#
#   scripts/bench.sh [N ...]            default: 10000 100000
#   PEER=path/to/peer_inprocess.py      default: ../shared/bench/peer_inprocess.py
#   PYTHON=python-with-cryptography     default: $NRFCA_VENV/bin/python, target/ci-venv/bin/python, python3
#   MODEMS="1 8"                        simulated-modem provisioning timing, AT and shell dialect
#                                       (set MODEMS= to skip)
#   OLD_BIN=path/to/older/nrfca         also time an older build on the same inputs, in the same
#                                       run (its own CA), and print after/before
#   CUSTODY_N=10000                     key custody rows (SPEC §13): the same N signed with the key
#                                       in memory (age), in a SoftHSM2 token and under a 2-of-2
#                                       quorum, ratios to the limit; then peak memory of a
#                                       passphrase unlock at scrypt 2^18 and 2^20 (CUSTODY_N= skips)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
NS=("$@"); [ ${#NS[@]} -gt 0 ] || NS=(10000 100000)
PEER=${PEER:-$ROOT/../shared/bench/peer_inprocess.py}
VENV=${NRFCA_VENV:-$ROOT/target/ci-venv}
PYTHON=${PYTHON:-$( [ -x "$VENV/bin/python" ] && echo "$VENV/bin/python" || echo python3 )}
MODEMS=${MODEMS-"1 8"}
W=$(mktemp -d /tmp/nrfca-bench.XXXXXX)
trap 'rm -rf "$W"' EXIT

cargo build --release --quiet
BIN=$ROOT/target/release/nrfca
CORES=$(nproc)

# time_rss CMD... -> prints "<seconds> <peak RSS MB>" of the command, its output to $W/log
time_rss() {
  /usr/bin/time -f "%e %M" -o "$W/time" "$@" >>"$W/log" 2>&1 || { echo "failed: $*" >&2; tail -20 "$W/log" >&2; exit 1; }
  awk '{ printf "%s %.1f\n", $1, $2/1024 }' "$W/time"
}

echo "machine: $(uname -m), $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "nrfca:   $($BIN --version)"
echo

# The machine's ECDSA limit: one verify + one sign per device, on all cores.
read -r SIGN VERIFY < <(openssl speed -seconds 3 -multi "$CORES" ecdsap256 2>/dev/null \
  | awk '/nistp256/ { print $(NF-1), $NF }' | tail -1)
LIMIT=$(awk -v s="$SIGN" -v v="$VERIFY" 'BEGIN { printf "%.0f", 1/(1/s + 1/v) }')
echo "openssl speed -multi $CORES ecdsap256: sign $SIGN/s verify $VERIFY/s -> limit $LIMIT devices/s"
echo

# Our CA, unlocked with an age X25519 identity (age-keygen, Debian package `age`) so the table
# measures signing, not the deliberate ~1 s scrypt of a passphrase unlock.
if command -v age-keygen >/dev/null 2>&1; then
  age-keygen -o "$W/id.txt" 2>/dev/null
  RECIP=$(age-keygen -y "$W/id.txt")
  $BIN ca init --ca-dir "$W/ca" --subject "CN=nrfca bench CA,O=nrfca" --recipient "$RECIP" >>"$W/log" 2>&1
  UNLOCK=(--identity "$W/id.txt")
  UNLOCK_NOTE="age X25519 identity"
else
  export NRFCA_PASSPHRASE=bench
  $BIN ca init --ca-dir "$W/ca" --subject "CN=nrfca bench CA,O=nrfca" >>"$W/log" 2>&1
  UNLOCK=()
  UNLOCK_NOTE="passphrase (includes one scrypt unlock, about 1 s)"
fi

# An older build to compare with (before/after a change), with a CA of its own (a newer
# nrfca may migrate ca.db to a schema the older one refuses).
OLD_BIN=${OLD_BIN:-}
if [ -n "$OLD_BIN" ]; then
  if [ ${#UNLOCK[@]} -gt 0 ]; then
    $OLD_BIN ca init --ca-dir "$W/ca-old" --subject "CN=nrfca bench CA,O=nrfca" --recipient "$RECIP" >>"$W/log" 2>&1
  else
    $OLD_BIN ca init --ca-dir "$W/ca-old" --subject "CN=nrfca bench CA,O=nrfca" >>"$W/log" 2>&1
  fi
  echo "before:  $($OLD_BIN --version) ($OLD_BIN)"
fi

# The peer's CA (plaintext key, as the peer expects).
openssl ecparam -name prime256v1 -genkey -noout -out "$W/peer-ca.key" 2>/dev/null
openssl req -x509 -new -key "$W/peer-ca.key" -subj "/CN=peer ca" -days 3650 -out "$W/peer-ca.pem" 2>/dev/null

printf '%-8s %12s %12s %12s %9s %9s %10s %10s\n' N "nrfca dev/s" "peer dev/s" "limit dev/s" ours/peer ours/limit "nrfca MB" "peer MB"
for N in "${NS[@]}"; do
  $BIN gen --count "$N" --format lines --out "$W/req-$N.txt" >>"$W/log" 2>&1
  read -r T_OURS RSS_OURS < <(time_rss $BIN sign --ca-dir "$W/ca" "${UNLOCK[@]}" --out "$W/bundle-$N" "$W/req-$N.txt")
  read -r T_PEER RSS_PEER < <(time_rss "$PYTHON" "$PEER" "$W/req-$N.txt" "$W/peer-$N" "$W/peer-ca.pem" "$W/peer-ca.key")
  if [ -n "$OLD_BIN" ]; then
    read -r T_OLD RSS_OLD < <(time_rss $OLD_BIN sign --ca-dir "$W/ca-old" "${UNLOCK[@]}" --out "$W/bundle-old-$N" "$W/req-$N.txt")
    rm -rf "$W/bundle-old-$N"
    awk -v n="$N" -v to="$T_OURS" -v tb="$T_OLD" -v ro="$RSS_OLD" 'BEGIN {
      printf "%-8s before: %.0f dev/s, %.1f MB; after/before %.2fx\n", n, n / tb, ro, tb / to }' >>"$W/ab"
  fi
  awk -v n="$N" -v to="$T_OURS" -v tp="$T_PEER" -v lim="$LIMIT" -v ro="$RSS_OURS" -v rp="$RSS_PEER" 'BEGIN {
    o = n / to; p = n / tp;
    printf "%-8d %12.0f %12.0f %12.0f %8.2fx %8.2fx %10.1f %10.1f\n", n, o, p, lim, o / p, o / lim, ro, rp }'
  rm -rf "$W/peer-$N" "$W/bundle-$N"
done
echo "(nrfca unlock: $UNLOCK_NOTE; times are whole-process wall clock)"
[ -z "$OLD_BIN" ] || { echo; echo "older build on the same inputs, run right after each row:"; cat "$W/ab"; }

CUSTODY_N=${CUSTODY_N-${NS[0]}}
if [ -n "$CUSTODY_N" ]; then
  N=$CUSTODY_N
  echo
  echo "key custody, N=$N (same requests, same run; whole-process wall clock incl. the unlock):"
  printf '%-28s %12s %11s %10s\n' custody "dev/s" "vs limit" "peak MB"
  [ -f "$W/req-$N.txt" ] || $BIN gen --count "$N" --format lines --out "$W/req-$N.txt" >>"$W/log" 2>&1
  row() { # label seconds rss
    awk -v l="$1" -v n="$N" -v t="$2" -v lim="$LIMIT" -v r="$3" 'BEGIN {
      printf "%-28s %12.0f %10.2fx %10.1f\n", l, n / t, (n / t) / lim, r }'
  }
  read -r T R < <(time_rss $BIN sign --ca-dir "$W/ca" "${UNLOCK[@]}" --out "$W/cb-age" "$W/req-$N.txt")
  row "age ($UNLOCK_NOTE)" "$T" "$R"
  rm -rf "$W/cb-age"
  # Quorum 2-of-2, shares at the default scrypt 2^18: the unlock opens two shares.
  for c in alice bob; do printf '%s-bench\n' "$c" >"$W/$c.pw"; chmod 600 "$W/$c.pw"; done
  $BIN ca init --ca-dir "$W/ca-q" --subject "CN=nrfca bench CA,O=nrfca" --quorum 2 \
    --custodian alice --custodian bob \
    --share-passphrase-file "alice=$W/alice.pw" --share-passphrase-file "bob=$W/bob.pw" >>"$W/log" 2>&1
  read -r T R < <(time_rss $BIN sign --ca-dir "$W/ca-q" --out "$W/cb-q" \
    --share "$W/ca-q/shares/alice.share.age" --share "$W/ca-q/shares/bob.share.age" \
    --share-passphrase-file "alice=$W/alice.pw" --share-passphrase-file "bob=$W/bob.pw" "$W/req-$N.txt")
  row "quorum 2-of-2 (2 x scrypt 2^18)" "$T" "$R"
  rm -rf "$W/cb-q"
  # SoftHSM2: a token of its own in $W; one PKCS#11 session per worker.
  HSM_MOD=""
  for m in ${NRFCA_SOFTHSM2_MODULE:-} /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib64/pkcs11/libsofthsm2.so; do
    [ -f "$m" ] && { HSM_MOD=$m; break; }
  done
  if [ -n "$HSM_MOD" ] && command -v softhsm2-util >/dev/null 2>&1; then
    mkdir -p "$W/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$W/tokens" >"$W/softhsm2.conf"
    export SOFTHSM2_CONF=$W/softhsm2.conf
    softhsm2-util --init-token --free --label bench --so-pin 87654321 --pin 123456 >>"$W/log" 2>&1
    printf '123456\n' >"$W/pin"; chmod 600 "$W/pin"
    $BIN ca init --ca-dir "$W/ca-h" --subject "CN=nrfca bench CA,O=nrfca" --pkcs11 "$HSM_MOD" \
      --token-label bench --pin-file "$W/pin" >>"$W/log" 2>&1
    read -r T R < <(time_rss $BIN sign --ca-dir "$W/ca-h" --pin-file "$W/pin" --out "$W/cb-h" "$W/req-$N.txt")
    row "SoftHSM2 token (PKCS#11)" "$T" "$R"
    rm -rf "$W/cb-h"
  else
    echo "SoftHSM2 token (PKCS#11)     skipped: softhsm2-util / libsofthsm2.so not installed"
  fi
  # Peak memory of a passphrase unlock (`ca verify-key`) at the old calibration and the new
  # default work factor.
  echo
  printf '%-28s %12s %10s\n' "passphrase unlock" "seconds" "peak MB"
  printf 'bench-passphrase\n' >"$W/pp"; chmod 600 "$W/pp"
  for LN in 20 18; do
    $BIN ca init --ca-dir "$W/ca-p$LN" --subject "CN=nrfca bench CA,O=nrfca" \
      --passphrase-file "$W/pp" --scrypt-log-n "$LN" >>"$W/log" 2>&1
    read -r T R < <(time_rss $BIN ca verify-key --ca-dir "$W/ca-p$LN" --passphrase-file "$W/pp")
    printf '%-28s %12.2f %10.1f\n' "scrypt 2^$LN" "$T" "$R"
  done
fi

if [ -n "$MODEMS" ]; then
  echo
  printf '%-8s %10s %10s\n' modems "bench s" "vs one"
  BASE=""
  for M in $MODEMS; do
    # export + import wall time of `nrfca demo` (real serial code on ptys, realistic latency)
    T=$($BIN demo --devices "$M" --latency realistic --dir "$W/demo-$M" --json 2>>"$W/log" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["bench_ms"] / 1000)')
    [ -n "$BASE" ] || BASE=$T
    awk -v m="$M" -v t="$T" -v b="$BASE" 'BEGIN { printf "%-8d %10.2f %9.2fx\n", m, t, t / b }'
  done
  # The same over the nRF Connect SDK shell dialect (`--profile shell`: echo, prompt,
  # `at '<command>'`, found by the bench's --dialect auto). Goal: 8 modems <= 1.5x one.
  echo
  printf '%-8s %10s %10s\n' "shell" "bench s" "vs one"
  BASE=""
  for M in $MODEMS; do
    T=$($BIN demo --devices "$M" --latency realistic --profile shell --dir "$W/demo-shell-$M" --json 2>>"$W/log" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["timings"]["bench_ms"] / 1000)')
    [ -n "$BASE" ] || BASE=$T
    awk -v m="$M" -v t="$T" -v b="$BASE" 'BEGIN { printf "%-8d %10.2f %9.2fx\n", m, t, t / b }'
  done
fi
