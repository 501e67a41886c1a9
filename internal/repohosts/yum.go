package repohosts

import (
	"bufio"
	"io"
	"path/filepath"
	"strings"
)

// YumRepos are the URLs dnf's repo files give, as written (dnf's
// variables such as $releasever in them): what decides which lists of
// mirrors warren trusts to make mirror groups (package door).
type YumRepos struct {
	// Lists are the metalink= and mirrorlist= URLs.
	Lists []string
	// BaseURLs are the baseurl= URLs: repositories dnf uses without a
	// list.
	BaseURLs []string
	// Unreadable are the files and the directory that could not be read.
	Unreadable []Unreadable
}

// ScanYumRepos reads the .repo files of dir (/etc/yum.repos.d), as dnf
// does: every section's URLs, enabled or not (a repository enabled for
// one run with --enablerepo is one the machine uses). A directory that is
// not there has none.
func ScanYumRepos(dir string) YumRepos {
	s := &scan{https: map[string]bool{}, creds: map[string]bool{}}
	var out YumRepos
	seen := map[string]bool{}
	add := func(dst *[]string, u string) {
		if u = strings.TrimSpace(u); u != "" && !seen[u] {
			seen[u] = true
			*dst = append(*dst, u)
		}
	}
	for _, f := range s.dirFiles(filepath.Clean(dir), func(name string) bool { return strings.HasSuffix(name, ".repo") }) {
		s.read(f, func(r io.Reader) error {
			sc := bufio.NewScanner(&boundedReader{r: r, left: maxFile})
			sc.Buffer(make([]byte, 0, 64<<10), maxFile+1)
			key := "" // the key a line that starts with a space goes on with (ini's continuation)
			for sc.Scan() {
				raw := sc.Text()
				line := strings.TrimSpace(raw)
				switch {
				case line == "" || line[0] == '#' || line[0] == ';':
					continue
				case raw[0] == ' ' || raw[0] == '\t':
				case strings.HasPrefix(line, "["):
					key = ""
					continue
				default:
					k, v, ok := strings.Cut(line, "=")
					if !ok {
						key = ""
						continue
					}
					key, line = strings.ToLower(strings.TrimSpace(k)), v
				}
				for _, u := range strings.Fields(strings.ReplaceAll(line, ",", " ")) {
					switch key {
					case "mirrorlist", "metalink":
						add(&out.Lists, u)
					case "baseurl":
						add(&out.BaseURLs, u)
					}
				}
			}
			return sc.Err()
		})
	}
	out.Unreadable = s.unreadable
	return out
}
