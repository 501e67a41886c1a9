package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/warren-cache/warren/cachestore"
)

// PageTimeout bounds the reading of one change feed page.
const PageTimeout = 2 * time.Minute

// FeedClient reads another hub's change feed and blobs (replicate_from).
type FeedClient struct {
	From ReplicateFrom
	Self string // this hub's id, sent so that the source can refuse a loop
	HTTP *http.Client
}

func (c FeedClient) base() string { return strings.TrimSuffix(c.From.URL, "/") }

// shown is the source's URL as errors show it: without a password.
func (c FeedClient) shown() string { return RedactURLs(c.base()) }

func (c FeedClient) request(ctx context.Context, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("replicate from %s: %w", c.From.Name, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.From.Token)
	req.Header.Set(HeaderHubID, c.Self)
	return req, nil
}

// Page asks for the entries after the cursor, a place in the change log
// named log ("" when not known yet), within the repositories this hub
// pulls. A source whose log is another (rebuilt) answers from its start.
func (c FeedClient) Page(ctx context.Context, log string, after uint64) (Page, error) {
	// A page is small: one that takes longer than this is a source
	// trickling it, which must not hold the run (and the schedule) forever.
	ctx, cancel := context.WithTimeout(ctx, PageTimeout)
	defer cancel()
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "limit": {strconv.Itoa(MaxPage)}}
	if log != "" {
		q.Set("log", log)
	}
	if !c.From.Repositories.All() {
		b, _ := json.Marshal(c.From.Repositories)
		q.Set("scope", string(b))
	}
	req, err := c.request(ctx, c.base()+ChangesPath+"?"+q.Encode())
	if err != nil {
		return Page{}, err
	}
	resp, err := do(c.HTTP, req)
	if err != nil {
		return Page{}, fmt.Errorf("replicate from %s: the change feed at %s: %w", c.From.Name, c.shown(), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Page{}, c.refused(resp)
	}
	p, err := DecodePage(io.LimitReader(resp.Body, 64<<20), log, after)
	if err != nil {
		return Page{}, fmt.Errorf("replicate from %s: %w", c.From.Name, err)
	}
	return p, nil
}

// DecodePage reads one change feed page asked for after the cursor in the
// change log named log, and refuses one that goes back, runs long or names
// malformed entries. A page of another log (the source was rebuilt) is
// read from that log's start.
func DecodePage(r io.Reader, log string, after uint64) (Page, error) {
	var p Page
	if err := json.NewDecoder(r).Decode(&p); err != nil {
		return Page{}, fmt.Errorf("a malformed change feed page: %w", err)
	}
	if log != "" && p.Log != log {
		after = 0
	}
	if p.Next < after || len(p.Entries) > MaxPage || p.Last < p.Next {
		return Page{}, fmt.Errorf("a change feed page that goes back (cursor %d after %d, newest %d) or is too long (%d entries)", p.Next, after, p.Last, len(p.Entries))
	}
	if p.More && p.Next == after {
		// Asking again from the same cursor would get the same page,
		// forever.
		return Page{}, fmt.Errorf("a change feed page that does not advance (cursor %d again, with more to come): the source hub is broken; the run stops", after)
	}
	prev := after
	for _, e := range p.Entries {
		if e.Seq <= prev || e.Seq > p.Next || e.Digest.Validate() != nil || e.Key == "" || e.Size < 0 && !e.Delete {
			return Page{}, fmt.Errorf("a change feed entry out of order or malformed (seq %d after %d, key %q, digest %v, size %d)", e.Seq, prev, e.Key, e.Digest, e.Size)
		}
		prev = e.Seq
	}
	return p, nil
}

// BlobURL is where the source serves a blob.
func (c FeedClient) BlobURL(d cachestore.Digest) string { return c.base() + BlobsPath + d.String() }

// Do sends a blob request (fill.GetAt) with the token.
func (c FeedClient) Do(req *http.Request) (*http.Response, error) {
	req.Header.Set("Authorization", "Bearer "+c.From.Token)
	req.Header.Set(HeaderHubID, c.Self)
	return do(c.HTTP, req)
}

// refused turns a refusal into an error that says what to do.
func (c FeedClient) refused(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(b))
	switch resp.StatusCode {
	case http.StatusUnauthorized:
		return fmt.Errorf("replicate from %s: refused (401): %s; check that replicate_from's token is one of that hub's replication.tokens", c.From.Name, msg)
	case http.StatusTooManyRequests:
		return fmt.Errorf("replicate from %s: refused (429) after too many wrong tokens from this hub's address, for %s s: %s; check that replicate_from's token is one of that hub's replication.tokens", c.From.Name, resp.Header.Get("Retry-After"), msg)
	case http.StatusLoopDetected:
		return &LoopError{Source: c.From.Name, Chain: msg}
	case http.StatusNotFound:
		return fmt.Errorf("replicate from %s: %s serves no replication (404): is it a warren hub with replication.tokens set?", c.From.Name, c.shown())
	}
	return fmt.Errorf("replicate from %s: the change feed answered %s: %s", c.From.Name, resp.Status, msg)
}
