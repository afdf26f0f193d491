#!/usr/bin/env bash
# bench/run.sh: build xlb and run the shared benchmark harness (../shared/bench/run.sh
# beside this repo, or BENCH_HARNESS) with xlb as a custom contestant. See bench/README.md.
#   bash bench/run.sh
#   CONTESTANTS="direct nginx xlb" SCENARIOS="get post" ROUNDS=5 PIN=1 bash bench/run.sh
#   XLB_WORKERS=2 CONTESTANTS="nginx xlb" bash bench/run.sh    # xlb run --workers 2
#   XLB_FLAGS=--reuse-port bash bench/run.sh                    # more flags of xlb run
# After the run, bench/reuse.sh OUT prints xlb's backend connection reuse from its logs.
# All other settings are the harness's environment variables and pass through.
set -euo pipefail
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; } # the harness cds into its folder
ROOT=$(cd "$(dirname "$0")/.." && pwd)
HARNESS=$(abs "${BENCH_HARNESS:-"$(cd "$(dirname "$0")/../.." && pwd)/shared/bench/run.sh"}")
[ -f "$HARNESS" ] || { echo "bench/run.sh: no harness at $HARNESS (set BENCH_HARNESS)" >&2; exit 1; }
export GOTOOLCHAIN=local

tmp=$(mktemp -d -t xlbbench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
(cd "$ROOT" && go build -o "$tmp/xlb" .)

export LB_NAME=xlb LB_PORT=18090
export LB_CONF="$ROOT/bench/xlb.yaml.tmpl"
LB_CMD="$tmp/xlb run --config {CONF} --state-dir $tmp/state --log-format json"
[ -n "${XLB_WORKERS:-}" ] && LB_CMD+=" --workers $XLB_WORKERS"
LB_CMD+=" ${XLB_FLAGS:-}"
export LB_CMD
export CONTESTANTS="${CONTESTANTS:-direct nginx haproxy xlb}"
OUT=$(abs "${OUT:-"$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)"}")
export OUT
bash "$HARNESS"
# The reports name xlb's command; its scratch folder is not worth keeping.
sed -i "s#$tmp/#\$XLB_TMP/#g" "$OUT"/report.md "$OUT"/report.json "$OUT"/meta.tsv 2>/dev/null || true
