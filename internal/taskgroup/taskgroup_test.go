package taskgroup

import (
	"sync/atomic"
	"testing"
)

// Tasks started race Close freely (run under -race): each either runs and
// is waited for, or is refused.
func TestCloseWaitsAndRefuses(t *testing.T) {
	var g Group
	var ran, done atomic.Int64
	start := make(chan struct{})
	starters := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { starters <- struct{}{} }()
			<-start
			for range 100 {
				g.Go(func() { ran.Add(1); done.Add(1) })
			}
		}()
	}
	close(start)
	g.Close()
	after := done.Load()
	for range 8 {
		<-starters
	}
	if ran.Load() != after {
		t.Fatalf("%d tasks ran, %d had finished when Close returned: Close did not wait, or a task started after it", ran.Load(), after)
	}
	if g.Go(func() {}) {
		t.Fatal("a closed group started a task")
	}
}
