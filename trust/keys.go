package trust

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Config says where the keys are.
type Config struct {
	// AptDir is apt's configuration directory (/etc/apt): sources.list
	// and sources.list.d (each source's Signed-By), trusted.gpg and
	// trusted.gpg.d (the keys of the sources without one). "": none.
	AptDir string
	// YumReposDir is dnf's repositories (/etc/yum.repos.d): those with
	// repo_gpgcheck, with their file:// gpgkey. "": none.
	YumReposDir string
	// Keys are more repositories and their keyrings (a hub's site uses
	// repositories its own machine does not).
	Keys []RepoKeyring
}

// RepoKeyring names a repository (its base URL: an apt archive root, a
// dnf baseurl) and the keyring whose keys sign its metadata.
type RepoKeyring struct {
	URL     string `yaml:"url"`
	Keyring string `yaml:"keyring"`
}

// maxKeyringBytes bounds a keyring file: Debian's archive keyring is 56 KB.
const maxKeyringBytes = 8 << 20

// Repo is one repository whose metadata must be signed, and its keys.
type Repo struct {
	// Prefix is its base URL in normal form (normalize), ending in '/':
	// every file under it is its.
	Prefix string
	// From says where its keys were named (a sources line, a .repo
	// section, the configuration).
	From string
	// sets are the keys each of the sources naming it trusts: a
	// signature by a key of any of them is good.
	sets []keySet
	// problem, when set, is why its keys could not be read: its
	// metadata fails (closed, as apt would on that machine).
	problem string
}

// keySet is the keys one source trusts to sign: a keyring's, all of
// them or those its Signed-By fingerprints select (apt's rules, in
// signedBy).
type keySet struct {
	ring openpgp.EntityList
	// only, when set, are the fingerprints (upper-case hex) of the keys
	// and subkeys that may sign; nil: every key of ring.
	only map[string]bool
}

// Keys are the repositories with keys, found by URL.
type Keys struct {
	repos []*Repo // longest prefix first
}

// Load reads the keys Config names. Problems (a keyring that cannot be
// read, a source it cannot follow) are returned as warnings: a repository
// whose named keys cannot be read fails its checks, one with no keys is
// learnt from unchecked.
func Load(cfg Config) (*Keys, []string) {
	l := &loader{byPrefix: map[string]*Repo{}}
	if cfg.AptDir != "" {
		l.apt(cfg.AptDir)
	}
	if cfg.YumReposDir != "" {
		l.yum(cfg.YumReposDir)
	}
	for i, k := range cfg.Keys {
		where := fmt.Sprintf("signatures.keys[%d]", i)
		prefix, ok := normalize(k.URL, true)
		if !ok {
			l.warn("%s: %q is not an http(s) URL", where, k.URL)
			continue
		}
		ring, err := readKeyring(k.Keyring)
		l.add(prefix, where+" ("+k.Keyring+")", keySet{ring: ring}, err)
	}
	keys := &Keys{}
	for _, r := range l.byPrefix {
		keys.repos = append(keys.repos, r)
	}
	slices.SortFunc(keys.repos, func(a, b *Repo) int { return len(b.Prefix) - len(a.Prefix) })
	return keys, l.warnings
}

// For is the repository a file at rawURL belongs to, if its metadata
// must be signed: the one with the longest base URL above it.
func (k *Keys) For(rawURL string) (*Repo, bool) {
	if k == nil {
		return nil, false
	}
	u, ok := normalize(rawURL, false)
	if !ok {
		return nil, false
	}
	for _, r := range k.repos {
		if strings.HasPrefix(u, r.Prefix) {
			return r, true
		}
	}
	return nil, false
}

// Len is how many repositories have keys.
func (k *Keys) Len() int { return len(k.repos) }

// Problem says why the repository's keys could not be read ("" when they
// were).
func (r *Repo) Problem() string { return r.problem }

// normalize is a URL as keys are found by: scheme and host lower-case, no
// default port, no user, the path cleaned (dir: ending in '/'), no query.
// apt's mirror+ and tor+ methods and file: are not http.
func normalize(raw string, dir bool) (string, bool) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return "", false
	}
	scheme, host := strings.ToLower(u.Scheme), strings.ToLower(u.Host)
	if scheme != "http" && scheme != "https" {
		return "", false
	}
	host = strings.TrimSuffix(host, map[string]string{"http": ":80", "https": ":443"}[scheme])
	p := u.EscapedPath()
	if p == "" {
		p = "/"
	}
	clean := path.Clean(p)
	if dir || strings.HasSuffix(p, "/") {
		clean = strings.TrimSuffix(clean, "/") + "/"
	}
	return scheme + "://" + host + clean, true
}

type loader struct {
	byPrefix map[string]*Repo
	warnings []string
	global   openpgp.EntityList // trusted.gpg and trusted.gpg.d
}

func (l *loader) warn(format string, args ...any) {
	l.warnings = append(l.warnings, fmt.Sprintf(format, args...))
}

// add records that prefix's metadata is signed by the keys of set (named
// at from); the keys of two entries for one repository are both good.
func (l *loader) add(prefix, from string, set keySet, err error) {
	r := l.byPrefix[prefix]
	if r == nil {
		r = &Repo{Prefix: prefix, From: from}
		l.byPrefix[prefix] = r
	} else if !strings.Contains(r.From, from) {
		r.From += "; " + from
	}
	if err != nil {
		l.warn("%s: the keys for %s cannot be read, so its metadata fails its signature check: %v", from, prefix, err)
		if r.problem == "" {
			r.problem = err.Error()
		}
		return
	}
	r.sets = append(r.sets, set)
}

// apt reads apt's sources and keyrings under dir.
func (l *loader) apt(dir string) {
	if ring, err := readKeyring(filepath.Join(dir, "trusted.gpg")); err == nil {
		l.global = append(l.global, ring...)
	} else if !errors.Is(err, fs.ErrNotExist) {
		l.warn("%s: %v", filepath.Join(dir, "trusted.gpg"), err)
	}
	for _, f := range dirFiles(filepath.Join(dir, "trusted.gpg.d"), ".gpg", ".asc") {
		ring, err := readKeyring(f)
		if err != nil {
			l.warn("%s: %v (apt ignores it too)", f, err)
			continue
		}
		l.global = append(l.global, ring...)
	}
	var sources []AptSource
	read := func(f string, parse func(io.Reader, string) ([]AptSource, error)) {
		fh, err := os.Open(f)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			l.warn("%s: %v", f, err)
			return
		}
		defer fh.Close()
		got, err := parse(fh, f)
		if err != nil {
			l.warn("%s: %v", f, err)
		}
		sources = append(sources, got...)
	}
	read(filepath.Join(dir, "sources.list"), ParseSourcesList)
	for _, f := range dirFiles(filepath.Join(dir, "sources.list.d"), ".list", ".sources") {
		if strings.HasSuffix(f, ".sources") {
			read(f, ParseDeb822Sources)
		} else {
			read(f, ParseSourcesList)
		}
	}
	for _, src := range sources {
		prefix, ok := normalize(src.URI, true)
		if !ok || src.Trusted {
			continue // not http, or apt checks nothing for it
		}
		if len(src.SignedBy) == 0 {
			if len(l.global) > 0 {
				l.add(prefix, src.Where, keySet{ring: l.global}, nil)
			}
			continue
		}
		set, err := l.signedBy(src.SignedBy, src.Where)
		l.add(prefix, src.Where, set, err)
	}
}

// signedBy reads a source's Signed-By as apt 2.6 does (sources.list(5),
// and apt's gpgv method): one inline armored key, or keyring files
// (absolute paths) and fingerprints, which select keys from those
// keyrings, or from trusted.gpg and trusted.gpg.d when it names none.
// With no fingerprint, every key of the keyrings signs. A fingerprint
// selects the key that has it: a primary key with its subkeys, or a
// subkey alone; FPR! the key with that very fingerprint, not its
// subkeys. apt fails the source when a keyring it names cannot be read or
// a fingerprint is not one (40 hex digits): so does warren, closed.
func (l *loader) signedBy(items []string, from string) (keySet, error) {
	if len(items) == 1 && strings.Contains(items[0], "BEGIN PGP PUBLIC KEY BLOCK") {
		ring, err := openpgp.ReadArmoredKeyRing(strings.NewReader(items[0]))
		if err == nil && len(ring) == 0 {
			err = errors.New("its inline key block holds no key")
		}
		return keySet{ring: ring}, err
	}
	var ring openpgp.EntityList
	var fprs []string
	files := 0
	for _, v := range items {
		if strings.HasPrefix(v, "/") {
			files++
			got, err := readKeyring(v)
			if err != nil {
				return keySet{}, err // apt: "At least one invalid signature was encountered"
			}
			ring = append(ring, got...)
			continue
		}
		fp := strings.ToUpper(v)
		if h := strings.TrimSuffix(fp, "!"); len(h) != 40 || strings.Trim(h, "0123456789ABCDEF") != "" {
			return keySet{}, fmt.Errorf("signed-by %q is neither a keyring file (an absolute path) nor a fingerprint (its 40 hex digits): apt refuses the source", v)
		}
		fprs = append(fprs, fp)
	}
	where := "the keyrings it names"
	if files == 0 {
		ring, where = l.global, "trusted.gpg or trusted.gpg.d"
	}
	if len(fprs) == 0 {
		return keySet{ring: ring}, nil
	}
	only := map[string]bool{}
	var missing []string
	for _, fp := range fprs {
		h, exact := strings.CutSuffix(fp, "!")
		found := false
		for _, e := range ring {
			if keyFingerprint(e.PrimaryKey) == h {
				found, only[h] = true, true
				if !exact {
					for _, sk := range e.Subkeys {
						only[keyFingerprint(sk.PublicKey)] = true
					}
				}
			}
			for _, sk := range e.Subkeys {
				if keyFingerprint(sk.PublicKey) == h {
					found, only[h] = true, true // a subkey's: that subkey alone
				}
			}
		}
		if !found {
			missing = append(missing, h)
		}
	}
	if len(only) == 0 {
		return keySet{}, fmt.Errorf("no key %s in %s", strings.Join(missing, ", "), where)
	}
	if len(missing) > 0 {
		l.warn("%s: signed-by names key %s, which is not in %s (the other keys it names sign)", from, strings.Join(missing, ", "), where)
	}
	return keySet{ring: ring, only: only}, nil
}

func keyFingerprint(k *packet.PublicKey) string {
	if k == nil {
		return ""
	}
	return strings.ToUpper(hex.EncodeToString(k.Fingerprint))
}

// yum reads dnf's .repo files under dir: a repository with repo_gpgcheck
// has its repomd.xml signed by its gpgkey.
func (l *loader) yum(dir string) {
	for _, f := range dirFiles(dir, ".repo") {
		fh, err := os.Open(f)
		if err != nil {
			l.warn("%s: %v", f, err)
			continue
		}
		repos, err := ParseRepoFile(fh, f)
		fh.Close()
		if err != nil {
			l.warn("%s: %v", f, err)
		}
		for _, r := range repos {
			if !r.RepoGPGCheck {
				continue // dnf checks no repository signature: neither does warren
			}
			var ring openpgp.EntityList
			var firstErr error
			for _, k := range r.GPGKeys {
				u, err := url.Parse(k)
				if err != nil || u.Scheme != "file" {
					if firstErr == nil {
						firstErr = fmt.Errorf("gpgkey %s is not a file:// URL (warren fetches no keys)", k)
					}
					continue
				}
				got, err := readKeyring(u.Path)
				if err != nil && firstErr == nil {
					firstErr = err
				}
				ring = append(ring, got...)
			}
			if len(r.GPGKeys) == 0 {
				firstErr = errors.New("repo_gpgcheck is on but the repository names no gpgkey")
			}
			if len(ring) > 0 {
				firstErr = nil
			}
			for _, b := range r.BaseURLs {
				if strings.Contains(b, "$") {
					l.warn("%s [%s]: baseurl %s has dnf variables; its signatures are not checked by warren (name it under signatures.keys)", r.Where, r.ID, b)
					continue
				}
				if prefix, ok := normalize(b, true); ok {
					l.add(prefix, r.Where+" ["+r.ID+"]", keySet{ring: ring}, firstErr)
				}
			}
		}
	}
}

// readKeyring reads a keyring file, binary or armored.
func readKeyring(name string) (openpgp.EntityList, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyringBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyringBytes {
		return nil, fmt.Errorf("%s: larger than a keyring can be", name)
	}
	var ring openpgp.EntityList
	if bytes.Contains(b[:min(len(b), 1024)], []byte("-----BEGIN PGP")) {
		ring, err = openpgp.ReadArmoredKeyRing(bytes.NewReader(b))
	} else {
		ring, err = openpgp.ReadKeyRing(bytes.NewReader(b))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(ring) == 0 {
		return nil, fmt.Errorf("%s holds no key", name)
	}
	return ring, nil
}

// dirFiles are the files of dir with one of the suffixes, in apt's order
// (by name); none when it is not there.
func dirFiles(dir string, suffixes ...string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") {
			continue
		}
		for _, s := range suffixes {
			if strings.HasSuffix(name, s) {
				out = append(out, filepath.Join(dir, name))
				break
			}
		}
	}
	return out
}
