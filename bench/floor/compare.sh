#!/usr/bin/env bash
# bench/floor/compare.sh: CPU per request of the same fixed 100-byte answer served three ways:
# the floor (edge-triggered epoll loops, bench/floor), and the shared harness's upstream as a
# goroutine per connection (-impl raw) and as level-triggered epoll loops (-impl epoll). Each is
# the only server running while wrk loads it, in ROUNDS interleaved rounds; its CPU is utime+stime
# of its process from /proc, so the figure is its own whatever else runs on the machine.
#   bash bench/floor/compare.sh                    # ROUNDS=3 DURATION=3 CONNS=64
# Ports: 127.0.0.1:18095 (floor), 18101 (raw), 18102 (epoll).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UPSTREAM_SRC=${UPSTREAM_SRC:-"$ROOT/../shared/bench/upstream"}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
CONNS=${CONNS:-64}
export GOTOOLCHAIN=local GOMAXPROCS=${SERVER_PROCS:-1}
command -v wrk >/dev/null || { echo "compare.sh: no wrk (bash tools/install.sh --bench)" >&2; exit 1; }
tmp=$(mktemp -d -t xlbfloor.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT
(cd "$ROOT" && go build -o "$tmp/floor" ./bench/floor)
(cd "$UPSTREAM_SRC" && go build -o "$tmp/upstream" .)

declare -A PID PORT=([floor]=18095 [raw]=18101 [epoll]=18102)
"$tmp/floor" -addr 127.0.0.1:18095 -loops 1 -size 100 & PID[floor]=$!
"$tmp/upstream" -addr 127.0.0.1:18101 -name raw -size 100 -impl raw & PID[raw]=$!
"$tmp/upstream" -addr 127.0.0.1:18102 -name epoll -size 100 -impl epoll -loops 1 & PID[epoll]=$!
pids+=("${PID[@]}")
for n in floor raw epoll; do
	for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:${PORT[$n]}/" && break; sleep 0.1; done
done

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf 'round server load req/s cpu_us_per_req\n' >"$tmp/raw.tsv"
for r in $(seq "$ROUNDS"); do
	for load in keepalive close; do
		order=(floor raw epoll)
		((r % 3 == 2)) && order=(raw epoll floor)
		((r % 3 == 0)) && order=(epoll floor raw)
		for n in "${order[@]}"; do
			hdr=()
			[ $load = close ] && hdr=(-H "Connection: close")
			t0=$(ticks "${PID[$n]}")
			out=$(wrk -t1 -c"$CONNS" -d"${DURATION}s" "${hdr[@]}" "http://127.0.0.1:${PORT[$n]}/")
			t1=$(ticks "${PID[$n]}")
			reqs=$(awk '/requests in/ {print $1}' <<<"$out")
			rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
			echo "$r $n $load $rps $(awk -v d=$((t1 - t0)) -v n="$reqs" -v hz="$hz" 'BEGIN {printf "%.2f", d / hz * 1e6 / n}')" >>"$tmp/raw.tsv"
		done
	done
done
echo "medians of $ROUNDS rounds, GOMAXPROCS=$GOMAXPROCS, wrk -t1 -c$CONNS -d${DURATION}s:"
printf '%-6s %-10s %12s %16s\n' server load req/s "CPU us/request"
for load in keepalive close; do
	for n in floor raw epoll; do
		awk -v n=$n -v l=$load '$2 == n && $3 == l {print $4, $5}' "$tmp/raw.tsv" | sort -n -k2 >"$tmp/m"
		cnt=$(wc -l <"$tmp/m")
		mid=$(((cnt + 1) / 2))
		rps=$(awk '{print $1}' "$tmp/m" | sort -n | sed -n "${mid}p")
		cpu=$(awk '{print $2}' "$tmp/m" | sed -n "${mid}p")
		printf '%-6s %-10s %12s %16s\n' $n $load "$rps" "$cpu"
	done
done
