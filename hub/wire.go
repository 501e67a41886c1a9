package hub

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Headers of the node-hub protocol.
const (
	// HeaderDigest is what a node expects the bytes to hash to
	// ("sha256:hex"), from the metadata it learnt: the hub serves that
	// blob when it holds it, whichever generation its own metadata is at.
	HeaderDigest = "X-Warren-Digest"
	// HeaderSize is the size the node's metadata gives.
	HeaderSize = "X-Warren-Size"
	// HeaderScheme carries "https" for an https upstream URL, which the
	// node sends as http:// in the request line (a proxy request for an
	// https URL would be a CONNECT tunnel, which caches nothing).
	HeaderScheme = "X-Warren-Scheme"
	// HeaderRefused says why the hub, not upstream, refused: a reason below.
	HeaderRefused = "X-Warren-Refused"
	// HeaderQueuePosition and HeaderProgress come with a busy answer.
	HeaderQueuePosition = "X-Warren-Queue-Position"
	HeaderProgress      = "X-Warren-Progress" // "done/total" bytes of the remote transfer; total -1 when unknown
	// HeaderRetryAfterMs is the wait in milliseconds: Retry-After counts
	// whole seconds, and a transfer a fraction of a second from its end
	// would make every waiter lose most of one.
	HeaderRetryAfterMs = "X-Warren-Retry-After-Ms"
	// HeaderPeers, in a busy answer, are LAN peers of the requester
	// receiving the artifact from the hub ("addr:port, ..."): take it from
	// them.
	HeaderPeers = "X-Warren-Peers"
	// A node says who it is: its id (HeaderNode), its LAN (HeaderLAN, a
	// prefix) and where its LAN peers fetch blobs from it (HeaderPeer,
	// addr:port; absent for a node that serves none). The hub lists its
	// nodes, and tells a node whose LAN already receives an artifact it is
	// fetching which peer to take it from.
	HeaderNode = "X-Warren-Node"
	HeaderLAN  = "X-Warren-LAN"
	HeaderPeer = "X-Warren-Peer"
	// HeaderHinted says the node tried the peers a hub named for this
	// artifact, and none gave it: the hub names none again.
	HeaderHinted = "X-Warren-Hinted"
)

// RequesterOf is who r comes from, for the queue: the LAN the node
// declares when it holds the address the hub sees, else that address
// (nodes behind a NAT: one LAN for the public address); for a
// requester that declares none (apt, another hub, an older node), the
// /24 (IPv4) or /64 (IPv6) it comes from, and no hints; nor for a node
// whose hinted peers failed it (HeaderHinted). Its Peer is the declared
// HeaderPeer only when that is the request's own address.
func RequesterOf(r *http.Request) Requester {
	var remote netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		remote = ap.Addr().Unmap()
	}
	lan, err := netip.ParsePrefix(r.Header.Get(HeaderLAN))
	if err != nil || !plausibleLAN(lan) {
		bits := 64
		if remote.Is4() {
			bits = 24
		}
		if p, err := remote.Prefix(bits); err == nil {
			return Requester{LAN: p.String()}
		}
		return Requester{LAN: r.RemoteAddr}
	}
	lan = lan.Masked()
	who := Requester{LAN: lan.String(), Hints: r.Header.Get(HeaderHinted) == ""}
	if remote.IsValid() && !lan.Contains(remote) {
		// Behind a NAT, or a LAN the hub cannot check: one LAN per
		// address seen, whatever the node declares. Keyed by the
		// declared prefix, a client naming a new one each time was
		// each LAN's first, a stream of its own past max_requesters.
		who.LAN = "via " + viaKey(remote)
	}
	// Where its peers take blobs from it is the client's word, and the
	// hub names it to the LAN's next nodes: taken only when it is the
	// very address the request comes from (else a node could point its
	// LAN at any host and port, the router's ssh say), and never through
	// a NAT, where that address is not the node's own.
	if p, err := netip.ParseAddrPort(r.Header.Get(HeaderPeer)); err == nil && p.Port() != 0 && lan.Contains(remote) &&
		p.Addr().Unmap().WithZone("") == remote.WithZone("") {
		who.Peer = netip.AddrPortFrom(p.Addr().Unmap(), p.Port())
	}
	return who
}

// viaKey is the LAN of a requester that declares one not holding its
// address: an IPv4 address (a NAT's public one), an IPv6 one's /64 (one
// host may hold a /64's every address).
func viaKey(remote netip.Addr) string {
	if remote.Is6() {
		if p, err := remote.WithZone("").Prefix(64); err == nil {
			return p.String()
		}
	}
	return remote.String()
}

// plausibleLAN refuses prefixes no LAN has (a node that declared
// 0.0.0.0/0 would be told of, and offered to, every node of every site),
// and keeps the lengths a LAN has: each length holding a client's address
// is a LAN of its own, each its first requester's stream.
func plausibleLAN(p netip.Prefix) bool {
	if !p.IsValid() {
		return false
	}
	if p.Addr().Is4() {
		return p.Bits() >= 16 && p.Bits() <= 30
	}
	return p.Bits() >= 48 && p.Bits() <= 64
}

// Reasons a hub refuses.
const (
	ReasonToken         = "token"          // 407 to a proxy request, 401 to a direct one
	ReasonAuthLimit     = "auth-limit"     // 429, with Retry-After: too many failed tokens from the address
	ReasonNotPreloaded  = "not-preloaded"  // 404 in preload mode
	ReasonMaxRequesters = "max-requesters" // 503, with Retry-After
	ReasonLoop          = "loop"           // 508
	// ReasonEnrolKey: 403 to an enrolment for a node id enrolled with
	// another key, without that node's current certificate.
	ReasonEnrolKey = "enrol-other-key"
)

// Busy is a hub's answer to a requester beyond max_requesters of an
// artifact it is still fetching: come back after RetryAfter (meanwhile the
// LAN may have it from those who are streaming it).
type Busy struct {
	Reason   string `json:"reason"`
	Position int    `json:"position"`
	// Peers are the requester's LAN peers receiving it: take it from them.
	Peers      []netip.AddrPort `json:"peers,omitempty"`
	RetryAfter time.Duration    `json:"-"`
	RetrySecs  int              `json:"retry_after_seconds"`
	RetryMs    int64            `json:"retry_after_ms"`
	Done       int64            `json:"bytes_done"`
	Total      int64            `json:"bytes_total"`
	Requesters int              `json:"requesters"`
	Message    string           `json:"message"`
}

// WriteBusy answers 503 with Retry-After, the queue position and the
// transfer's progress, in headers and a small JSON body.
func WriteBusy(w http.ResponseWriter, b Busy) {
	secs := max(int((b.RetryAfter+time.Second-1)/time.Second), 1)
	b.Reason, b.RetrySecs, b.RetryMs = ReasonMaxRequesters, secs, max(b.RetryAfter.Milliseconds(), 1)
	b.Message = fmt.Sprintf("the hub is fetching this artifact for %d requesters already (max_requesters); you are number %d to wait: ask the LAN again in %d s, or come back then",
		b.Requesters, b.Position, secs)
	h := w.Header()
	if len(b.Peers) > 0 {
		var ps []string
		for _, p := range b.Peers {
			ps = append(ps, p.String())
		}
		b.Message = fmt.Sprintf("your LAN receives this artifact from the hub already: take it from %s (or come back in %d s)", strings.Join(ps, ", "), secs)
		h.Set(HeaderPeers, strings.Join(ps, ", "))
	}
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set(HeaderRetryAfterMs, strconv.FormatInt(b.RetryMs, 10))
	h.Set(HeaderRefused, ReasonMaxRequesters)
	h.Set(HeaderQueuePosition, strconv.Itoa(b.Position))
	h.Set(HeaderProgress, fmt.Sprintf("%d/%d", b.Done, b.Total))
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	json.NewEncoder(w).Encode(b)
}

// Refuse answers a refusal of the hub's own (not upstream's) with its
// reason in HeaderRefused and a message saying what to do.
func Refuse(w http.ResponseWriter, code int, reason, msg string) {
	h := w.Header()
	h.Set(HeaderRefused, reason)
	h.Set("Cache-Control", "no-store")
	http.Error(w, "warren hub: "+msg, code)
}

// RefuseToken answers a request without a token the hub takes. A proxy
// request (an absolute URL or a CONNECT: apt, dnf, a node) gets 407 and a
// Basic challenge, which apt answers with its proxy URL's user:TOKEN; a
// request to the hub itself (its info, apt-cacher-ng style paths,
// replication) gets 401 and a Bearer challenge.
func RefuseToken(w http.ResponseWriter, proxy bool, msg string) {
	if proxy {
		w.Header().Set("Proxy-Authenticate", `Basic realm="warren hub"`)
		Refuse(w, http.StatusProxyAuthRequired, ReasonToken, msg)
		return
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="warren hub"`)
	Refuse(w, http.StatusUnauthorized, ReasonToken, msg)
}

// RefuseAuthLimit answers a client whose tokens failed too often lately:
// 429, and when it may try again.
func RefuseAuthLimit(w http.ResponseWriter, wait time.Duration) {
	secs := max(int((wait+time.Second-1)/time.Second), 1)
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	Refuse(w, http.StatusTooManyRequests, ReasonAuthLimit,
		fmt.Sprintf("too many requests with a wrong or missing token from this address: try again in %d s, with a token the hub takes", secs))
}
