#!/usr/bin/env bash
# Background DNS refresh vs evaluation throughput: dnsmasq on 127.0.0.1 serves host0..host9999
# .example with a TTL of $TTL s (default 10: all 10,000 names re-resolved every 5 s); `flowprint bench dns-refresh`
# measures evaluation with the names in the map, first with the refresher idle, then running.
# Needs dnsmasq (apt-get install dnsmasq-base). Only 127.0.0.1 is ever a target.
set -euo pipefail
cd "$(dirname "$0")/.."
NAMES=${NAMES:-10000}
TTL=${TTL:-10}
work=$(mktemp -d)
chmod a+rx "$work"   # dnsmasq reads the hosts file after dropping root
trap 'kill "$(cat "$work/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$NAMES" > "$work/hosts" <<'PY'
import sys
# the same addresses as flowprint::bench::peer_addr(i), so generated flows meet these names
for i in range(int(sys.argv[1])):
    a = (0x14000000 + ((i * 2654435761) & 0xffffffff & 0x03ffffff)) & 0xffffffff
    print(f"{a>>24}.{(a>>16)&255}.{(a>>8)&255}.{a&255} host{i}.example")
PY
port=$((20000 + RANDOM % 20000))
dnsmasq --conf-file=/dev/null --no-resolv --no-hosts --addn-hosts="$work/hosts" --local-ttl="$TTL" \
    --local=/example/ --listen-address=127.0.0.1 --bind-interfaces --port="$port" \
    --pid-file="$work/pid"
sleep 0.5
cargo build --release --quiet
target/release/flowprint bench dns-refresh --names "$NAMES" --server "127.0.0.1:$port" --min-ttl "$TTL" "$@"
