#!/usr/bin/env bash
# Runs one fuzz target for SECONDS (default 600) with this project's settings, on the stable
# toolchain (RUSTC_BOOTSTRAP=1 lets stable rustc take cargo-fuzz's -Z sanitizer flags).
#   fuzz/run.sh TARGET [SECONDS] [extra libFuzzer flags...]
# Seeds: run `python3 fuzz/seeds.py` first. The full libFuzzer log goes to
# fuzz/target/logs/TARGET-<time>.log (fuzz/target is git-ignored).
set -euo pipefail
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
shift $(( $# >= 2 ? 2 : 1 ))
case $target in
  netflow | sflow) max_len=65536 ;;
  capture | nfcapd) max_len=1048576 ;;
  text_readers) max_len=262144 ;;
  rules) max_len=65536 ;;
  rule_nesting) max_len=4096 ;;
  pack_archive) max_len=262144 ;;
  *) echo "unknown target $target" >&2; exit 2 ;;
esac
dict=()
[[ -f dicts/$target.dict ]] && dict=(-dict="dicts/$target.dict")
mkdir -p target/logs corpus/"$target"
log=target/logs/$target-$(date -u +%Y%m%dT%H%M%SZ).log
echo "log: fuzz/$log" >&2
set +e
RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions "$target" -- \
  -max_total_time="$secs" -max_len="$max_len" -rss_limit_mb=2048 -timeout=10 \
  -print_final_stats=1 "${dict[@]}" "$@" >"$log" 2>&1
status=$?
grep -E "^#[0-9]+[[:space:]]+(INITED|DONE)|panicked|ERROR|SUMMARY|Test unit written|stat::" "$log"
exit "$status"
