package trust

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The files that say which keys sign a repository: apt's sources (the
// one-line sources.list form and the deb822 .sources form) and dnf's .repo
// files. Pure parsers, bounded: a machine's files are a few KB.

const (
	maxConfigBytes   = 1 << 20
	maxConfigLine    = 64 << 10
	maxConfigEntries = 4096
)

// AptSource is one repository an apt sources file names.
type AptSource struct {
	URI string
	// SignedBy is what Signed-By names: keyring files, fingerprints, or
	// one inline armored key; empty: the keys in trusted.gpg(.d).
	SignedBy []string
	// Trusted is trusted=yes: apt checks no signature for it.
	Trusted bool
	// Where is file:line, for the log and the page.
	Where string
}

// errTooLarge refuses a configuration file past the bounds.
var errTooLarge = errors.New("larger than a configuration file can be")

// lines reads r's lines, bounded.
func lines(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(io.LimitReader(r, maxConfigBytes+1))
	sc.Buffer(make([]byte, 0, 4096), maxConfigLine)
	total := 0
	for n := 1; sc.Scan(); n++ {
		total += len(sc.Bytes()) + 1
		if total > maxConfigBytes {
			return errTooLarge
		}
		if err := fn(n, sc.Text()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

// ParseSourcesList reads the one-line form: "deb [opt=v ...] uri suite
// [component...]". name says where, for AptSource.Where.
func ParseSourcesList(r io.Reader, name string) ([]AptSource, error) {
	var out []AptSource
	err := lines(r, func(n int, line string) error {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 3 || fields[0] != "deb" && fields[0] != "deb-src" {
			return nil
		}
		src := AptSource{Where: fmt.Sprintf("%s:%d", name, n)}
		i := 1
		if strings.HasPrefix(fields[1], "[") {
			// Options: [ a=b c=d ], spaces inside the brackets or not.
			opts := strings.TrimPrefix(fields[1], "[")
			for !strings.HasSuffix(opts, "]") && i+1 < len(fields) {
				i++
				opts += " " + fields[i]
			}
			i++
			for _, o := range strings.Fields(strings.TrimSuffix(opts, "]")) {
				k, v, _ := strings.Cut(o, "=")
				switch strings.ToLower(k) {
				case "signed-by":
					src.SignedBy = append(src.SignedBy, splitList(v)...)
				case "trusted":
					src.Trusted = strings.EqualFold(v, "yes")
				}
			}
		}
		if i >= len(fields) {
			return nil
		}
		src.URI = fields[i]
		if len(out) >= maxConfigEntries {
			return errTooLarge
		}
		out = append(out, src)
		return nil
	})
	return out, err
}

// ParseDeb822Sources reads the deb822 form: stanzas of URIs, Suites,
// Signed-By (paths or fingerprints, or an armored key on continuation
// lines), Trusted and Enabled, separated by blank lines.
func ParseDeb822Sources(r io.Reader, name string) ([]AptSource, error) {
	var out []AptSource
	fields := map[string]string{}
	start, last := 0, ""
	flush := func() error {
		defer clear(fields)
		if len(fields) == 0 || strings.EqualFold(fields["enabled"], "no") {
			return nil
		}
		if !strings.Contains(" "+strings.ToLower(fields["types"])+" ", " deb") {
			return nil
		}
		var signedBy []string
		if sb := fields["signed-by"]; strings.Contains(sb, "BEGIN PGP PUBLIC KEY BLOCK") {
			signedBy = []string{sb}
		} else {
			signedBy = splitList(sb)
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			if len(out) >= maxConfigEntries {
				return errTooLarge
			}
			out = append(out, AptSource{URI: uri, SignedBy: signedBy, Trusted: strings.EqualFold(fields["trusted"], "yes"),
				Where: fmt.Sprintf("%s:%d", name, start)})
		}
		return nil
	}
	err := lines(r, func(n int, line string) error {
		switch {
		case strings.TrimSpace(line) == "":
			last = ""
			return flush()
		case strings.HasPrefix(line, "#"):
			return nil
		case line[0] == ' ' || line[0] == '\t':
			// A continuation: " ." is an empty line (an armored key's).
			if last == "" {
				return nil
			}
			more := strings.TrimSpace(line)
			if more == "." {
				more = ""
			}
			fields[last] += "\n" + more
			return nil
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return nil
		}
		if len(fields) == 0 {
			start = n
		}
		last = strings.ToLower(strings.TrimSpace(k))
		fields[last] = strings.TrimSpace(v)
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, flush()
}

// splitList splits a Signed-By value: commas or spaces.
func splitList(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// YumRepo is one repository of a dnf .repo file.
type YumRepo struct {
	ID       string
	BaseURLs []string
	// GPGKeys are gpgkey's URLs; RepoGPGCheck is repo_gpgcheck: dnf checks
	// repomd.xml's signature with them.
	GPGKeys      []string
	RepoGPGCheck bool
	Where        string
}

// ParseRepoFile reads a dnf .repo file.
func ParseRepoFile(r io.Reader, name string) ([]YumRepo, error) {
	var out []YumRepo
	var cur *YumRepo
	last := ""
	err := lines(r, func(n int, line string) error {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || t[0] == '#' || t[0] == ';':
			return nil
		case strings.HasPrefix(t, "[") && strings.HasSuffix(t, "]"):
			if len(out) >= maxConfigEntries {
				return errTooLarge
			}
			out = append(out, YumRepo{ID: strings.Trim(t, "[]"), Where: fmt.Sprintf("%s:%d", name, n)})
			cur, last = &out[len(out)-1], ""
			return nil
		case cur == nil:
			return nil
		case line[0] == ' ' || line[0] == '\t':
			// A continuation of baseurl or gpgkey (one URL a line).
			switch last {
			case "baseurl":
				cur.BaseURLs = append(cur.BaseURLs, splitList(t)...)
			case "gpgkey":
				cur.GPGKeys = append(cur.GPGKeys, splitList(t)...)
			}
			return nil
		}
		k, v, ok := strings.Cut(t, "=")
		if !ok {
			return nil
		}
		last = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		switch last {
		case "baseurl":
			cur.BaseURLs = append(cur.BaseURLs, splitList(v)...)
		case "gpgkey":
			cur.GPGKeys = append(cur.GPGKeys, splitList(v)...)
		case "repo_gpgcheck":
			cur.RepoGPGCheck = v == "1" || strings.EqualFold(v, "true") || strings.EqualFold(v, "yes")
		}
		return nil
	})
	return out, err
}
