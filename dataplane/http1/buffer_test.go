package http1

import (
	"io"
	"strings"
	"testing"
)

func TestBuffer(t *testing.T) {
	tests := []struct {
		name      string
		size      int
		r, w      int // the state before
		consume   int
		consumedR int  // R after Consume
		full      bool // Full after Consume
		spaceR    int  // R after Space
		space     int  // len(Space())
	}{
		{"empty", 16, 0, 0, 0, 0, false, 0, 16},
		{"full", 16, 0, 16, 0, 0, true, 0, 0},
		{"consuming all starts over", 16, 4, 10, 6, 0, false, 0, 16},
		{"consuming part", 16, 0, 10, 4, 4, false, 4, 6},
		{"a quarter of room behind: no move", 16, 2, 12, 0, 2, false, 2, 4},
		{"less room behind: move to the front", 16, 8, 14, 0, 8, false, 0, 10},
		{"no room behind: move to the front", 16, 1, 16, 0, 1, false, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Buffer{Buf: make([]byte, tt.size), R: tt.r, W: tt.w}
			for i := range b.Buf {
				b.Buf[i] = byte(i)
			}
			want := string(b.Buf[tt.r+tt.consume : tt.w])
			b.Consume(tt.consume)
			if b.R != tt.consumedR || b.Full() != tt.full {
				t.Fatalf("after Consume: R %d, Full %t", b.R, b.Full())
			}
			if got := len(b.Space()); got != tt.space || b.R != tt.spaceR {
				t.Fatalf("Space: %d bytes, R %d", got, b.R)
			}
			if string(b.Buffered()) != want || b.Len() != len(want) {
				t.Fatalf("buffered %q, want %q", b.Buffered(), want)
			}
		})
	}
}

func TestBufferReadOnce(t *testing.T) {
	b := Buffer{Buf: make([]byte, 8)}
	src := strings.NewReader("GET / HTTP/1.1\r\n")
	var got []byte
	for {
		n, err := b.ReadOnce(src)
		if n == 0 && err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, b.Buffered()...)
		b.Consume(b.Len())
	}
	if string(got) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("read %q", got)
	}
}
