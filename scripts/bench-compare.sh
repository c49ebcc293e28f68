#!/usr/bin/env bash
# Side by side, same run, same files: nfdump against `flowprint analyze` with equivalent rules,
# at 100, 1,000 and 10,000 indicators, on two nfcapd files:
#  1. synthetic: ~2 million flows over 65,536 hosts (below);
#  2. real-flow shape, few hosts: the corpus's softflowd NetFlow v9 exports (../shared/corpus/
#     exports/*.nfv9.nfcapd, read in place) merged by nfdump into one file and repeated to
#     >= 1 M flows (REPEAT, default 1024 copies of the 998 flows). Indicators: the file's
#     non-local addresses, then generated addresses it does not contain.
# For each, nfdump runs twice: its plain filter (`-f FILTER -q -o csv`), and with per-address
# statistics (`-f FILTER -s ip/flows -n 0`), its nearest thing to a per-host inventory.
#
# File 1: NetFlow v5 sent over loopback to nfcapd (hosts in 10.0.0.0/16, peers drawn from
# 2^20 addresses, ports 80/443/53/123). Indicators: N peer addresses taken from the flows.
#   nfdump:    nfdump -r FILE -f 'ip in [ N addresses ]' -q -o csv, and the same filter with
#              -s ip/flows -n 0 (per-address statistics)
#   flowprint: flowprint analyze --no-default-rules --rules N.rules --local-net 10.0.0.0/16 FILE
#              with one rule per address: `when peer.addr == A then software = "indicator"`,
#              and it also infers and prints every host's verdicts.
#   flowprint, list: the same N addresses as one `list ind = addresses { ... }` and one rule
#              `when peer.addr in ind` (column fp_list_s): the form of nfdump's `ip in [ ... ]`.
# Both read the same uncompressed nfcapd file, output to /dev/null; wall time, median of 5.
# Needs nfdump and python3 (scripts/test.sh installs nfdump). Only 127.0.0.1 is a target.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-2000010}
work=$(mktemp -d)
trap 'kill "${cap:-0}" 2>/dev/null || true; [ -n "${KEEP_FILE:-}" ] && cp "$work"/nfcapd.2* "$KEEP_FILE" 2>/dev/null; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
nfcapd -b 127.0.0.1 -p "$port" -w "$work" -B 8388608 -t 3600 >"$work/nfcapd.log" 2>&1 &
cap=$!
sleep 1
python3 - "$port" "$FLOWS" "$work/peers.txt" <<'PY'
import random, socket, struct, sys, time
port, total, peers_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
now = int(time.time())
seq = 0
peers = [0x14000000 + random.randrange(1 << 26) for _ in range(1 << 20)]
used = set()
for d in range(total // 30):
    hdr = struct.pack("!HHIIIIBBH", 5, 30, 100000, now, 0, seq, 0, 0, 0)
    recs = []
    for _ in range(30):
        src = 0x0A000000 + random.randrange(1 << 16)
        dst = random.choice(peers)
        if len(used) < 20000:
            used.add(dst)
        recs.append(struct.pack("!IIIHHIIIIHHBBBBHHBBH", src, dst, 0, 0, 0, 1 + random.randrange(100),
                                40 + random.randrange(1 << 24), 90000, 99000, 30000 + random.randrange(30000),
                                random.choice((80, 443, 53, 123)), 0, 0x1b, 6, 0, 0, 0, 0, 0, 0))
    s.sendto(hdr + b"".join(recs), ("127.0.0.1", port))
    seq += 30
    if d % 200 == 0:
        time.sleep(0.004)
with open(peers_file, "w") as f:
    for a in sorted(used):
        f.write(socket.inet_ntoa(struct.pack("!I", a)) + "\n")
PY
sleep 2
kill -TERM "$cap"; wait "$cap" || true
file=$(ls "$work"/nfcapd.* | grep -v current | head -1)
flows=$(nfdump -r "$file" -I | awk '/^Flows:/ {print $2}')
echo "file: $flows flows (nfcapd, uncompressed)"
# FLOWPRINT=path compares another build (an earlier commit's, for a before/after table).
if [ -z "${FLOWPRINT:-}" ]; then cargo build --release --quiet; fi
fp_bin=${FLOWPRINT:-target/release/flowprint}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMEFORMAT=%R
# compare LABEL FILE PEERS_FILE FLOWPRINT_ARGS...
compare() {
    local label=$1 file=$2 peers=$3
    shift 3
    local flows
    flows=$(nfdump -r "$file" -I | awk '/^Flows:/ {print $2}')
    echo "== $label: $flows flows (nfcapd, uncompressed)"
    printf "%-11s %-10s %-10s %-12s %-12s %-10s %-10s %-11s %-11s %-13s %s\n" indicators nfdump_s nf_Mf/s nfdump_stat_s flowprint_s fp_Mf/s fp/nf fp/nf_stat fp_list_s list/nf_stat matched
    for n in 100 1000 10000; do
        head -n "$n" "$peers" > "$work/ind.txt"
        echo "ip in [ $(tr '\n' ' ' < "$work/ind.txt") ]" > "$work/filter"
        awk '{printf "rule i%d {\n    when peer.addr == %s\n    then software = \"indicator\" confidence 0.5\n}\n", NR, $1}' \
            "$work/ind.txt" > "$work/ind.rules"
        # The same indicators as one list and one rule: what nfdump's `ip in [ ... ]` is.
        { echo "list ind = addresses {"; sed 's/$/,/' "$work/ind.txt"; echo "}"
          echo 'rule indicator { when peer.addr in ind then software = "indicator" confidence 0.5 }'
        } > "$work/ind-list.rules"
        nf=$(for i in 1 2 3 4 5; do { time nfdump -r "$file" -f "$work/filter" -q -o csv >/dev/null; } 2>&1; done | median)
        nfs=$(for i in 1 2 3 4 5; do { time nfdump -r "$file" -f "$work/filter" -s ip/flows -n 0 >/dev/null; } 2>&1; done | median)
        fp=$(for i in 1 2 3 4 5; do { time "$fp_bin" analyze --no-default-rules --rules "$work/ind.rules" \
            "$@" --format json "$file" >/dev/null 2>"$work/fp.err"; } 2>&1; done | median)
        fpl=$(for i in 1 2 3 4 5; do { time "$fp_bin" analyze --no-default-rules --rules "$work/ind-list.rules" \
            "$@" --format json "$file" >/dev/null 2>"$work/fp.err"; } 2>&1; done | median)
        nmatch=$(nfdump -r "$file" -f "$work/filter" -q -o csv | wc -l)
        fmatch=$("$fp_bin" analyze --no-default-rules --rules "$work/ind.rules" "$@" \
            --format json "$file" 2>/dev/null | grep -c '"indicator"' || true)
        printf "%-11s %-10s %-10s %-12s %-12s %-10s %-10s %-11s %-11s %-13s %s\n" "$n" "$nf" \
            "$(awk -v f="$flows" -v t="$nf" 'BEGIN{printf "%.2f", f/t/1e6}')" "$nfs" "$fp" \
            "$(awk -v f="$flows" -v t="$fp" 'BEGIN{printf "%.2f", f/t/1e6}')" \
            "$(awk -v a="$nf" -v b="$fp" 'BEGIN{printf "%.2fx", a/b}')" \
            "$(awk -v a="$nfs" -v b="$fp" 'BEGIN{printf "%.2fx", a/b}')" "$fpl" \
            "$(awk -v a="$nfs" -v b="$fpl" 'BEGIN{printf "%.2fx", a/b}')" \
            "$fmatch hosts ($nmatch flows by nfdump)"
    done
    echo "flowprint's summary line of the last run: $(tail -1 "$work/fp.err")"
}
compare "synthetic, 65,536 hosts" "$file" "$work/peers.txt" --local-net 10.0.0.0/16

# File 2: the corpus's softflowd exports, merged and repeated.
corpus=../shared/corpus/exports
mkdir -p "$work/one" "$work/many"
for f in "$corpus"/*.nfv9.nfcapd; do ln -s "$(realpath "$f")" "$work/one/$(basename "$f")"; done
nfdump -R "$work/one" -w "$work/one.nfcapd" >/dev/null
for i in $(seq 1 "${REPEAT:-1024}"); do ln -s "$work/one.nfcapd" "$work/many/copy-$i.nfcapd"; done
nfdump -R "$work/many" -w "$work/real.nfcapd" >/dev/null
# Indicators: the file's addresses outside the private ranges, then addresses it does not hold.
nfdump -r "$work/one.nfcapd" -q -o 'fmt:%sa %da' | tr -s ' ' '\n' | grep -E '^[0-9]+\.' \
    | grep -vE '^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|169\.254\.|255\.|0\.|22[4-9]\.|23[0-9]\.)' \
    | sort -u > "$work/real-peers.txt"
python3 - "$work/real-peers.txt" <<'PY'
import sys
path = sys.argv[1]
have = [l.strip() for l in open(path) if l.strip()]
out = list(have)
i = 0
while len(out) < 10000:
    a = 0x64400000 + i * 7919 % (1 << 22)  # 100.64.0.0/10, not in the file
    out.append("%d.%d.%d.%d" % (a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255))
    i += 1
open(path, "w").write("\n".join(out) + "\n")
PY
echo "(file 2: $(grep -c . "$work/real-peers.txt") indicators available, the first $(nfdump -r "$work/one.nfcapd" -q -o 'fmt:%sa %da' | tr -s ' ' '\n' | grep -E '^[0-9]+\.' | grep -vE '^(10\.|192\.168\.|172\.(1[6-9]|2[0-9]|3[01])\.|169\.254\.|255\.|0\.|22[4-9]\.|23[0-9]\.)' | sort -u | wc -l) from the file)"
compare "softflowd corpus exports x${REPEAT:-1024}, few hosts" "$work/real.nfcapd" "$work/real-peers.txt"
