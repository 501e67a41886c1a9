package status

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/warren-cache/warren/hub"
)

// Status is what other parts tell the status page (cmd assembles it).
type Status struct {
	NodeID      string
	CacheBytes  int64
	CacheMax    int64 // 0: no limit
	Blobs       int
	UploadSlots int
	Uploads     int64 // uploads to peers running now
	UploadsPeak int64 // most at once since start
	// BytesUploaded, UploadsRefused (busy) and DatagramsDropped (bad
	// peer messages) count since start.
	BytesUploaded    int64
	UploadsRefused   int64
	DatagramsDropped int64
	Peers            []Peer
	Transfers        []Transfer
	// KnownArtifacts counts the URL -> digest facts learnt, by ecosystem.
	KnownArtifacts map[string]int64
	// Role is peer, passive or hub.
	Role string
	// Hubs are the site's hubs as this node sees them.
	Hubs []hub.ParentStatus
	// PreloadSchedule and PreloadRuns are a hub's preloading (runs newest
	// last); Preloading says the hub has a preload list.
	Preloading      bool
	PreloadSchedule string
	PreloadRuns     []hub.PreloadRun
	// Replication is a hub's pulls (runs newest last), when it has
	// replicate_from entries; ReplicationServes says it serves other hubs.
	Replication       []hub.ReplicateRun
	ReplicateSchedule string
	ReplicationServes bool
	// HTTPSIntercept are the https hosts answered with the site CA, whose
	// fingerprint SiteCA is.
	HTTPSIntercept []string
	SiteCA         string
	// Warnings are risks the settings run (a token that crosses the
	// network in clear), shown at the top of the page and by warren status.
	Warnings []string
	// PeerTLS says how blobs go between this node and its peers;
	// PeerTLSRefused counts peers turned away without a site CA certificate.
	PeerTLS        string
	PeerTLSRefused int64
	// Listen is where this warren serves (Families: IPv4, IPv6, or both).
	Listen, Families string
	// HTTPSNames are the names a hub's https certificate carries (none:
	// plain http only).
	HTTPSNames []string
}

// Figures are the status's numbers by name, for /_warren/stats and the CLI.
func (st Status) Figures() map[string]any {
	return map[string]any{
		"node": st.NodeID, "cache_bytes": st.CacheBytes, "cache_max": st.CacheMax, "blobs": st.Blobs,
		"peers": len(st.Peers), "uploads_active": st.Uploads, "uploads_peak": st.UploadsPeak,
		"bytes_uploaded": st.BytesUploaded, "uploads_refused_busy": st.UploadsRefused,
		"datagrams_dropped": st.DatagramsDropped, "transfers": len(st.Transfers),
		"known_artifacts": sumValues(st.KnownArtifacts), "role": st.Role, "listen": st.Listen, "families": st.Families,
		"peer_tls": st.PeerTLS, "peer_tls_refused": st.PeerTLSRefused,
	}
}

// HubLines are the hubs as `warren status` prints them, one line each.
func (st Status) HubLines() map[string]string {
	out := map[string]string{}
	for i, h := range st.Hubs {
		state := "reachable"
		if !h.Reachable {
			state = "unreachable"
			if h.LastError != "" {
				state += " (" + h.LastError + ")"
			}
		}
		link := "http"
		switch {
		case h.TLS:
			link = "https"
		case h.TokenInClear:
			link = "http, token in clear"
		}
		out[fmt.Sprintf("hub_%d", i+1)] = fmt.Sprintf("%s %s, %s from it, %d requests, %d waits; %s", h.URL, state, humanBytes(h.Bytes), h.Requests, h.Waits, link)
	}
	for i, w := range st.Warnings {
		out[fmt.Sprintf("warning_%d", i+1)] = w
	}
	if len(st.HTTPSNames) > 0 {
		out["https"] = strings.Join(st.HTTPSNames, ",")
	}
	if st.SiteCA != "" {
		// apt's helper reads https_intercept to answer for https URIs.
		out["https_intercept"] = strings.Join(st.HTTPSIntercept, ",")
		out["site_ca"] = st.SiteCA
	}
	return out
}

func sumValues(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// Peer is one row of the peers table.
type Peer struct {
	ID, Addr, Role string
	// Family is IPv4 or IPv6: how this node reaches the peer; TLS how its
	// blobs go ("mutual TLS", "refused: why", "plain http").
	Family, TLS string
	Priority    int32
	FreeBytes   uint64
	LastSeen    time.Time
}

// Family names an address's family as the page and metrics show it.
func Family(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// Transfer is a fill in progress.
type Transfer struct {
	What          string
	Written, Size int64
}
