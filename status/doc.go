// Package status is what a warren shows of itself: the status page at
// /_warren/, its figures as JSON at /_warren/stats, the day's bytes by
// ecosystem (the page's chart) and the Prometheus registry at /metrics.
//
// It reads and never drives. The front (package proxy) routes those paths
// to a Board and reports what it counts: each request's outcome
// (CountRequest) and the bytes served and fetched by ecosystem (History).
// Everything else a Board shows it reads, when a page or a scrape asks,
// through the small sources it is built with (Sources): the front's
// running totals, the door's, a hub's queue and refusals, the Chocolatey
// budgets, and the Status cmd/warren assembles from the other parts.
package status
