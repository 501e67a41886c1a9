package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A request head past 64 KiB is answered 431: a client cannot make the
// daemon hold an unbounded head in memory.
func TestHugeHeaderRefused(t *testing.T) {
	u, _, _ := startWarren(t, "--cache-dir", t.TempDir())
	c, err := net.Dial("tcp", strings.TrimPrefix(u, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	head := "GET http://deb.example/x.deb HTTP/1.1\r\nHost: deb.example\r\nX-Pad: " + strings.Repeat("a", 100<<10) + "\r\n\r\n"
	go c.Write([]byte(head)) // the server may answer before reading it all
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a 100 KB request head: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("100 KB request head: %d, want 431", resp.StatusCode)
	}
}
