package http1

import "io"

// Buffer is the input side of a connection: bytes read but not yet consumed sit in Buf[R:W].
type Buffer struct {
	Buf  []byte
	R, W int
}

// Buffered returns the bytes read and not yet consumed.
func (b *Buffer) Buffered() []byte { return b.Buf[b.R:b.W] }

// Len is the number of bytes read and not yet consumed.
func (b *Buffer) Len() int { return b.W - b.R }

// Consume marks n buffered bytes as used. When nothing is left, the buffer starts over.
func (b *Buffer) Consume(n int) {
	b.R += n
	if b.R == b.W {
		b.R, b.W = 0, 0
	}
}

// Space returns the free room after the buffered bytes, first moving them to the front when the room
// behind them is less than a quarter of the buffer.
func (b *Buffer) Space() []byte {
	if b.R > 0 && len(b.Buf)-b.W < len(b.Buf)/4 {
		b.W = copy(b.Buf, b.Buf[b.R:b.W])
		b.R = 0
	}
	return b.Buf[b.W:]
}

// Full reports whether the buffered bytes fill the whole buffer.
func (b *Buffer) Full() bool { return b.R == 0 && b.W == len(b.Buf) }

// ReadOnce reads once from r into the free room.
func (b *Buffer) ReadOnce(r io.Reader) (int, error) {
	n, err := r.Read(b.Space())
	b.W += n
	return n, err
}
