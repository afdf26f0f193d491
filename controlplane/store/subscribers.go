package store

import "sync"

// Subscribers are the subscriptions to a store's changes, for the stores of this package and of
// controlplane/etcdstore: Subscribe makes one, Notify tells every one of a change, Close closes
// them all. The zero value has none; its methods are safe for concurrent use.
type Subscribers struct {
	mu     sync.Mutex
	subs   map[chan struct{}]struct{}
	closed bool
}

// Subscribe returns a channel that receives after every Notify, and a func that cancels the
// subscription. The channel has a buffer of 1 and changes coalesce: a receiver that is late sees
// one receive for many changes, and reads the state after it. The channel is closed by cancel and
// by Close; after Close, Subscribe returns a closed channel.
func (s *Subscribers) Subscribe() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		close(ch)
		return ch, func() {}
	}
	if s.subs == nil {
		s.subs = make(map[chan struct{}]struct{})
	}
	s.subs[ch] = struct{}{}
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.subs[ch]; ok {
			delete(s.subs, ch)
			close(ch)
		}
	}
}

// Notify tells every subscription of a change, without waiting for any.
func (s *Subscribers) Notify() {
	s.mu.Lock()
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
}

// Close closes every subscription's channel, and those of later Subscribes.
func (s *Subscribers) Close() {
	s.mu.Lock()
	s.closed = true
	for ch := range s.subs {
		close(ch)
	}
	clear(s.subs)
	s.mu.Unlock()
}
