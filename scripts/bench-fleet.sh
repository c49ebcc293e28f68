#!/usr/bin/env bash
# Fleet throughput on this machine: a nats-server with JetStream on 127.0.0.1, FLOWS generated
# flows published to the stream (16 shards) by `flowprint bench fleet`, then K worker daemons
# (`flowprint serve --consume`, one evaluating thread each, no database, each its own range of
# shards) started together and timed from their first evaluated flow to the last. Prints the codec cost, the publish rate and
# the rate for each K. With DB=postgres://..., the workers also write their inventory (and
# marks) there, as a fleet does. Needs nats-server and curl (apt-get install nats-server curl).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOWS=${FLOWS:-4000000}
WORKERS=${WORKERS:-"1 2 4"}
REPEAT=${REPEAT:-3}
# DB=postgres://... : the workers write their inventory there (default: no database).
DB=${DB:-}
# Without a database: flows applied. With one: flows whose evidence is written (with a write
# every second), so the time includes the database.
if [ -n "$DB" ]; then METRIC=flowprint_flows_evaluated_total; else METRIC=flowprint_fleet_flows_applied_total; fi
cargo build --release --quiet
bin=target/release/flowprint
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ -n "${nats:-}" ] && kill "$nats" 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "logs in $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

evaluated() {
    local sum=0 v
    for port in "$@"; do
        v=$(curl -s "http://127.0.0.1:$port/metrics" | awk -v m="$METRIC" '$1 == m {print $2}')
        sum=$((sum + ${v:-0}))
    done
    echo "$sum"
}

first=1
for k in $WORKERS; do
rates=()
for rep in $(seq 1 "$REPEAT"); do
    # A fresh server per run: an empty stream, no leases left over.
    rm -rf "$work/js"
    # -p -1: a port the kernel chooses, read back from the server's log.
    nats-server -js -a 127.0.0.1 -p -1 -sd "$work/js" >"$work/nats.log" 2>&1 &
    nats=$!
    port=""
    until [ -n "$port" ]; do
        sleep 0.1
        port=$(grep -o 'client connections on 127.0.0.1:[0-9]*' "$work/nats.log" | head -1 | cut -d: -f2 || true)
    done
    url="nats://127.0.0.1:$port"
    if [ "$first" = 1 ]; then
        $bin bench fleet --flows "$FLOWS" --nats "$url"
        first=0
    else
        $bin bench fleet --flows "$FLOWS" --passes 1 --nats "$url" | grep publish
    fi
    ports=()
    pids=()
    for i in $(seq 1 "$k"); do
        # Each worker its own range of the 16 shards: no rebalancing while timed.
        lo=$(( (i - 1) * 16 / k )); hi=$(( i * 16 / k - 1 ))
        mkdir -p "$work/w$i"
        FLOWPRINT_LOG=${FLOWPRINT_LOG:-info} $bin serve --consume "$url" --fleet-shards 16 --workers 1 ${DB:+--db "$DB" --flush-interval 1s} $([ -z "$DB" ] && echo --no-db) \
            --no-fleet-packs --listen 127.0.0.1:0 --api-listen 127.0.0.1:0 \
            --state-dir "$work/w$i" --fleet-id "bench-$i" --shards "$lo-$hi" >"$work/w$i.log" 2>&1 &
        pids+=($!)
        disown
    done
    # The API ports the kernel chose, from the daemons' logs.
    for i in $(seq 1 "$k"); do
        api=""
        for _ in $(seq 1 300); do
            api=$(grep -o 'flowprint serve is running api=127.0.0.1:[0-9]*' "$work/w$i.log" | head -1 | cut -d: -f2 || true)
            [ -n "$api" ] && break
            if ! kill -0 "${pids[$((i - 1))]}" 2>/dev/null; then cat "$work/w$i.log" >&2; exit 1; fi
            sleep 0.1
        done
        [ -n "$api" ] || { echo "worker $i did not start" >&2; cat "$work/w$i.log" >&2; exit 1; }
        ports+=("$api")
    done
    start=""
    while true; do
        n=$(evaluated "${ports[@]}" 2>/dev/null || echo 0)
        now=$(date +%s.%N)
        if [ -z "$start" ] && [ "$n" -gt 0 ]; then start=$now; fi
        if [ "$n" -ge "$FLOWS" ]; then break; fi
        if [ -n "$start" ] && [ "$(echo "$now - $start > 300" | bc -l)" = 1 ]; then
            echo "workers=$k: only $n of $FLOWS flows after 300 s" >&2; exit 1
        fi
        sleep 0.05
    done
    secs=$(echo "$now - $start" | bc -l)
    rate=$(echo "$FLOWS / $secs / 1000000" | bc -l | xargs printf %.2f)
    rates+=("$rate")
    echo "  run $rep: workers=$k, $FLOWS flows in $(printf %.2f "$secs") s = $rate M flows/s"
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    pids=()
    kill "$nats"; wait "$nats" 2>/dev/null || true
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (${#rates[@]} + 1) / 2 ))p")
echo "fleet workers=$k (one evaluating thread each; $(nproc) cores shared by the workers, nats-server and this script): median $median M flows/s over $REPEAT runs"
done
# The peer in the same run: nfdump has no distributed mode; its single-process rate on
# 1,000,020 flows of its own file is the reference (scripts/bench-nfdump.sh): filtering with
# `ip in [10,000 addresses]`, and reading and printing every flow as CSV.
if command -v nfdump >/dev/null 2>&1; then
    echo "peer, same run: nfdump (one process), wall seconds per 1,000,020 flows:"
    FLOWS=1000020 ./scripts/bench-nfdump.sh 2>&1 | sed -n '/^nfdump -r FILE -f FILTER/,+5p;/(no filter)/,+3p'
fi
