package main

import (
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/warren-cache/warren/door"
	"github.com/warren-cache/warren/internal/repohosts"
)

// listTrust is the daemon's door.Config.Lists: which of dnf's lists of
// mirrors make mirror groups (door/listtrust.go). mirror_lists auto takes
// the metalink= and mirrorlist= URLs of the repo files in
// signatures.yum_repos_dir, read again at most every 30 s (a repository
// added is picked up without a restart), and their baseurl= URLs, which no
// list may take; the URL prefixes mirror_lists names are added.
type listTrust struct {
	auto     bool
	dir      string
	prefixes []string
	log      *slog.Logger

	mu           sync.Mutex // guards the rest
	policy       *door.ListPolicy
	lists, bases []string
	scanned      time.Time
	lastProblem  string // logged once, until it changes
}

// newListTrust is nil when mirror_lists is off.
func newListTrust(cfg settings, log *slog.Logger) *listTrust {
	lt := &listTrust{dir: cfg.Signatures.YumReposDir, log: log}
	for _, l := range cfg.MirrorLists {
		switch l {
		case "off":
			return nil
		case "auto":
			lt.auto = true
		default:
			lt.prefixes = append(lt.prefixes, l)
		}
	}
	return lt
}

// Policy is the policy now: the same value until the repo files change.
func (lt *listTrust) Policy() *door.ListPolicy {
	lt.mu.Lock()
	defer lt.mu.Unlock()
	if lt.policy != nil && (!lt.auto || time.Since(lt.scanned) < 30*time.Second) {
		return lt.policy
	}
	lt.scanned = time.Now()
	var found repohosts.YumRepos
	if lt.auto {
		found = repohosts.ScanYumRepos(lt.dir)
	}
	if lt.policy != nil && slices.Equal(found.Lists, lt.lists) && slices.Equal(found.BaseURLs, lt.bases) {
		return lt.policy
	}
	policy, err := door.NewListPolicy(found.Lists, found.BaseURLs, lt.prefixes)
	problem := errText(err)
	for _, u := range found.Unreadable {
		problem += fmt.Sprintf("; %s: %v", u.Path, u.Err)
	}
	if problem != lt.lastProblem && problem != "" {
		lt.log.Warn("dnf's repo files cannot all be read: the lists of mirrors of those that cannot make no mirror group (their files are still cached as they come)",
			slog.String("dir", lt.dir), slog.String("problem", problem))
	}
	lt.lastProblem = problem
	if lt.policy == nil || !slices.Equal(found.Lists, lt.lists) {
		lt.log.Info("lists of mirrors trusted to make mirror groups", slog.Any("repo_files", found.Lists), slog.Any("mirror_lists", lt.prefixes))
	}
	lt.policy, lt.lists, lt.bases = policy, found.Lists, found.BaseURLs
	return policy
}
