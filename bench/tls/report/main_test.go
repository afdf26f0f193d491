package main

import (
	"math"
	"strings"
	"testing"
)

const raw = "round\tcontestant\tscenario\trequests\tduration_s\trps\tlb_cpu_s\n" +
	"1\tnginx\tget\t1000\t1\t1000\t0.5\n" +
	"1\txlb\tget\t900\t1\t900\t0.3\n" +
	"2\tnginx\tget\t2000\t1\t2000\t1.0\n" +
	"2\txlb\tget\t1000\t1\t1000\t1.0\n" +
	"3\tnginx\tget\t1000\t1\t1000\t0.5\n" +
	"3\txlb\tget\t1100\t1\t1100\t0.5\n" +
	"1\tdirect\tget\t5000\t1\t5000\tNA\n"

// TestSummarizeRatios: a ratio is the median of the per-round ratios (each round's nginx measured
// beside it), not the ratio of the medians; per LB CPU-s is requests over the LB's CPU seconds;
// a contestant without an LB has no CPU figure.
func TestSummarizeRatios(t *testing.T) {
	recs, err := parseTSV(strings.NewReader(raw), "raw.tsv")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := toRows(recs, "raw.tsv")
	if err != nil {
		t.Fatal(err)
	}
	s := summarize(rows, "xlb", "nginx")
	// per round: req/s ratios 0.9, 0.5, 1.1 -> 0.9 (the ratio of medians would be 1000/1000 = 1);
	// per CPU-s 3000, 1000, 2200 against nginx's 2000, 2000, 2000 -> 1.5, 0.5, 1.1 -> 1.1
	if s.rps != 1000 || s.rpsRatio != 0.9 || s.perCPU != 2200 || math.Abs(s.perCPURatio-1.1) > 1e-9 || s.rounds != 3 {
		t.Fatalf("xlb: %+v", s)
	}
	if d := summarize(rows, "direct", "nginx"); !math.IsNaN(d.perCPU) || d.rps != 5000 || d.rpsRatio != 5 {
		t.Fatalf("direct: %+v", d)
	}
}

// TestParseTSVNamesTheLine: a short row is an error naming the file and line.
func TestParseTSVNamesTheLine(t *testing.T) {
	_, err := parseTSV(strings.NewReader("a\tb\n1\t2\n3\n"), "raw.tsv")
	if err == nil || !strings.Contains(err.Error(), "raw.tsv:3") {
		t.Fatalf("err = %v, want one naming raw.tsv:3", err)
	}
	recs, _ := parseTSV(strings.NewReader("round\tcontestant\tscenario\trps\n1\tx\tget\tfast\n"), "raw.tsv")
	if _, err := toRows(recs, "raw.tsv"); err == nil || !strings.Contains(err.Error(), `rps "fast"`) {
		t.Fatalf("err = %v, want one naming rps \"fast\"", err)
	}
}
