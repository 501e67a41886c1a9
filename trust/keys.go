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
	ring openpgp.EntityList
	// problem, when set, is why its keys could not be read: its
	// metadata fails (closed, as apt would on that machine).
	problem string
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
		l.add(prefix, where+" ("+k.Keyring+")", ring, err)
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

// add records that prefix's metadata is signed by ring (named at from);
// the keys of two entries for one repository are both good.
func (l *loader) add(prefix, from string, ring openpgp.EntityList, err error) {
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
	r.ring = append(r.ring, ring...)
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
				l.add(prefix, src.Where, l.global, nil)
			}
			continue
		}
		var ring openpgp.EntityList
		var firstErr error
		for _, sb := range src.SignedBy {
			got, err := l.signedBy(sb)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			ring = append(ring, got...)
		}
		if len(ring) > 0 {
			firstErr = nil // one readable keyring of several is what apt uses
		}
		l.add(prefix, src.Where, ring, firstErr)
	}
}

// signedBy reads one Signed-By item: an inline key, a keyring file, or a
// fingerprint of a key in trusted.gpg(.d).
func (l *loader) signedBy(v string) (openpgp.EntityList, error) {
	switch {
	case strings.Contains(v, "BEGIN PGP PUBLIC KEY BLOCK"):
		return openpgp.ReadArmoredKeyRing(strings.NewReader(v))
	case strings.HasPrefix(v, "/"):
		return readKeyring(v)
	}
	fp := strings.ToUpper(strings.TrimSuffix(v, "!"))
	if _, err := hex.DecodeString(fp); err != nil || len(fp) < 16 {
		return nil, fmt.Errorf("signed-by %q is neither a keyring file nor a fingerprint", v)
	}
	var out openpgp.EntityList
	for _, e := range l.global {
		if hasFingerprint(e, fp) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no key %s in trusted.gpg or trusted.gpg.d", fp)
	}
	return out, nil
}

func hasFingerprint(e *openpgp.Entity, fp string) bool {
	if strings.HasSuffix(strings.ToUpper(hex.EncodeToString(e.PrimaryKey.Fingerprint)), fp) {
		return true
	}
	for _, sk := range e.Subkeys {
		if strings.HasSuffix(strings.ToUpper(hex.EncodeToString(sk.PublicKey.Fingerprint)), fp) {
			return true
		}
	}
	return false
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
					l.add(prefix, r.Where+" ["+r.ID+"]", ring, firstErr)
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
