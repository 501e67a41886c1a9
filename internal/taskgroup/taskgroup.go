// Package taskgroup owns background work that must end before its owner
// closes what the work uses (the store, a socket): a Group starts
// goroutines until it is closed, and Close waits for those it started.
// Unlike a bare sync.WaitGroup, a Go after Close is refused rather than
// racing the Wait, so a request arriving during shutdown cannot start a
// fill on a store about to close.
package taskgroup

import "sync"

// Group runs tasks until closed. The zero value is ready to use.
type Group struct {
	mu     sync.Mutex // guards closed, and orders every Add before Wait
	closed bool
	wg     sync.WaitGroup
}

// Go runs fn in a goroutine, or returns false (and runs nothing) once the
// group is closing.
func (g *Group) Go(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// Do runs fn in this goroutine as one of the group's tasks (a request
// handler, say), or returns false once the group is closing.
func (g *Group) Do(fn func()) bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	g.wg.Add(1)
	g.mu.Unlock()
	defer g.wg.Done()
	fn()
	return true
}

// Close refuses new tasks and waits for the running ones. The caller
// first tells them to stop (cancels their context).
func (g *Group) Close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}
