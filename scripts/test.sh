#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need, then runs
# formatting and lint checks and every test (unit, golden, property, CLI, pack fixtures, examples).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nfdump >/dev/null 2>&1 || need_apt+=(nfdump)
command -v softflowd >/dev/null 2>&1 || need_apt+=(softflowd)
command -v tcpdump >/dev/null 2>&1 || need_apt+=(tcpdump)
if [ ${#need_apt[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing: ${need_apt[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
if command -v cargo-nextest >/dev/null 2>&1; then
    cargo nextest run --locked --all-targets --no-fail-fast
    cargo test --locked --doc
else
    cargo test --locked --all-targets --no-fail-fast
    cargo test --locked --doc
fi
cargo run --locked --quiet --example library >/dev/null
