package cachestore

import (
	"container/list"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
)

// Hot descriptors: small blobs asked for again and again (apt's indexes,
// small packages) keep one open file each, shared by every request for
// them, so that a hit costs no open, stat and close. Profiled on small hits
// (BenchmarkServeHitSmall): opening the blob was 17% of the CPU. Each
// request reads through its own section reader (pread), so the shared
// offset is never used. A blob dropped or stored again is forgotten here;
// its descriptor closes with its last reader.

const (
	// hotMaxSize: bigger blobs are opened per request, for sendfile.
	hotMaxSize = 1 << 20
	// hotMaxFiles bounds the descriptors kept open.
	hotMaxFiles = 256
)

type hotFile struct {
	d    Digest
	f    *os.File
	size int64
	bi   BlobInfo // the index's record when the descriptor was kept
	refs int
	gone bool // forgotten: closed with its last reader
	elem *list.Element
}

// fileSize is the size of hf's file now. An fstat into a Stat_t on the
// stack: os.File.Stat allocates its answer, once per hit. The descriptor
// stays open while the caller holds a reference.
func (hf *hotFile) fileSize() (int64, error) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(hf.f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", hf.d, err)
	}
	return st.Size, nil
}

type hotFiles struct {
	mu  sync.Mutex
	m   map[Digest]*hotFile
	lru list.List // front: most recently used
	// forgets counts forgets by slot of digest: a descriptor opened
	// before its blob was forgotten (dropped, stored again, made public
	// or private) carries a record that no longer holds, and is not kept.
	forgets [256]uint64
}

// slot is d's place in forgets.
func slot(d Digest) int {
	h := 0
	for i := 0; i < len(d.Hex) && i < 4; i++ {
		h = h*31 + int(d.Hex[i])
	}
	return h & 0xff
}

// stamp is d's forget count now, for put.
func (h *hotFiles) stamp(d Digest) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.forgets[slot(d)]
}

// get returns d's shared descriptor, counted as one more reader, or nil.
func (h *hotFiles) get(d Digest) *hotFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	hf := h.m[d]
	if hf == nil {
		return nil
	}
	hf.refs++
	h.lru.MoveToFront(hf.elem)
	return hf
}

// put keeps f as d's shared descriptor, counted as one reader, and returns
// it; when another reader put one first, f is closed and that one is
// returned instead. When d was forgotten since stamp, nothing is kept
// and nil returned: bi may be out of date.
func (h *hotFiles) put(d Digest, f *os.File, bi BlobInfo, stamp uint64) *hotFile {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.forgets[slot(d)] != stamp {
		return nil
	}
	if h.m == nil {
		h.m = map[Digest]*hotFile{}
	}
	if hf := h.m[d]; hf != nil {
		f.Close()
		hf.refs++
		h.lru.MoveToFront(hf.elem)
		return hf
	}
	hf := &hotFile{d: d, f: f, size: bi.Size, bi: bi, refs: 1}
	hf.elem = h.lru.PushFront(hf)
	h.m[d] = hf
	for e := h.lru.Back(); len(h.m) > hotMaxFiles && e != nil; {
		prev := e.Prev()
		h.dropLocked(e.Value.(*hotFile))
		e = prev
	}
	return hf
}

// release ends one reader of hf.
func (h *hotFiles) release(hf *hotFile) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if hf.refs--; hf.refs == 0 && hf.gone {
		hf.f.Close()
	}
}

// forget stops sharing d's descriptor (its blob was dropped, or its file
// replaced); it closes once its readers are done.
func (h *hotFiles) forget(d Digest) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.forgets[slot(d)]++
	if hf := h.m[d]; hf != nil {
		h.dropLocked(hf)
	}
}

func (h *hotFiles) dropLocked(hf *hotFile) {
	delete(h.m, hf.d)
	h.lru.Remove(hf.elem)
	hf.gone = true
	if hf.refs == 0 {
		hf.f.Close()
	}
}

// closeAll forgets every descriptor (the store is closing).
func (h *hotFiles) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hf := range h.m {
		h.dropLocked(hf)
	}
}

// OpenHit opens a stored blob to serve it to a request in scope ("" for
// none) and counts the use, as OpenBlob; read it only through Content. A
// small blob shares one descriptor kept open across requests. A blob the
// scope may not read is ErrOtherScope, and no use of it.
func (s *Store) OpenHit(d Digest, scope string) (*Blob, BlobInfo, error) {
	if hf := s.hot.get(d); hf != nil {
		// Counted as open before the index is read, as in openBlob.
		s.openMu.Lock()
		s.open[d]++
		s.openMu.Unlock()
		b := &Blob{shared: hf, release: func() { s.releaseOpen(d); s.hot.release(hf) }}
		// No index read: a blob leaves the index only through dropBlob,
		// and is stored again only through addBlob, and both forget its
		// descriptor first. The file as it is now (one fstat): a blob
		// cut short on disk is dropped by the slow path, never served
		// short.
		if size, err := hf.fileSize(); err != nil || size != hf.size {
			b.Close()
			s.hot.forget(d)
			return s.openHitCold(d, scope)
		}
		if !hf.bi.Readable(scope) {
			b.Close()
			return nil, hf.bi, ErrOtherScope
		}
		return b, s.countUse(hf.bi), nil
	}
	return s.openHitCold(d, scope)
}

// openHitCold is OpenHit without a shared descriptor yet: the blob is opened
// and checked as by OpenBlob, and a small one's descriptor kept.
func (s *Store) openHitCold(d Digest, scope string) (*Blob, BlobInfo, error) {
	stamp := s.hot.stamp(d)
	b, bi, err := s.openBlob(d, false)
	if err != nil {
		return b, bi, err
	}
	if !bi.Readable(scope) {
		b.Close()
		return nil, bi, ErrOtherScope
	}
	bi = s.countUse(bi)
	if bi.Size > hotMaxSize {
		return b, bi, nil
	}
	hf := s.hot.put(d, b.File, bi, stamp)
	if hf == nil {
		return b, bi, nil // changed while it was opened: this request's alone
	}
	release := b.release
	return &Blob{shared: hf, release: func() { release(); s.hot.release(hf) }}, bi, nil
}

// Content is the blob's bytes with an offset of this Blob's own: its file
// (which http.ServeContent sends with sendfile) or, for a shared
// descriptor, a section reader over it.
func (b *Blob) Content() io.ReadSeeker {
	if b.shared != nil {
		if b.section == nil {
			b.section = io.NewSectionReader(b.shared.f, 0, b.shared.size)
		}
		return b.section
	}
	return b.File
}
