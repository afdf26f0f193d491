# xlb: `make test` is the one command CI runs (.ci/run).
export GOTOOLCHAIN := local

FUZZTIME ?= 2m
FUZZPKG  := ./dataplane/http1

.PHONY: test build demo fuzz bench

test:
	bash tools/install.sh
	go mod tidy -diff
	go vet ./...
	.tools/bin/staticcheck ./...
	go test -race -count=1 -timeout 15m ./...

build:
	go build -o bin/xlb .

demo:
	go run . demo

# Runs every Fuzz target of $(FUZZPKG) for FUZZTIME each (go test -fuzz takes one target at a time).
fuzz:
	@set -e; list=$$(go test -list '^Fuzz' $(FUZZPKG)); \
	targets=$$(printf '%s\n' "$$list" | grep '^Fuzz' || true); \
	[ -n "$$targets" ] || { echo "no Fuzz targets in $(FUZZPKG)"; exit 1; }; \
	for t in $$targets; do \
		echo "== $$t ($(FUZZTIME))"; \
		go test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $(FUZZPKG); \
	done

bench:
	bash tools/install.sh --bench
	bash bench/run.sh
