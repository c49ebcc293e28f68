#!/usr/bin/env bash
# Peer figure for BENCHMARKS.md: nfdump reading and filtering its own nfcapd file with an
# `ip in [ 10,000 addresses ]` filter, next to `flowprint bench eval` in the same run.
# Needs nfdump (apt-get install nfdump) and python3. Sends NetFlow v5 only to 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-1000020}
work=$(mktemp -d)
trap 'kill "${cap:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
port=$((20000 + RANDOM % 20000))
nfcapd -b 127.0.0.1 -p "$port" -w "$work" -B 8388608 -t 3600 >"$work/nfcapd.log" 2>&1 &
cap=$!
sleep 1
python3 - "$port" "$FLOWS" "$work/addrs.txt" <<'PY'
import random, socket, struct, sys, time
port, total, addr_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
random.seed(7)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
now = int(time.time())
seq = 0
peers = [0x14000000 + random.randrange(1 << 26) for _ in range(1 << 20)]
with open(addr_file, "w") as f:
    f.write(" ".join(socket.inet_ntoa(struct.pack("!I", a)) for a in random.sample(peers, 10000)))
for d in range(total // 30):
    hdr = struct.pack("!HHIIIIBBH", 5, 30, 100000, now, 0, seq, 0, 0, 0)
    recs = []
    for _ in range(30):
        src = 0x0A000000 + random.randrange(1 << 16)
        dst = random.choice(peers)
        recs.append(struct.pack("!IIIHHIIIIHHBBBBHHBBH", src, dst, 0, 0, 0, 1 + random.randrange(100),
                                40 + random.randrange(1 << 24), 90000, 99000, 30000 + random.randrange(30000),
                                random.choice((80, 443, 53, 123)), 0, 0x1b, 6, 0, 0, 0, 0, 0, 0))
    s.sendto(hdr + b"".join(recs), ("127.0.0.1", port))
    seq += 30
    if d % 200 == 0:
        time.sleep(0.004)
PY
sleep 2
kill -TERM "$cap"; wait "$cap" || true
file=$(ls "$work"/nfcapd.* | grep -v current | head -1)
echo "nfcapd file: $(nfdump -r "$file" -I | grep -E '^Flows:' )"
echo "ip in [ $(cat "$work/addrs.txt") ]" > "$work/filter"
echo "nfdump -r FILE -f FILTER('ip in [10,000 addresses]') -q -o csv > /dev/null, 5 runs (wall s):"
TIMEFORMAT=%R
for i in 1 2 3 4 5; do
    { time nfdump -r "$file" -f "$work/filter" -q -o csv >/dev/null; } 2>&1
done
echo "matched flows: $(nfdump -r "$file" -f "$work/filter" -q -o csv | wc -l)"
echo "nfdump -r FILE -q -o csv (no filter) > /dev/null, 3 runs:"
for i in 1 2 3; do
    { time nfdump -r "$file" -q -o csv >/dev/null; } 2>&1
done
cargo build --release --quiet
nfdump -r "$file" -y -w "$work/lz4.nfcapd" >/dev/null
for f in "$file" "$work/lz4.nfcapd"; do
    kind=$([ "$f" = "$file" ] && echo uncompressed || echo LZ4)
    echo "$kind: nfdump -r FILE -f FILTER -q -o csv > /dev/null, 5 runs (wall s):"
    for i in 1 2 3 4 5; do { time nfdump -r "$f" -f "$work/filter" -q -o csv >/dev/null; } 2>&1; done
    echo "$kind: flowprint flows --count FILE (decode only), 5 runs (wall s):"
    for i in 1 2 3 4 5; do { time target/release/flowprint flows --count "$f" >/dev/null 2>&1; } 2>&1; done
done
echo "flowprint bench eval --rules 10000:"
cargo run --release --quiet -- bench eval --rules 10000 --flows 1000000
