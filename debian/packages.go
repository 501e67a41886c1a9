package debian

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
)

// Package is what a Packages or Sources index says about one file: a .deb,
// or one of a source package's files.
type Package struct {
	Filename string // relative to the archive root
	Size     int64
	SHA256   string // lowercase hex
	// Name, Version, Depends (Depends and Pre-Depends, as written) and
	// Recommends (as written) say what the package is, for a preload
	// list's globs and dependencies: apt installs what a package
	// recommends unless told not to, so a preload must fetch it too.
	Name       string
	Version    string
	Depends    string
	Recommends string
}

// DependNames lists the package names a Depends or Recommends field
// needs: the first of each set of alternatives, without its version,
// architecture qualifier (":any"), or the architecture ("[amd64]") and
// build profile ("<!nocheck>") restrictions of Build-Depends-style fields.
func DependNames(depends string) []string {
	var out []string
	for _, dep := range strings.Split(depends, ",") {
		first, _, _ := strings.Cut(dep, "|")
		name := strings.TrimSpace(first)
		// A name ends at a space or where a version, qualifier or
		// restriction begins, spaced from it or not.
		if i := strings.IndexFunc(name, endsName); i >= 0 {
			name = name[:i]
		}
		if name != "" {
			out = append(out, name)
		}
	}
	return out
}

func endsName(r rune) bool { return unicode.IsSpace(r) || strings.ContainsRune("(:[<", r) }

// ParsePackages streams a (decompressed) Packages file and calls fn for every
// paragraph that names a file with a SHA256. Paragraphs without SHA256 (very
// old archives) are skipped. A malformed paragraph stops the parse with an
// error naming its line; fn's error stops it too and is returned as is.
func ParsePackages(r io.Reader, fn func(Package) error) error {
	var (
		cur      Package
		haveSize bool
	)
	return paragraphs{
		what: "packages",
		field: func(lineNo int, key, val string) error {
			switch key {
			case "Filename":
				// Flat repositories made with "apt-ftparchive packages ." say ./x.deb.
				val = strings.TrimPrefix(val, "./")
				if err := checkRelPath(val); err != nil {
					return fmt.Errorf("packages line %d: Filename: %w", lineNo, err)
				}
				cur.Filename = val
			case "Size":
				n, err := strconv.ParseInt(val, 10, 64)
				if err != nil || n < 0 {
					return fmt.Errorf("packages line %d: Size %q is not a non-negative integer", lineNo, clip(val))
				}
				cur.Size, haveSize = n, true
			case "SHA256":
				if !isSHA256Hex(val) {
					return fmt.Errorf("packages line %d: SHA256 %q is not a 64-digit hex digest", lineNo, clip(val))
				}
				cur.SHA256 = strings.ToLower(val)
			case "Package":
				cur.Name = val
			case "Version":
				cur.Version = val
			case "Depends", "Pre-Depends":
				if cur.Depends != "" {
					cur.Depends += ", "
				}
				cur.Depends += val
			case "Recommends":
				cur.Recommends = val
			}
			return nil
		},
		end: func(startLine int) error {
			defer func() { cur, haveSize = Package{}, false }()
			if cur.Filename == "" && cur.SHA256 == "" && !haveSize {
				return nil
			}
			if cur.Filename == "" {
				return fmt.Errorf("packages paragraph at line %d: no Filename field", startLine)
			}
			if cur.SHA256 == "" {
				return nil
			}
			if !haveSize {
				return fmt.Errorf("packages paragraph at line %d (%s): no Size field", startLine, clip(cur.Filename))
			}
			return fn(cur)
		},
	}.walk(r)
}

// paragraphs walks the deb822 paragraphs of a Packages or Sources file:
// field for each "Key: value" line (value trimmed), cont for each
// continuation line (nil: they are skipped), end when a paragraph ends, with
// the line it started on.
type paragraphs struct {
	what  string // "packages" or "sources", for errors
	field func(lineNo int, key, val string) error
	cont  func(lineNo int, line string) error
	end   func(startLine int) error
}

func (p paragraphs) walk(r io.Reader) error {
	sc := newLineScanner(r)
	startLine, lineNo := 0, 0
	flush := func() error {
		if startLine == 0 {
			return nil
		}
		defer func() { startLine = 0 }()
		return p.end(startLine)
	}
	for sc.Scan() {
		lineNo++
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			if err := flush(); err != nil {
				return err
			}
			continue
		}
		if startLine == 0 {
			startLine = lineNo
		}
		switch line[0] {
		case '#':
			continue
		case ' ', '\t':
			if p.cont != nil {
				if err := p.cont(lineNo, line); err != nil {
					return err
				}
			}
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("%s line %d: %q is neither a field nor a continuation line", p.what, lineNo, clip(line))
		}
		if err := p.field(lineNo, key, strings.TrimSpace(val)); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read %s after line %d: %w", p.what, lineNo, err)
	}
	return flush()
}
