# xlb: `make test` is the one command CI runs (.ci/run).
export GOTOOLCHAIN := local

FUZZTIME ?= 2m
FUZZPKGS := ./dataplane/http1 ./dataplane/proxy ./server

.PHONY: test build demo fuzz bench

test:
	bash tools/install.sh
	go mod tidy -diff
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	go vet ./...
	.tools/bin/staticcheck ./...
	# Allocation counts are only the program's without -race (sync.Pool drops items under it).
	go test -count=1 -run 'Allocs' ./dataplane/http1 ./dataplane/upstream ./dataplane/proxy
	go test -race -count=1 -timeout 15m ./...

build:
	go build -o bin/xlb .

demo:
	go run . demo

# Runs every Fuzz target of $(FUZZPKGS) for FUZZTIME each (go test -fuzz takes one target at a time).
fuzz:
	@set -e; for pkg in $(FUZZPKGS); do \
		targets=$$(go test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); \
		[ -n "$$targets" ] || { echo "no Fuzz targets in $$pkg"; exit 1; }; \
		for t in $$targets; do \
			echo "== $$pkg $$t ($(FUZZTIME))"; \
			go test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

bench:
	bash tools/install.sh --bench
	bash bench/run.sh
