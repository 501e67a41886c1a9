package door

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/warren-cache/warren/cachestore"
	"github.com/warren-cache/warren/debian"
	"github.com/warren-cache/warren/trust"
)

// Signatures (verify_signatures: auto). A repository whose keys are known
// (package trust: what apt and dnf on this machine trust, and the
// configuration) has its top metadata checked before anything is learnt
// from it: an InRelease's clearsigned text, a Release with its
// Release.gpg, a repomd.xml with its repomd.xml.asc; a Release's
// Valid-Until is honoured. What fails
//
//   - is passed to the client unchanged on a node (apt and dnf decide:
//     they trust the same keys), but teaches nothing: no fact, and no
//     index file of that generation is learnt (in a repository with keys,
//     an index is learnt only when a verified Release lists its hash);
//   - on a hub, is not even stored: the fill fails as an inconsistent
//     generation does, so nodes and clients keep the previous generation
//     (offline mode serves it), nothing goes into the change feed, and
//     preload and replication refuse it (replicate checks what it pulls).
//
// A repository with no known key is learnt from as before, and the page
// says so ("unsigned (no key)"), per repository.

// Keys is what the door needs of the repositories' keys (package trust).
type Keys interface {
	For(url string) (*trust.Repo, bool)
}

var _ Keys = (*trust.Keys)(nil)

// ErrSignature is repository metadata that failed its signature check.
var ErrSignature = errors.New("repository metadata failed its signature check")

// The states a repository's signature check can be in.
const (
	SigVerified = "verified"
	SigFailed   = "failed"
	SigNoKey    = "unsigned (no key)"
)

// SignatureState is a repository's last signature check, for the page.
type SignatureState struct {
	Repository string // the suite's (apt) or repository's (dnf) URL
	State      string // SigVerified, SigFailed or SigNoKey
	Signer     string // the key that signed, when verified
	Reason     string // why it failed
	Keys       string // where its keys are named
	At         time.Time
}

// maxTopBytes bounds a Release or repomd.xml read to be checked.
const maxTopBytes = 32 << 20

// maxSigBytes bounds a detached signature.
const maxSigBytes = 1 << 20

// maxSigStates bounds the repositories the page lists.
const maxSigStates = 512

// signatures is the door's signature bookkeeping.
type signatures struct {
	// verified are the checks of top files that verified: the same
	// bytes checked the same way against the same keys need no second
	// fetch of their signature.
	verified *lru.Cache[verifiedKey, verifiedTop]
	// retry are blobs whose check could not be made (their signature
	// could not be fetched): a hit learns them again.
	retry *lru.Cache[cachestore.Digest, struct{}]

	mu     sync.Mutex // guards states
	states map[string]SignatureState
}

// verifiedKey names a check made: a blob, read as the same kind of file
// (an InRelease, a Release with its Release.gpg, a repomd.xml with its
// repomd.xml.asc), verified with the keys of the same repository. Bytes
// another repository's keys verified prove nothing here.
type verifiedKey struct {
	repo   *trust.Repo
	meta   string
	inline bool
	d      cachestore.Digest
}

type verifiedTop struct {
	signer     string
	validUntil time.Time // zero: none
}

func newSignatures() signatures {
	v, _ := lru.New[verifiedKey, verifiedTop](1024)
	r, _ := lru.New[cachestore.Digest, struct{}](256)
	return signatures{verified: v, retry: r, states: map[string]SignatureState{}}
}

// SignatureStates are the repositories' last signature checks, by URL.
func (s *Door) SignatureStates() []SignatureState {
	s.sigs.mu.Lock()
	defer s.sigs.mu.Unlock()
	out := make([]SignatureState, 0, len(s.sigs.states))
	for _, st := range s.sigs.states {
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b SignatureState) int {
		switch {
		case a.Repository < b.Repository:
			return -1
		case a.Repository > b.Repository:
			return 1
		}
		return 0
	})
	return out
}

func (s *Door) noteSignature(st SignatureState) {
	st.At = s.now()
	s.sigs.mu.Lock()
	defer s.sigs.mu.Unlock()
	if _, ok := s.sigs.states[st.Repository]; ok || len(s.sigs.states) < maxSigStates {
		s.sigs.states[st.Repository] = st
	}
}

// topVerdict is what a check says of a top metadata file.
type topVerdict struct {
	ok   bool   // learn from it (verified, or no key)
	text []byte // what to learn from: an InRelease's signed text; nil: the file
	err  error  // why not
	// transient: the check could not be made (the signature could not be
	// fetched), as opposed to made and failed.
	transient bool
}

// isTop says whether p is a top metadata file a signature covers.
func isTop(p Plan) bool { return p.Meta == MetaRelease || p.Meta == MetaRepomd }

// checkTop checks top metadata file p, whose bytes (blob d) are body, and
// records the repository's state; a failure is logged, once per check.
func (s *Door) checkTop(ctx context.Context, p Plan, d cachestore.Digest, body []byte) topVerdict {
	if s.cfg.Keys == nil || !isTop(p) {
		return topVerdict{ok: true}
	}
	scope, err := metaScope(p)
	if err != nil {
		return topVerdict{ok: true}
	}
	repoName := repositoryName(scope)
	repo, ok := s.cfg.Keys.For(p.Key)
	if !ok {
		s.noteSignature(SignatureState{Repository: repoName, State: SigNoKey})
		return topVerdict{ok: true}
	}
	inline := path.Base(p.MetaName) == "InRelease"
	vk := verifiedKey{repo: repo, meta: p.Meta, inline: inline, d: d}
	if v, ok := s.sigs.verified.Get(vk); ok && !d.IsZero() {
		if err := s.validUntil(v.validUntil); err == nil {
			text := []byte(nil)
			if inline {
				if blk, _, err := trust.SplitInline(body); err == nil {
					text = signedText(blk.Plaintext)
				}
			}
			// The repository's state is this check's, whatever the
			// one before it said.
			s.noteSignature(SignatureState{Repository: repoName, State: SigVerified, Signer: v.signer, Keys: repo.From})
			return topVerdict{ok: true, text: text}
		}
	}
	var signed *trust.Signed
	var verr error
	transient := false
	switch {
	case inline:
		signed, verr = repo.CheckInline(body, s.now())
	default:
		name := "Release.gpg"
		if p.Meta == MetaRepomd {
			name = "repomd.xml.asc"
		}
		signed, verr, transient = s.checkDetached(ctx, p, repo, body, name)
	}
	var until time.Time
	if verr == nil && p.Meta == MetaRelease {
		until, verr = releaseValidUntil(signed.Text)
		if verr == nil {
			verr = s.validUntil(until)
		}
	}
	st := SignatureState{Repository: repoName, Keys: repo.From}
	if verr != nil {
		st.State, st.Reason = SigFailed, verr.Error()
		s.noteSignature(st)
		what := "passed to the client unchanged (apt or dnf decides), nothing learnt from it"
		if s.cfg.KeepGenerations > 0 {
			what = "not stored, learnt or handed to nodes: they keep the previous generation"
		}
		if transient {
			what = "its signature could not be fetched; nothing learnt from it yet (tried again on its next use)"
			s.sigs.retry.Add(d, struct{}{})
		}
		s.log.Warn("repository metadata failed its signature check; "+what,
			slog.String("url", p.ShownURL()), slog.String("repository", repoName), slog.String("keys", repo.From), slog.Any("err", verr))
		return topVerdict{err: fmt.Errorf("%w: %w", ErrSignature, verr), transient: transient}
	}
	st.State, st.Signer = SigVerified, signerName(signed)
	s.noteSignature(st)
	if !d.IsZero() {
		s.sigs.verified.Add(vk, verifiedTop{signer: st.Signer, validUntil: until})
	}
	if inline {
		return topVerdict{ok: true, text: signed.Text}
	}
	return topVerdict{ok: true}
}

// signerName names the key that signed, for the page: a subkey with its
// primary key.
func signerName(signed *trust.Signed) string {
	if signed.Primary != "" && signed.Primary != signed.Signer {
		return signed.Signer + " (a subkey of " + signed.Primary + ")"
	}
	return signed.Signer
}

// signedText is a clearsigned text as a file of whole lines.
func signedText(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(b[:len(b):len(b)], '\n')
	}
	return b
}

// checkDetached checks body against the signature file name beside p (a
// Release.gpg, a repomd.xml.asc), fetched through the door: the copy held
// first (what replication brought, what the client just fetched), then,
// should that fail, a fresh one (a signature that changed with its file).
func (s *Door) checkDetached(ctx context.Context, p Plan, repo *trust.Repo, body []byte, name string) (*trust.Signed, error, bool) {
	var last error
	for _, stale := range []bool{true, false} {
		sig, err := s.fetchSignature(ctx, p, name, stale)
		if err != nil {
			var st *UpstreamStatusError
			if errors.As(err, &st) && (st.Code == 404 || st.Code == 410) {
				return nil, fmt.Errorf("%w: the repository has keys but serves no %s", trust.ErrNotSigned, name), false
			}
			last = err
			continue
		}
		signed, err := repo.CheckDetached(body, sig, s.now())
		if err == nil {
			return signed, nil, false
		}
		last = err
	}
	// Upstream down or refusing for now: the check was not made.
	return nil, last, IsUpstreamDown(last) || errors.Is(last, context.Canceled)
}

// fetchSignature brings the signature file name beside p in through the
// door and reads it.
func (s *Door) fetchSignature(ctx context.Context, p Plan, name string, stale bool) ([]byte, error) {
	u, err := url.Parse(p.URL)
	if err != nil {
		return nil, err
	}
	u.Path, u.RawPath = path.Join(path.Dir(u.Path), name), ""
	sp := s.plan(ctx, u, p.Cred)
	d, err := s.Fetch(ctx, sp, Asker{UA: "warren (signature check)"}, FetchOptions{Stale: stale})
	if err != nil {
		return nil, err
	}
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, fmt.Errorf("read %s back: %w", name, err)
	}
	defer b.Close()
	sig, err := io.ReadAll(io.LimitReader(b.File, maxSigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s back: %w", name, err)
	}
	if len(sig) > maxSigBytes {
		return nil, fmt.Errorf("%s is larger than a signature can be", name)
	}
	return sig, nil
}

// releaseValidUntil reads a verified Release's Valid-Until (zero: none).
// A Release the parser refuses still has its field honoured, read from
// its lines (a malformed file is the learn's to report, but an expired
// one is expired whatever else it holds).
func releaseValidUntil(text []byte) (time.Time, error) {
	var until string
	if rel, err := debian.ParseRelease(bytes.NewReader(text)); err == nil {
		until = rel.ValidUntil
	} else {
		for line := range strings.Lines(string(text)) {
			if v, ok := strings.CutPrefix(line, "Valid-Until:"); ok {
				until = strings.TrimSpace(v)
				break
			}
		}
	}
	if until == "" {
		return time.Time{}, nil
	}
	t, err := debian.ParseDate(until)
	if err != nil {
		return time.Time{}, fmt.Errorf("its Valid-Until: %w", err)
	}
	return t, nil
}

// validUntil refuses a Release past its Valid-Until, as apt does (a
// mirror replaying an old, validly signed generation).
func (s *Door) validUntil(until time.Time) error {
	if !until.IsZero() && s.now().After(until) {
		return fmt.Errorf("expired: valid until %s (a mirror serving an old generation?)", until.UTC().Format(time.RFC1123))
	}
	return nil
}

// CheckSignature checks a held top metadata file p (blob d) as a fetched
// one is checked: for replication, which brings a Release or repomd.xml
// from a source hub. nil for a file that is no top file, or whose
// repository has no keys.
func (s *Door) CheckSignature(ctx context.Context, p Plan, d cachestore.Digest) error {
	if s.cfg.Keys == nil || !isTop(p) {
		return nil
	}
	_, err := s.VerifiedTop(ctx, p, d)
	return err
}

// Keyed says whether the file at key belongs to a repository whose
// metadata must be signed (its keys are known): what it lists is learnt
// only from a verified Release or repomd.xml.
func (s *Door) Keyed(key string) bool {
	if s.cfg.Keys == nil {
		return false
	}
	_, ok := s.cfg.Keys.For(key)
	return ok
}

// VerifiedTop reads a held top metadata file p (blob d) as a learn reads
// it, once it passed its check as a fetched one must: an InRelease's
// signed text (nothing around it), another file whole. A file that fails
// gives an error wrapping ErrSignature; one of a repository with no keys
// is read whole. For warren's own readers (a preload run): what they act
// on is what a learn would have learnt from.
func (s *Door) VerifiedTop(ctx context.Context, p Plan, d cachestore.Digest) ([]byte, error) {
	body, err := s.readTop(d)
	if err != nil {
		return nil, err
	}
	if s.cfg.Keys == nil || !isTop(p) {
		return body, nil
	}
	v := s.checkTop(ctx, p, d, body)
	switch {
	case !v.ok:
		return nil, v.err
	case v.text != nil:
		return v.text, nil
	}
	return body, nil
}

func (s *Door) readTop(d cachestore.Digest) ([]byte, error) {
	b, err := s.store.ReadBlob(d)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	body, err := io.ReadAll(io.LimitReader(b.File, maxTopBytes+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxTopBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrSignature, maxTopBytes)
	}
	return body, nil
}

// vouched says whether an index file (blob d of p) is one a verified top
// file lists, or needs not be: in a repository with keys, an index whose
// hash no learnt Release or repomd.xml gave (theirs failed, it is not
// listed, or only a replication source says so) teaches nothing.
func (s *Door) vouched(p Plan, d cachestore.Digest) bool {
	switch {
	case s.cfg.Keys == nil:
		return true
	case p.Meta != MetaPackages && p.Meta != MetaSources && p.Meta != MetaPrimary:
		return true // a top file (checked itself), a package
	}
	if _, keyed := s.cfg.Keys.For(p.Key); !keyed {
		return true
	}
	k, err := s.store.Known(p.Key)
	return err == nil && k.Digest == d
}

// repositoryName is a repository's scope as the page shows it: without a
// private scope's name (the log's access lines carry that).
func repositoryName(scope repoScope) string {
	u, err := url.Parse(string(scope))
	if err != nil {
		return string(scope)
	}
	u.User = nil
	return u.String()
}
