// Command report turns the files of one bench/tls/run.sh run (raw.tsv, handshakes.tsv, tls.tsv,
// meta.tsv in -dir) into report.md on stdout: per scenario the median over rounds of each
// contestant's figures and, as the shared harness does, the median of its per-round ratios to
// nginx (nginx measured seconds apart in the same round), the backend handshakes the HTTPS
// upstreams counted, and what each TLS listener negotiated.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// row is one measurement of raw.tsv.
type row struct {
	round                int
	contestant, scenario string
	f                    map[string]float64 // the numeric columns by name; NaN for NA
}

// readTSV reads a tab-separated file with a header line into maps by column name.
func readTSV(path string) ([]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseTSV(f, path)
}

func parseTSV(r io.Reader, name string) ([]map[string]string, error) {
	sc := bufio.NewScanner(r)
	var cols []string
	var out []map[string]string
	for n := 1; sc.Scan(); n++ {
		fields := strings.Split(sc.Text(), "\t")
		if cols == nil {
			cols = fields
			continue
		}
		if len(fields) != len(cols) {
			return nil, fmt.Errorf("%s:%d: %d fields, want %d (%s)", name, n, len(fields), len(cols), strings.Join(cols, " "))
		}
		m := make(map[string]string, len(cols))
		for i, c := range cols {
			m[c] = fields[i]
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func toRows(recs []map[string]string, name string) ([]row, error) {
	var rows []row
	for i, m := range recs {
		r := row{contestant: m["contestant"], scenario: m["scenario"], f: map[string]float64{}}
		var err error
		if r.round, err = strconv.Atoi(m["round"]); err != nil {
			return nil, fmt.Errorf("%s: row %d: round %q: %v", name, i+1, m["round"], err)
		}
		for k, v := range m {
			if k == "contestant" || k == "scenario" || k == "round" {
				continue
			}
			x := math.NaN()
			if v != "NA" {
				if x, err = strconv.ParseFloat(v, 64); err != nil {
					return nil, fmt.Errorf("%s: row %d: %s %q: %v", name, i+1, k, v, err)
				}
			}
			r.f[k] = x
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// median of the values that are numbers; NaN when there is none.
func median(xs []float64) float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return math.NaN()
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// spread is (max-min)/median of the numbers among xs.
func spread(xs []float64) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, x := range xs {
		if !math.IsNaN(x) {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	return (hi - lo) / median(xs)
}

// metric is a figure of a measurement: requests/s, requests per LB CPU-second, ...
type metric func(r row) float64

var (
	rps    metric = func(r row) float64 { return r.f["rps"] }
	perCPU metric = func(r row) float64 { return r.f["requests"] / r.f["lb_cpu_s"] }
	cores  metric = func(r row) float64 { return r.f["lb_cpu_s"] / r.f["duration_s"] }
)

// summary is one contestant's figures in one scenario: medians over rounds, and the medians of
// the per-round ratios to the reference contestant.
type summary struct {
	rps, perCPU, cores, p99ms, client, other float64
	rpsRatio, perCPURatio                    float64
	rpsSpread                                float64
	errors, hsFull, hsResumed, rounds        float64
}

// summarize the rows of one scenario for contestant c against ref.
func summarize(rows []row, c, ref string) summary {
	byRound := map[int]row{}
	refRound := map[int]row{}
	for _, r := range rows {
		switch r.contestant {
		case c:
			byRound[r.round] = r
		case ref:
			refRound[r.round] = r
		}
	}
	var s summary
	var v = map[string][]float64{}
	for round, r := range byRound {
		v["rps"] = append(v["rps"], rps(r))
		v["perCPU"] = append(v["perCPU"], perCPU(r))
		v["cores"] = append(v["cores"], cores(r))
		v["p99"] = append(v["p99"], r.f["p99_us"]/1000)
		v["client"] = append(v["client"], r.f["client_cpu_s"]/r.f["duration_s"])
		v["other"] = append(v["other"], r.f["other_cpu_s"]/r.f["wall_s"])
		s.errors += r.f["errors"]
		s.hsFull += r.f["hs_full"]
		s.hsResumed += r.f["hs_resumed"]
		if q, ok := refRound[round]; ok {
			v["rpsRatio"] = append(v["rpsRatio"], rps(r)/rps(q))
			v["perCPURatio"] = append(v["perCPURatio"], perCPU(r)/perCPU(q))
		}
	}
	s.rounds = float64(len(byRound))
	s.rps, s.perCPU, s.cores = median(v["rps"]), median(v["perCPU"]), median(v["cores"])
	s.p99ms, s.client, s.other = median(v["p99"]), median(v["client"]), median(v["other"])
	s.rpsRatio, s.perCPURatio = median(v["rpsRatio"]), median(v["perCPURatio"])
	s.rpsSpread = spread(v["rps"])
	return s
}

func num(x float64, format string) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "-"
	}
	return fmt.Sprintf(format, x)
}

var scenarioDoc = map[string]string{
	"backend-tls":     "keep-alive GET over plain HTTP to the LB, the LB to HTTPS upstreams (wrk)",
	"client-tls-new":  "a new client TLS connection per request, `Connection: close` (wrk: it resumes its session on each reconnect)",
	"client-tls-full": "a full TLS 1.3 handshake per connection, one HTTP/1.0 GET each (parallel `openssl s_time -new`)",
	"client-tls-get":  "keep-alive GET over HTTPS to the LB, the LB to plain upstreams (wrk)",
}

func main() {
	dir := flag.String("dir", ".", "the run's results folder")
	ref := flag.String("ref", "nginx", "the contestant the ratios are to")
	flag.Parse()
	if err := write(os.Stdout, *dir, *ref); err != nil {
		log.Fatal("report: ", err)
	}
}

func write(w io.Writer, dir, ref string) error {
	recs, err := readTSV(filepath.Join(dir, "raw.tsv"))
	if err != nil {
		return err
	}
	rows, err := toRows(recs, "raw.tsv")
	if err != nil {
		return err
	}
	var scenarios, contestants []string
	seen := map[string]bool{}
	for _, r := range rows {
		if !seen["s"+r.scenario] {
			seen["s"+r.scenario] = true
			scenarios = append(scenarios, r.scenario)
		}
		if !seen["c"+r.contestant] {
			seen["c"+r.contestant] = true
			contestants = append(contestants, r.contestant)
		}
	}
	order := map[string]int{"direct": 0, "nginx": 1, "haproxy": 2, "xlb": 3}
	sort.SliceStable(contestants, func(i, j int) bool { return order[contestants[i]] < order[contestants[j]] })

	fmt.Fprintln(w, "# TLS benchmark: xlb against nginx and HAProxy")
	fmt.Fprintln(w)
	if meta, err := os.ReadFile(filepath.Join(dir, "meta.tsv")); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(meta)), "\n") {
			k, v, _ := strings.Cut(l, "\t")
			fmt.Fprintf(w, "- %s: %s\n", k, v)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "Medians over rounds; ratios are the medians of per-round ratios to %s. \"per LB CPU-s\" is "+
		"requests (= handshakes in the client-tls-new and -full scenarios) per CPU-second of the LB's whole process "+
		"tree (utime+stime from /proc). \"backend hs\" are the handshakes the HTTPS upstreams served during the "+
		"measurements, full/resumed.\n\n", ref)
	var warnings []string
	for _, sc := range scenarios {
		var srows []row
		for _, r := range rows {
			if r.scenario == sc {
				srows = append(srows, r)
			}
		}
		fmt.Fprintf(w, "## %s\n\n%s\n\n", sc, scenarioDoc[sc])
		fmt.Fprintf(w, "| contestant | req/s | × %s | per LB CPU-s | × %s | LB cores | p99 ms | client cores | other cores | errors | backend hs full/resumed |\n", ref, ref)
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, c := range contestants {
			s := summarize(srows, c, ref)
			if s.rounds == 0 {
				continue
			}
			p99 := num(s.p99ms, "%.2f")
			if sc == "client-tls-full" {
				p99 = "-"
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f | %.0f/%.0f |\n", c, num(s.rps, "%.0f"),
				num(s.rpsRatio, "%.2f"), num(s.perCPU, "%.0f"), num(s.perCPURatio, "%.2f"), num(s.cores, "%.2f"),
				p99, num(s.client, "%.2f"), num(s.other, "%.2f"), s.errors, s.hsFull, s.hsResumed)
			if s.rpsSpread > 0.15 {
				warnings = append(warnings, fmt.Sprintf("%s/%s: req/s spread %.0f %% between rounds", c, sc, 100*s.rpsSpread))
			}
			if s.other > 0.35 {
				warnings = append(warnings, fmt.Sprintf("%s/%s: other tenants used %.2f cores (median)", c, sc, s.other))
			}
			if s.errors > 0 {
				warnings = append(warnings, fmt.Sprintf("%s/%s: %.0f errors", c, sc, s.errors))
			}
		}
		fmt.Fprintln(w)
	}

	if hs, err := readTSV(filepath.Join(dir, "handshakes.tsv")); err == nil && len(hs) > 0 {
		type fr struct{ full, resumed float64 }
		total := map[string]*fr{}
		for _, m := range hs {
			if m["phase"] != "warmup-backend-tls" {
				continue
			}
			f, _ := strconv.ParseFloat(m["hs_full"], 64)
			r, _ := strconv.ParseFloat(m["hs_resumed"], 64)
			if total[m["contestant"]] == nil {
				total[m["contestant"]] = &fr{}
			}
			total[m["contestant"]].full += f
			total[m["contestant"]].resumed += r
		}
		for _, r := range rows {
			if r.scenario == "backend-tls" && r.contestant != "direct" && total[r.contestant] != nil {
				total[r.contestant].full += r.f["hs_full"]
				total[r.contestant].resumed += r.f["hs_resumed"]
			}
		}
		if len(total) > 0 {
			fmt.Fprintln(w, "## Backend handshakes (backend-tls: warm-ups and measurements, all rounds)")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "Counted by the HTTPS upstreams (`ConnectionState().DidResume`); every round starts the LBs afresh.")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| contestant | full | resumed | resumed / full |")
			fmt.Fprintln(w, "|---|---:|---:|---:|")
			for _, c := range contestants {
				if t := total[c]; t != nil {
					fmt.Fprintf(w, "| %s | %.0f | %.0f | %s |\n", c, t.full, t.resumed, num(t.resumed/t.full, "%.2f"))
				}
			}
			fmt.Fprintln(w)
		}
	}
	if tl, err := readTSV(filepath.Join(dir, "tls.tsv")); err == nil && len(tl) > 0 {
		fmt.Fprintln(w, "## TLS listeners (openssl s_client, the OpenSSL wrk links)")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| contestant | listener | upstreams seen | protocol | group | resumes a session |")
		fmt.Fprintln(w, "|---|---|---:|---|---|---|")
		for _, m := range tl {
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", m["contestant"], m["listener"], m["upstreams_seen"], m["protocol"], m["group"], m["resumes"])
		}
		fmt.Fprintln(w)
	}
	if up, err := os.ReadFile(filepath.Join(dir, "upstream-tls.txt")); err == nil {
		fmt.Fprintf(w, "## HTTPS upstreams at the end of the run (/__tls: every handshake they served)\n\n```\n%s```\n\n", up)
	}
	if len(warnings) > 0 {
		fmt.Fprintln(w, "## Warnings")
		fmt.Fprintln(w)
		for _, s := range warnings {
			fmt.Fprintf(w, "- %s\n", s)
		}
	}
	return nil
}
