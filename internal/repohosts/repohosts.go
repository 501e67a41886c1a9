// Package repohosts finds the https repository hosts a machine's apt and
// dnf use (sources.list, sources.list.d/*.list and *.sources;
// yum.repos.d/*.repo), and which of them have credentials (apt's
// auth.conf and auth.conf.d, a dnf repo's username or sslclientcert, a
// user:password in a URI): those are never intercepted, so warren never
// sees their secrets. A file it cannot read may hold a credential for any
// host: Scan names it, and Intercept is then empty. ScanYumRepos gives
// dnf's lists of mirrors and base URLs as its repo files write them.
package repohosts

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Found is what the machine's package tools use.
type Found struct {
	HTTPS       []string // https hosts, sorted, each once
	Credentials []string // hosts with credentials, sorted
	// Unreadable are the files and directories that could not be read
	// whole: any of them may hold a credential.
	Unreadable []Unreadable
}

// Unreadable is a configuration file or directory Scan could not read.
type Unreadable struct {
	Path string
	Dir  bool // a directory, whose list of files could not be read
	Err  error
}

// Intercept is HTTPS without the hosts that have credentials; nothing at
// all when a file could not be read, since it may give any host a
// credential (fail closed: a host not intercepted costs only its caching).
func (f Found) Intercept() []string {
	if len(f.Unreadable) > 0 {
		return nil
	}
	var out []string
	for _, h := range f.HTTPS {
		if !slices.Contains(f.Credentials, h) {
			out = append(out, h)
		}
	}
	return out
}

// maxFile bounds what one configuration file may hold.
const maxFile = 1 << 20

// scan is one Scan's findings.
type scan struct {
	https, creds map[string]bool
	unreadable   []Unreadable
}

// Scan reads the configuration under root ("/" on a real machine): the
// files apt and dnf read, and nothing else, so that an unreadable file
// apt ignores does not count.
func Scan(root string) Found {
	s := &scan{https: map[string]bool{}, creds: map[string]bool{}}
	apt := filepath.Join(root, "etc", "apt")
	s.eachLine(filepath.Join(apt, "sources.list"), s.sourcesLine)
	for _, f := range s.dirFiles(filepath.Join(apt, "sources.list.d"), func(name string) bool {
		return aptPart(name, "list") || aptPart(name, "sources")
	}) {
		if strings.HasSuffix(f, ".sources") {
			s.eachLine(f, s.deb822Line)
		} else {
			s.eachLine(f, s.sourcesLine)
		}
	}
	authConf := func(r io.Reader) error {
		entries, err := ParseAuthConf(r)
		for _, e := range entries {
			// Any scheme, port or path: the host's https is then never
			// intercepted.
			s.creds[e.Host] = true
		}
		return err
	}
	s.read(filepath.Join(apt, "auth.conf"), authConf)
	// apt reads auth.conf.d/*.conf and the files with no extension there.
	for _, f := range s.dirFiles(filepath.Join(apt, "auth.conf.d"), func(name string) bool {
		return aptPart(name, "conf") || aptPart(name, "")
	}) {
		s.read(f, authConf)
	}
	for _, f := range s.dirFiles(filepath.Join(root, "etc", "yum.repos.d"), func(name string) bool { return strings.HasSuffix(name, ".repo") }) {
		s.repoFile(f)
	}
	return Found{HTTPS: sorted(s.https), Credentials: sorted(s.creds), Unreadable: s.unreadable}
}

func (s *scan) addURI(raw string) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Host == "" {
		return
	}
	host := strings.ToLower(u.Hostname())
	if u.User != nil {
		s.creds[host] = true
	}
	if strings.EqualFold(u.Scheme, "https") {
		s.https[host] = true
	}
}

// sourcesLine reads a one-line entry: deb [options] uri suite [components].
func (s *scan) sourcesLine(line string) {
	fields := strings.Fields(line)
	if len(fields) < 2 || (fields[0] != "deb" && fields[0] != "deb-src") {
		return
	}
	i := 1
	if strings.HasPrefix(fields[1], "[") {
		for i < len(fields) && !strings.HasSuffix(fields[i], "]") {
			i++
		}
		i++
	}
	if i < len(fields) {
		s.addURI(fields[i])
	}
}

// deb822Line reads the URIs field of a deb822 .sources file.
func (s *scan) deb822Line(line string) {
	if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "URIs") {
		for _, u := range strings.Fields(v) {
			s.addURI(u)
		}
	}
}

// repoFile reads a dnf .repo file: each section's URLs, and whether the
// section has a credential for them.
func (s *scan) repoFile(path string) {
	var section []string
	credential := false
	flush := func() {
		for _, u := range section {
			s.addURI(u)
			if credential {
				if p, err := url.Parse(u); err == nil && p.Host != "" {
					s.creds[strings.ToLower(p.Hostname())] = true
				}
			}
		}
		section, credential = nil, false
	}
	s.eachLine(path, func(line string) {
		if strings.HasPrefix(line, "[") {
			flush()
			return
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "baseurl", "mirrorlist", "metalink":
			section = append(section, strings.Fields(strings.ReplaceAll(v, ",", " "))...)
		case "username", "password", "sslclientcert", "sslclientkey":
			// An empty one after a set one does not take it back.
			credential = credential || strings.TrimSpace(v) != ""
		}
	})
	flush()
}

// aptPart says whether apt reads the file name in a .d directory with
// the extension ext ("" for none), as its GetListOfFilesInDir decides:
// no leading dot; letters, digits, "_", "-", ":" and "." only; not ending
// in a dot. Bytes beyond ASCII are let through: what a locale counts as a
// letter is not known here, and reading a file apt skips is the safe side.
func aptPart(name, ext string) bool {
	if name == "" || name[0] == '.' || name[len(name)-1] == '.' {
		return false
	}
	if i := strings.LastIndexByte(name, '.'); ext == "" && i >= 0 || ext != "" && (i < 0 || name[i+1:] != ext) {
		return false
	}
	for _, c := range []byte(name) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80 || strings.IndexByte("_-:.", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// dirFiles lists the files of dir that want(name) picks, sorted; a
// directory that is not there has none, and one that cannot be read is
// unreadable. Subdirectories are skipped, as apt and dnf skip them.
func (s *scan) dirFiles(dir string, want func(string) bool) []string {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		s.unreadable = append(s.unreadable, Unreadable{Path: dir, Dir: true, Err: err})
		return nil
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if !want(e.Name()) {
			continue
		}
		if st, err := os.Stat(p); err == nil && st.IsDir() || errors.Is(err, fs.ErrNotExist) {
			continue // a directory, or a dangling link: nothing to read
		}
		out = append(out, p)
	}
	return out
}

// read opens path and hands it to parse; a file that is not there is
// fine, and one that cannot be read whole is unreadable.
func (s *scan) read(path string, parse func(io.Reader) error) {
	err := readFile(path, parse)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		s.unreadable = append(s.unreadable, Unreadable{Path: path, Err: err})
	}
}

func readFile(path string, parse func(io.Reader) error) error {
	// Stat first: opening a FIFO would wait for a writer.
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() && !st.IsDir() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return parse(f) // its errors name the file (os) or say what was wrong
}

// eachLine calls fn with each non-comment line of the file, trimmed.
func (s *scan) eachLine(path string, fn func(string)) {
	s.read(path, func(r io.Reader) error {
		sc := bufio.NewScanner(&boundedReader{r: r, left: maxFile})
		sc.Buffer(make([]byte, 0, 64<<10), maxFile+1)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || line[0] == '#' || line[0] == ';' {
				continue
			}
			fn(line)
		}
		return sc.Err()
	})
}

func sorted(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}
