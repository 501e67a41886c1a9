package proxy

import (
	"github.com/warren-cache/warren/status"
)

// newBoard builds the status page, /_warren/stats and /metrics (package
// status) on what the front counts, the door's figures, and what cmd
// gives in Config (the hub's figures, the feeds' budgets, Status,
// Collectors).
func (s *Server) newBoard() *status.Board {
	src := status.Sources{
		Snapshot: s.Snapshot, Door: s.door, History: s.hist, Status: s.cfg.Status, Budgets: s.cfg.Budgets,
		MirrorGroups: s.door.MirrorGroups,
		Hub:          s.cfg.HubStatus, Replicated: s.cfg.Replicated, Collectors: s.cfg.Collectors, Logger: s.log, Now: s.now,
	}
	for _, h := range s.cfg.Hubs {
		// Each hub that tells its state has its figures in /metrics.
		if p, ok := h.(status.Parent); ok {
			src.Hubs = append(src.Hubs, p)
		}
	}
	return status.New(src)
}
