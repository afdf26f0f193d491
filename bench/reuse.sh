#!/usr/bin/env bash
# bench/reuse.sh RESULTS_DIR: how well xlb's workers reused their backend connections in a run of
# bench/run.sh, from the "stopped" line that each worker logs (requests, backend_dials).
set -euo pipefail
log=${1:?usage: bench/reuse.sh RESULTS_DIR}/logs/xlb.log
grep '"@message":"stopped"' "$log" | grep '"@module":"xlb.worker"' |
	sed -E 's/.*"backend_dials":([0-9]+).*"requests":([0-9]+).*/\1 \2/' |
	awk '{ d += $1; r += $2 }
	END {
		if (r == 0) { print "bench/reuse.sh: no requests in the workers'"'"' stopped lines" > "/dev/stderr"; exit 1 }
		printf "requests %d, backend connections opened %d: %.0f requests per connection, %.4f of requests on a reused connection\n", r, d, r / (d > 0 ? d : 1), 1 - d / r
	}'
