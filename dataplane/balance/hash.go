package balance

import "math/bits"

// Hash64 is XXH64 (xxHash, 64-bit, https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md)
// of b with seed. It is deterministic: every worker, every data plane and every release computes
// the same value for the same bytes, which is what lets them all map a key to the same backend.
// It does not allocate. It is not a MAC: a client that chooses its keys can choose their hashes.
func Hash64(b []byte, seed uint64) uint64 { return xxh64(b, seed) }

// HashString is Hash64 of the bytes of s, without copying them.
func HashString(s string, seed uint64) uint64 { return xxh64(s, seed) }

// xxh64 is written once for both strings and byte slices, so that neither is converted (a
// conversion of more than 32 bytes would allocate).
func xxh64[T string | []byte](b T, seed uint64) uint64 {
	n := len(b)
	var h uint64
	if n >= 32 {
		v1 := seed + prime64_1 + prime64_2
		v2 := seed + prime64_2
		v3 := seed
		v4 := seed - prime64_1
		for len(b) >= 32 {
			v1 = xxhRound(v1, le64(b[0:]))
			v2 = xxhRound(v2, le64(b[8:]))
			v3 = xxhRound(v3, le64(b[16:]))
			v4 = xxhRound(v4, le64(b[24:]))
			b = b[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxhMerge(h, v1)
		h = xxhMerge(h, v2)
		h = xxhMerge(h, v3)
		h = xxhMerge(h, v4)
	} else {
		h = seed + prime64_5
	}
	h += uint64(n)
	for ; len(b) >= 8; b = b[8:] {
		h ^= xxhRound(0, le64(b))
		h = bits.RotateLeft64(h, 27)*prime64_1 + prime64_4
	}
	if len(b) >= 4 {
		h ^= le32(b) * prime64_1
		h = bits.RotateLeft64(h, 23)*prime64_2 + prime64_3
		b = b[4:]
	}
	for i := 0; i < len(b); i++ {
		h ^= uint64(b[i]) * prime64_5
		h = bits.RotateLeft64(h, 11) * prime64_1
	}
	h ^= h >> 33
	h *= prime64_2
	h ^= h >> 29
	h *= prime64_3
	h ^= h >> 32
	return h
}

// le64 and le32 read little-endian words; the compiler turns them into single loads.
func le64[T string | []byte](b T) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func le32[T string | []byte](b T) uint64 {
	_ = b[3]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
}

const (
	prime64_1 uint64 = 11400714785074694791
	prime64_2 uint64 = 14029467366897019727
	prime64_3 uint64 = 1609587929392839161
	prime64_4 uint64 = 9650029242287828579
	prime64_5 uint64 = 2870177450012600261
)

func xxhRound(acc, input uint64) uint64 {
	acc += input * prime64_2
	acc = bits.RotateLeft64(acc, 31)
	return acc * prime64_1
}

func xxhMerge(acc, v uint64) uint64 {
	acc ^= xxhRound(0, v)
	return acc*prime64_1 + prime64_4
}
