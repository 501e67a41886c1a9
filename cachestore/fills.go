package cachestore

import "context"

// The fills in progress, one per key: a second request for a key joins
// the first one's fill as a reader.

// BeginFill returns the fill in progress for key, or a new one. leader is
// true for the caller that created it: it must call Start and then Commit
// or Abort. The others are readers.
func (s *Store) BeginFill(key string) (f *Fill, leader bool) {
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	if f, ok := s.fills[key]; ok {
		return f, false
	}
	f = &Fill{s: s, key: key, changed: make(chan struct{})}
	s.fills[key] = f
	return f, true
}

// FillKey is the key under which a blob of a known digest is filled; the
// proxy fills by it and the peer blob server finds growing fills by it.
func FillKey(d Digest) string { return "digest:" + d.String() }

// FillProgress is one fill in progress, for the status page.
type FillProgress struct {
	Key     string
	Written int64
	Size    int64 // -1 when unknown
}

// Fills lists the fills in progress.
func (s *Store) Fills() []FillProgress {
	s.fillsMu.Lock()
	fills := make([]*Fill, 0, len(s.fills))
	for _, f := range s.fills {
		fills = append(fills, f)
	}
	s.fillsMu.Unlock()
	out := make([]FillProgress, 0, len(fills))
	for _, f := range fills {
		f.mu.Lock()
		if f.started && !f.done {
			out = append(out, FillProgress{Key: f.key, Written: f.written, Size: f.info.Size})
		}
		f.mu.Unlock()
	}
	return out
}

// Holds says whether the blob d can be read whole here by anyone (peers,
// pulling hubs): stored and not private, or its bytes verified in a fill
// that is still storing them (a private fill has another key).
func (s *Store) Holds(d Digest) bool {
	if bi, err := s.Stat(d); err == nil {
		return !bi.Private()
	}
	f, ok := s.Filling(FillKey(d))
	return ok && f.Verified()
}

// Idle waits until no fill is in progress (each one stored or failed), or
// ctx ends.
func (s *Store) Idle(ctx context.Context) error {
	for {
		s.fillsMu.Lock()
		var f *Fill
		for _, x := range s.fills {
			f = x
			break
		}
		s.fillsMu.Unlock()
		if f == nil {
			return nil
		}
		if _, err := f.Result(ctx); ctx.Err() != nil {
			return err
		}
	}
}

// Filling returns the fill in progress under key, without starting one.
func (s *Store) Filling(key string) (*Fill, bool) {
	s.fillsMu.Lock()
	defer s.fillsMu.Unlock()
	f, ok := s.fills[key]
	return f, ok
}
