package proxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/warren-cache/warren/status"
)

// newBoard builds the status page, /_warren/stats and /metrics (package
// status) on what the front counts, the door's figures, the hub role's,
// the Chocolatey budgets' and what cmd gives in Config (Status, Collectors).
func (s *Server) newBoard() *status.Board {
	s.staleAnswers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "warren_chocolatey_stale_answers_total", Help: "Feed calls answered with a kept answer because upstream could not be asked (budget spent, 429, down).",
	}, []string{"feed"})
	src := status.Sources{
		Snapshot: s.Snapshot, Door: s.door, History: &s.hist, Status: s.cfg.Status, Budgets: s.BudgetStats,
		Collectors: append([]prometheus.Collector{s.feedUpstream, s.staleAnswers}, s.cfg.Collectors...),
		Logger:     s.log, Now: s.now,
	}
	for _, h := range s.cfg.Hubs {
		// Each hub that tells its state has its figures in /metrics.
		if p, ok := h.(status.Parent); ok {
			src.Hubs = append(src.Hubs, p)
		}
	}
	if s.cfg.Hub != nil {
		src.Hub = &status.HubRole{Mode: s.cfg.Hub.Mode, Queue: s.cfg.Hub.Queue, Refusals: s.hubRefusals}
	}
	return status.New(src)
}
