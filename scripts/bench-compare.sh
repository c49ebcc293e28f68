#!/usr/bin/env bash
# Side by side, same run, same file: nfdump's filter against `flowprint analyze` with equivalent
# rules, at 100, 1,000 and 10,000 indicators, on an nfcapd file of ~2 million flows.
#
# The file: NetFlow v5 sent over loopback to nfcapd (hosts in 10.0.0.0/16, peers drawn from
# 2^20 addresses, ports 80/443/53/123). Indicators: N peer addresses taken from the flows, and
# the ports 80 and 443.
#   nfdump:    nfdump -r FILE -f 'dst ip in [ N addresses ] and dst port in [ 80 443 ]' -q -o csv
#   flowprint: flowprint analyze --no-default-rules --rules N.rules --local-net 10.0.0.0/16 FILE
#              with one rule per address: `when peer.addr == A and peer.port in { 80, 443 }`,
#              and it also infers and prints every host's verdicts.
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
cargo build --release --quiet
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
TIMEFORMAT=%R
printf "%-11s %-12s %-10s %-14s %-10s %-14s %s\n" indicators nfdump_s nfdump_Mf/s flowprint_s fp_Mf/s fp_matched ratio
for n in 100 1000 10000; do
    head -n "$n" "$work/peers.txt" > "$work/ind.txt"
    echo "dst ip in [ $(tr '\n' ' ' < "$work/ind.txt") ] and dst port in [ 80 443 ]" > "$work/filter"
    awk '{printf "rule i%d {\n    when peer.addr == %s and peer.port in { 80, 443 }\n    then software = \"indicator\" confidence 0.5\n}\n", NR, $1}' \
        "$work/ind.txt" > "$work/ind.rules"
    nf=$(for i in 1 2 3 4 5; do { time nfdump -r "$file" -f "$work/filter" -q -o csv >/dev/null; } 2>&1; done | median)
    fp=$(for i in 1 2 3 4 5; do { time target/release/flowprint analyze --no-default-rules --rules "$work/ind.rules" \
        --local-net 10.0.0.0/16 --format json "$file" >/dev/null 2>"$work/fp.err"; } 2>&1; done | median)
    nmatch=$(nfdump -r "$file" -f "$work/filter" -q -o csv | wc -l)
    fmatch=$(target/release/flowprint analyze --no-default-rules --rules "$work/ind.rules" --local-net 10.0.0.0/16 \
        --format json "$file" 2>/dev/null | grep -c '"indicator"' || true)
    printf "%-11s %-12s %-10s %-14s %-10s %-14s %s\n" "$n" "$nf" \
        "$(awk -v f="$flows" -v t="$nf" 'BEGIN{printf "%.2f", f/t/1e6}')" "$fp" \
        "$(awk -v f="$flows" -v t="$fp" 'BEGIN{printf "%.2f", f/t/1e6}')" \
        "$fmatch hosts ($nmatch flows by nfdump)" \
        "$(awk -v a="$nf" -v b="$fp" 'BEGIN{printf "flowprint %.2fx nfdump speed", a/b}')"
done
echo "flowprint's summary line of the last run: $(tail -1 "$work/fp.err")"
