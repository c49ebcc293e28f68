#!/usr/bin/env bash
# Collector throughput on loopback: `flowprint bench collect` sends generated NetFlow v9
# datagrams (30 records each) at fixed rates to flowprint's collector and, in the same run, the
# same datagrams to an nfcapd; prints what each received. Needs nfdump (apt-get install nfdump).
# Only 127.0.0.1 is ever a target.
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"500000 1000000 2000000 3000000"}
SECONDS_PER_RATE=${SECONDS_PER_RATE:-3}
cargo build --release --quiet
for rate in $RATES; do
    work=$(mktemp -d)
    port=$((20000 + RANDOM % 20000))
    nfcapd -b 127.0.0.1 -p "$port" -w "$work" -B 8388608 -t 3600 >/dev/null 2>&1 &
    cap=$!
    sleep 1
    target/release/flowprint bench collect --rate "$rate" --seconds "$SECONDS_PER_RATE" --also "$port"
    sleep 1
    kill -TERM "$cap"; wait "$cap" || true
    file=$(ls "$work"/nfcapd.* | grep -v current | head -1)
    echo "nfcapd, same datagrams: $(nfdump -r "$file" -I | grep -E '^Flows:') (sent $((rate * SECONDS_PER_RATE)) flows)"
    rm -rf "$work"
done
