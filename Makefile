# xlb: `make test` is the one command CI runs (.ci/run).
export GOTOOLCHAIN := local

FUZZTIME ?= 2m
FUZZPKGS := ./dataplane/http1 ./dataplane/proxy ./dataplane/health ./server ./server/config

.PHONY: test build demo fuzz bench gen gen-check

test:
	bash tools/install.sh
	$(MAKE) gen-check
	go mod tidy -diff
	@# The project's Go files only: .tools holds the collector's generated build.
	@test -z "$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files -co --exclude-standard '*.go'); exit 1; }
	go vet ./...
	.tools/bin/staticcheck ./...
	# Allocation counts are only the program's without -race (sync.Pool drops items under it).
	go test -count=1 -run 'Allocs' ./dataplane/http1 ./dataplane/upstream ./dataplane/proxy
	go test -race -count=1 -timeout 15m ./...
	@# The proxy's tests again, with plain listeners served from event loops (proxy.Config.EventLoop),
	@# and the end-to-end tests with every `xlb run` so (--event-loop; the binary is built without -race).
	go test -race -count=1 ./dataplane/proxy -args -event-loop
	go test -count=1 -timeout 15m ./integration -args -event-loop

build:
	go build -o bin/xlb .

# gen regenerates gen/ from proto/ with buf and the pinned plugins of tools/install.sh.
gen:
	PATH="$(CURDIR)/.tools/bin:$$PATH" .tools/bin/buf generate

# gen-check fails when the protos break buf's STANDARD lint or format, or gen/ is not what they
# generate (someone edited gen/ or forgot make gen).
gen-check: gen
	.tools/bin/buf lint
	.tools/bin/buf format --diff --exit-code
	@git diff --exit-code --stat -- gen || { echo "gen/ differs from what proto/ generates: run make gen and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { echo "gen/ has files git does not track:"; git status --porcelain -- gen; exit 1; }

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
