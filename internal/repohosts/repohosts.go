// Package repohosts finds the https repository hosts a machine's apt and
// dnf use (sources.list, sources.list.d/*.list and *.sources;
// yum.repos.d/*.repo), and which of them have credentials (apt's
// auth.conf and auth.conf.d, a dnf repo's username or sslclientcert, a
// user:password in a URI): those are never intercepted, so warren never
// sees their secrets.
package repohosts

import (
	"bufio"
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
}

// Intercept is HTTPS without the hosts that have credentials.
func (f Found) Intercept() []string {
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

// Scan reads the configuration under root ("/" on a real machine).
func Scan(root string) Found {
	https, creds := map[string]bool{}, map[string]bool{}
	addURI := func(raw string) {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return
		}
		host := strings.ToLower(u.Hostname())
		if u.User != nil {
			creds[host] = true
		}
		if strings.EqualFold(u.Scheme, "https") {
			https[host] = true
		}
	}
	apt := filepath.Join(root, "etc", "apt")
	files := []string{filepath.Join(apt, "sources.list")}
	lists, _ := filepath.Glob(filepath.Join(apt, "sources.list.d", "*.list"))
	files = append(files, lists...)
	for _, f := range files {
		eachLine(f, func(line string) {
			// deb [options] uri suite [components]
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
				addURI(fields[i])
			}
		})
	}
	deb822, _ := filepath.Glob(filepath.Join(apt, "sources.list.d", "*.sources"))
	for _, f := range deb822 {
		eachLine(f, func(line string) {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), "URIs") {
				for _, u := range strings.Fields(v) {
					addURI(u)
				}
			}
		})
	}
	auth := []string{filepath.Join(apt, "auth.conf")}
	more, _ := filepath.Glob(filepath.Join(apt, "auth.conf.d", "*"))
	auth = append(auth, more...)
	for _, f := range auth {
		eachLine(f, func(line string) {
			fields := strings.Fields(line)
			for i := 0; i+1 < len(fields); i++ {
				if fields[i] == "machine" {
					creds[machineHost(fields[i+1])] = true
				}
			}
		})
	}
	repos, _ := filepath.Glob(filepath.Join(root, "etc", "yum.repos.d", "*.repo"))
	for _, f := range repos {
		var section []string
		credential := false
		flush := func() {
			for _, u := range section {
				addURI(u)
				if credential {
					if p, err := url.Parse(u); err == nil && p.Host != "" {
						creds[strings.ToLower(p.Hostname())] = true
					}
				}
			}
			section, credential = nil, false
		}
		eachLine(f, func(line string) {
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
				credential = strings.TrimSpace(v) != ""
			}
		})
		flush()
	}
	return Found{HTTPS: sorted(https), Credentials: sorted(creds)}
}

// machineHost is the host of an auth.conf machine entry: a host, maybe
// with a scheme, a port and a path.
func machineHost(m string) string {
	if !strings.Contains(m, "://") {
		m = "https://" + m
	}
	if u, err := url.Parse(m); err == nil {
		return strings.ToLower(u.Hostname())
	}
	return strings.ToLower(m)
}

// eachLine calls fn with each non-comment line of the file, trimmed.
func eachLine(path string, fn func(string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() || fi.Size() > maxFile {
		return
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxFile)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		fn(line)
	}
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
