#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then runs
# formatting and lint checks and every test (unit, golden, property, CLI, pack fixtures, examples).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nfdump >/dev/null 2>&1 || need_apt+=(nfdump)
command -v softflowd >/dev/null 2>&1 || need_apt+=(softflowd)
command -v tcpdump >/dev/null 2>&1 || need_apt+=(tcpdump)
# ip (iproute2): the end-to-end test's network namespace and veth pair (tests/e2e.rs)
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
# dig and curl: the clients of the end-to-end pipeline test (tests/e2e.rs)
command -v dig >/dev/null 2>&1 || need_apt+=(bind9-dnsutils)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# nats-server (JetStream): the fleet's bus (tests/fleet.rs); started by the tests themselves
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
# tshark: builds a passive DNS log from the corpus captures (tests/dns.rs)
command -v tshark >/dev/null 2>&1 || need_apt+=(tshark)
# dnsmasq-base: the dnsmasq binary alone (no system service), a real DNS server for tests/dns_live.rs
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || need_apt+=(dnsmasq-base)
# chromium + chromium-driver: the web pages in a real headless browser (tests/browser.rs)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

# A throwaway PostgreSQL server for the inventory tests (127.0.0.1, trust auth), stopped on exit
# however the run ends (unless FLOWPRINT_TEST_POSTGRES already names one). With CI=true the
# tests fail without it; elsewhere they skip.
if [ -n "${FLOWPRINT_TEST_POSTGRES:-}" ]; then
    echo "inventory tests use FLOWPRINT_TEST_POSTGRES=$FLOWPRINT_TEST_POSTGRES" >&2
elif pg_env=$(scripts/postgres.sh start); then
    eval "$pg_env"
    trap 'scripts/postgres.sh stop "$FLOWPRINT_TEST_POSTGRES_DIR"' EXIT
elif [ "${CI:-}" = "true" ]; then
    echo "scripts/postgres.sh could not start PostgreSQL" >&2
    exit 1
else
    echo "PostgreSQL unavailable: its inventory tests will skip" >&2
fi
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --all-targets --no-fail-fast
    cargo test --locked --doc
else
    cargo test --locked --all-targets --no-fail-fast
    cargo test --locked --doc
fi
cargo run --locked --quiet --example library >/dev/null
