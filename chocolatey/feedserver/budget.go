package feedserver

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/warren-cache/warren/chocolatey"
	"github.com/warren-cache/warren/hub"
	"github.com/warren-cache/warren/status"
)

// Rate is a request budget: at most N requests in any Per. The zero Rate
// is no limit.
type Rate struct {
	N   int
	Per time.Duration
}

func (r Rate) String() string {
	if r.N <= 0 {
		return "unlimited"
	}
	switch r.Per {
	case time.Minute:
		return strconv.Itoa(r.N) + "/min"
	case time.Second:
		return strconv.Itoa(r.N) + "/s"
	case time.Hour:
		return strconv.Itoa(r.N) + "/h"
	}
	return fmt.Sprintf("%d/%s", r.N, r.Per)
}

// ParseRate reads "15/min", "2/s", "100/h"; "0" is no limit.
func ParseRate(s string) (Rate, error) {
	if strings.TrimSpace(s) == "0" {
		return Rate{}, nil
	}
	n, per, ok := strings.Cut(strings.TrimSpace(s), "/")
	v, err := strconv.Atoi(n)
	if !ok || err != nil || v < 1 {
		return Rate{}, fmt.Errorf("%q: want requests per time, e.g. 15/min, 2/s, 100/h, or 0 for no limit", s)
	}
	switch per {
	case "s", "sec", "second":
		return Rate{v, time.Second}, nil
	case "min", "minute", "m":
		return Rate{v, time.Minute}, nil
	case "h", "hour":
		return Rate{v, time.Hour}, nil
	}
	return Rate{}, fmt.Errorf("%q: the period is s, min or h", s)
}

// budgetMaxWait bounds how long a request waits for the budget's window;
// past it the client gets the last good answer or a 503 with Retry-After.
const budgetMaxWait = 10 * time.Second

// communityRate is the budget of a feed on the Chocolatey community
// repository unless set: it bans an address past about 20 requests a
// minute for an hour, and a site behind warren is one address.
var communityRate = Rate{15, time.Minute}

// isCommunityHost says whether host serves the community repository.
func isCommunityHost(host string) bool {
	h := strings.ToLower(host)
	if i := strings.LastIndexByte(h, ':'); i > 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return h == "chocolatey.org" || strings.HasSuffix(h, ".chocolatey.org")
}

// BudgetError is a request the budget will not send now: the wait would be
// longer than the bound, or upstream told us to stop (429) until later.
type BudgetError struct {
	Feed       string
	RetryAfter time.Duration
	Why        string
}

// Final marks a spent budget as the fill's end (door.Final): neither a
// retry nor another source changes it now.
func (e *BudgetError) Final() {}

// RetryIn is when the budget will send again.
func (e *BudgetError) RetryIn() time.Duration { return e.RetryAfter }

func (e *BudgetError) Error() string {
	return fmt.Sprintf("the upstream request budget of feed %q is spent (%s); retry in %s", feedLabel(e.Feed), e.Why, e.RetryAfter.Round(time.Second))
}

func feedLabel(feed string) string {
	if feed == "" {
		return "default"
	}
	return feed
}

// budget spends one upstream feed's requests: a sliding window of at most
// rate.N requests in any rate.Per (the shape of the repository's own
// limit, which a token bucket's burst would overshoot), waiters queued in
// order for at most maxWait, and a stop until the time a 429 names.
type budget struct {
	feed    string
	rate    Rate
	maxWait time.Duration
	log     *slog.Logger

	mu           sync.Mutex  // guards the fields below
	grants       []time.Time // the last rate.N grants, oldest first (some may be in the future: queued)
	blockedUntil time.Time
	blockLogged  time.Time // the block whose start was logged
	waits        int64     // requests that waited for the window
	refused      int64     // requests the budget turned away
	tooMany      int64     // 429s from upstream
}

// take waits for the next slot, or says why not (a *BudgetError).
func (b *budget) take(ctx context.Context) error {
	// The wall clock, not the injected one: its waits are real timers,
	// and a grant's time must be on the same clock as the timer's.
	now := time.Now()
	b.mu.Lock()
	if now.Before(b.blockedUntil) {
		b.refused++
		wait := b.blockedUntil.Sub(now)
		b.mu.Unlock()
		return &BudgetError{Feed: b.feed, RetryAfter: wait, Why: "upstream answered 429 Too Many Requests"}
	}
	if b.rate.N <= 0 {
		b.mu.Unlock()
		return nil
	}
	at := now
	if len(b.grants) >= b.rate.N {
		if next := b.grants[len(b.grants)-b.rate.N].Add(b.rate.Per); next.After(now) {
			at = next
		}
	}
	if wait := at.Sub(now); wait > b.maxWait {
		b.refused++
		b.mu.Unlock()
		return &BudgetError{Feed: b.feed, RetryAfter: wait, Why: fmt.Sprintf("%s, and the wait would pass %s", b.rate, b.maxWait)}
	}
	b.grants = append(b.grants, at)
	if len(b.grants) > b.rate.N {
		b.grants = slices.Delete(b.grants, 0, len(b.grants)-b.rate.N)
	}
	if at.After(now) {
		b.waits++
	}
	b.mu.Unlock()
	if !at.After(now) {
		return nil
	}
	t := time.NewTimer(at.Sub(now))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err() // the slot stays spent: giving it back would reorder those queued after it
	}
}

// tooManyRequests obeys a 429: nothing is sent until retryAfter has
// passed. Logged once per block.
func (b *budget) tooManyRequests(retryAfter time.Duration) {
	now := time.Now()
	b.mu.Lock()
	b.tooMany++
	until := now.Add(retryAfter)
	if until.After(b.blockedUntil) {
		b.blockedUntil = until
	}
	log := b.blockLogged.IsZero() || now.After(b.blockLogged)
	if log {
		b.blockLogged = b.blockedUntil
	}
	b.mu.Unlock()
	if log {
		b.log.Warn("chocolatey upstream says too many requests; sending it none until it allows, answering from the cache meanwhile",
			slog.String("feed", feedLabel(b.feed)), slog.Duration("retry_after", retryAfter), slog.String("budget", b.rate.String()))
	}
}

// stats is what the page and /metrics show of a budget.
func (b *budget) stats() status.Budget {
	b.mu.Lock()
	defer b.mu.Unlock()
	return status.Budget{Feed: feedLabel(b.feed), Rate: b.rate.String(), Waits: b.waits, Refused: b.refused, TooMany: b.tooMany, BlockedUntil: b.blockedUntil}
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; def when
// absent or unreadable.
func retryAfter(h http.Header, now time.Time, def time.Duration) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return def
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return def
}

// feedCall labels an upstream request of a feed for the budget's figures.
type feedCall struct {
	feed string
	kind string
}

type feedCallKey struct{}

func withFeedCall(ctx context.Context, feed, kind string) context.Context {
	return context.WithValue(ctx, feedCallKey{}, feedCall{feed, kind})
}

// budgetTransport sends every upstream request to a budgeted host (a
// Chocolatey feed's) through its budget, whatever asked for it (a feed
// query, a hash lookup, a package download or a redirect), and obeys a
// 429. Other hosts pass straight through.
type budgetTransport struct {
	base    http.RoundTripper
	budgets map[string]*budget // by lower-case host[:port]
	count   func(feed, kind string)
}

func (t *budgetTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := t.budgets[strings.ToLower(req.URL.Host)]
	if b == nil {
		return t.base.RoundTrip(req)
	}
	call, ok := req.Context().Value(feedCallKey{}).(feedCall)
	if !ok {
		call = feedCall{b.feed, "download"}
	}
	if err := b.take(req.Context()); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	t.count(call.feed, call.kind)
	resp, err := t.base.RoundTrip(req)
	if err == nil && resp.StatusCode == http.StatusTooManyRequests {
		// No Retry-After: the community repository's ban is an hour, but
		// a minute's pause and the budget are the better guess.
		b.tooManyRequests(retryAfter(resp.Header, time.Now(), time.Minute))
	}
	return resp, err
}

// Budgets are the feeds' upstream request budgets, one per upstream host
// (feeds on one host share it: the limit is the host's). Wrap puts them
// on the door's upstream transport, so that every request to a feed's
// host is spent from its budget, whatever asked for it.
type Budgets struct {
	byHost       map[string]*budget
	feedUpstream *prometheus.CounterVec
}

// NewBudgets checks the feeds (name -> upstream base URL) and makes their
// budgets: rate for each when set, else 15 a minute for feeds on the
// community repository and no limit elsewhere. It returns the feeds in
// their normal form (one trailing slash).
func NewBudgets(feeds map[string]string, rate *Rate, log *slog.Logger) (map[string]string, *Budgets, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	norm := map[string]string{}
	for name, u := range feeds {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, nil, fmt.Errorf("chocolatey feed %q: upstream %q is not an http(s) URL", name, hub.RedactURLs(u))
		}
		if name != "" && !chocolatey.ValidID(name) {
			return nil, nil, fmt.Errorf("chocolatey feed name %q: use letters, digits, '.', '-', '_'", name)
		}
		norm[name] = strings.TrimSuffix(u, "/") + "/"
	}
	b := &Budgets{byHost: map[string]*budget{}}
	b.feedUpstream = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_chocolatey_upstream_requests_total", Help: "Requests sent to a Chocolatey feed's upstream, by feed and kind of call.",
	}, []string{"feed", "kind"})
	for name, u := range norm {
		pu, _ := url.Parse(u)
		host := strings.ToLower(pu.Host)
		if b.byHost[host] != nil {
			continue // feeds on one host share its budget: the limit is the host's
		}
		r := Rate{}
		switch {
		case rate != nil:
			r = *rate
		case isCommunityHost(host):
			r = communityRate
		}
		b.byHost[host] = &budget{feed: name, rate: r, maxWait: budgetMaxWait, log: log}
	}
	return norm, b, nil
}

// Wrap spends a budget for every request to a feed's host.
func (b *Budgets) Wrap(base http.RoundTripper) http.RoundTripper {
	return &budgetTransport{base: base, budgets: b.byHost, count: func(feed, kind string) {
		b.feedUpstream.WithLabelValues(feedLabel(feed), kind).Inc()
	}}
}

// Stats are the budgets' figures, by feed.
func (b *Budgets) Stats() []status.Budget {
	var out []status.Budget
	for _, bb := range b.byHost {
		out = append(out, bb.stats())
	}
	slices.SortFunc(out, func(a, b status.Budget) int { return strings.Compare(a.Feed, b.Feed) })
	return out
}
