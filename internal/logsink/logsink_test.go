package logsink

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder keeps what reaches it, one entry a write; block, when set,
// holds each write until it is closed, and started hears of each write
// that begins.
type recorder struct {
	mu      sync.Mutex
	writes  [][]byte
	block   chan struct{}
	started chan struct{}
	fail    error
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.started != nil {
		select {
		case r.started <- struct{}{}:
		default:
		}
	}
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, bytes.Clone(p))
	if r.fail != nil {
		return 0, r.fail
	}
	return len(p), nil
}

func (r *recorder) all() (string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(bytes.Join(r.writes, nil)), len(r.writes)
}

// Every line arrives, whole and in each writer's order, whatever the
// number of writers; Close returns once they are all out.
func TestLinesArriveWholeAndInOrder(t *testing.T) {
	rec := &recorder{}
	s := New(rec)
	const writers, lines = 8, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				fmt.Fprintf(s, "w=%d i=%d %s\n", w, i, strings.Repeat("x", i%97))
			}
		}()
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, _ := rec.all()
	next := make([]int, writers)
	n := 0
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var w, i int
		var pad string
		if _, err := fmt.Sscanf(line, "w=%d i=%d %s", &w, &i, &pad); err != nil && i%97 != 0 {
			t.Fatalf("line %q torn: %v", line, err)
		}
		if w < 0 || w >= writers || i != next[w] || len(pad) != i%97 {
			t.Fatalf("line %q: writer %d's next line should be %d", line, w, next[w])
		}
		next[w]++
		n++
	}
	if n != writers*lines {
		t.Fatalf("%d lines arrived, want %d", n, writers*lines)
	}
}

// While a write is under way, lines gather and leave in one write, and
// their writers do not wait for it.
func TestLinesGatherWhileAWriteIsUnderWay(t *testing.T) {
	rec := &recorder{block: make(chan struct{}), started: make(chan struct{}, 1)}
	s := New(rec)
	fmt.Fprintln(s, "first")
	select { // the goroutine took "first" and is blocked writing it
	case <-rec.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the first line was never written")
	}
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		for i := range 100 {
			fmt.Fprintf(s, "line %d\n", i)
		}
	}()
	select {
	case <-wrote:
	case <-time.After(10 * time.Second):
		t.Fatal("writers waited for a blocked write")
	}
	close(rec.block)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	out, writes := rec.all()
	if writes != 2 {
		t.Fatalf("%d writes, want 2: the first line, then the 100 gathered meanwhile", writes)
	}
	if !strings.HasPrefix(out, "first\nline 0\n") || !strings.HasSuffix(out, "line 99\n") {
		t.Fatalf("out of order: %q...", out[:40])
	}
}

// A write that stalls holds writers back only past maxPending, and nothing
// is dropped.
func TestStalledOutputBoundsWhatGathers(t *testing.T) {
	rec := &recorder{block: make(chan struct{})}
	s := New(rec)
	line := strings.Repeat("y", 1023) + "\n"
	// At most maxPending waits beside the batch being written: three times
	// that cannot all be taken.
	const n = 3 * maxPending / 1024
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			s.Write([]byte(line))
		}
	}()
	select {
	case <-done:
		t.Fatalf("%d KiB gathered while the output was stalled, past the bound of %d KiB beside the batch being written", n, maxPending>>10)
	case <-time.After(200 * time.Millisecond):
		// Still held back: the bound works. (Finishing early is the failure
		// this waits for; a slow machine only makes the wait longer.)
	}
	s.mu.Lock()
	held := len(s.pending)
	s.mu.Unlock()
	if held > maxPending+len(line) {
		t.Fatalf("%d bytes pending, past the bound", held)
	}
	close(rec.block)
	<-done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if out, _ := rec.all(); len(out) != n*len(line) {
		t.Fatalf("%d bytes arrived, want %d", len(out), n*len(line))
	}
}

// After Close, a write goes straight out, after everything before it; the
// output's error is Close's.
func TestCloseFlushesAndLaterWritesGoStraightOut(t *testing.T) {
	rec := &recorder{fail: errors.New("disk full")}
	s := New(rec)
	fmt.Fprintln(s, "before")
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close: %v, want the output's error", err)
	}
	rec.fail = nil
	fmt.Fprintln(s, "after")
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if out, _ := rec.all(); out != "before\nafter\n" {
		t.Fatalf("out %q", out)
	}
}
