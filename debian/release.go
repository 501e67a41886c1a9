package debian

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"
)

// maxLine bounds one line of a control file. Real Packages lines stay below
// a few KiB; anything near this is not apt metadata.
const maxLine = 1 << 20

// maxReleaseFiles bounds the files one Release lists: Debian's and
// Ubuntu's list a few thousand; a million is a file built to fill memory.
const maxReleaseFiles = 1 << 20

// FileEntry is one line of a Release file's SHA256 section.
type FileEntry struct {
	Path   string // relative to the directory holding Release
	Size   int64
	SHA256 string // lowercase hex
}

// ReleaseFile is what warren needs from InRelease or Release.
type ReleaseFile struct {
	Suite         string
	Codename      string
	AcquireByHash bool
	Files         []FileEntry
	// Date and ValidUntil are the fields as written ("" when absent):
	// ParseDate reads them.
	Date, ValidUntil string
}

// ParseRelease reads a Release or InRelease file (the clear-signed wrapper
// is accepted and stripped; apt, not warren, checks the signature).
func ParseRelease(r io.Reader) (*ReleaseFile, error) {
	rel := &ReleaseFile{}
	sc := newLineScanner(r)
	inSHA256 := false
	signed := false
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Text()
		if lineNo == 1 && line == "-----BEGIN PGP SIGNED MESSAGE-----" {
			signed = true
			// Armor headers ("Hash: ...") end at the first blank line.
			for sc.Scan() {
				lineNo++
				if sc.Text() == "" {
					break
				}
			}
			continue
		}
		if signed {
			if line == "-----BEGIN PGP SIGNATURE-----" {
				break
			}
			line = strings.TrimPrefix(line, "- ") // dash-escaping of RFC 4880
		}
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if !inSHA256 {
				continue
			}
			e, err := parseChecksumLine(line)
			if err != nil {
				return nil, fmt.Errorf("release line %d: %w", lineNo, err)
			}
			if len(rel.Files) == maxReleaseFiles {
				return nil, fmt.Errorf("release line %d: more than %d files listed; not a repository's Release", lineNo, maxReleaseFiles)
			}
			rel.Files = append(rel.Files, e)
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("release line %d: %q is neither a field nor a continuation line", lineNo, clip(line))
		}
		val = strings.TrimSpace(val)
		inSHA256 = key == "SHA256"
		switch key {
		case "Suite":
			rel.Suite = val
		case "Codename":
			rel.Codename = val
		case "Acquire-By-Hash":
			rel.AcquireByHash = strings.EqualFold(val, "yes")
		case "Date":
			rel.Date = val
		case "Valid-Until":
			rel.ValidUntil = val
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read release: %w", err)
	}
	return rel, nil
}

// ParseDate reads a Release's Date or Valid-Until (RFC 2822, as apt
// reads them: "Sat, 07 Dec 2024 08:10:37 UTC", a numeric zone too).
func ParseDate(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
		if t, err := time.Parse(layout, strings.TrimSpace(s)); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("date %q is not an RFC 2822 date", clip(s))
}

func parseChecksumLine(line string) (FileEntry, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return FileEntry{}, fmt.Errorf("checksum line %q: want \"<sha256> <size> <path>\"", clip(line))
	}
	if !isSHA256Hex(fields[0]) {
		return FileEntry{}, fmt.Errorf("checksum line %q: %q is not a SHA256 hex digest", clip(line), clip(fields[0]))
	}
	size, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || size < 0 {
		return FileEntry{}, fmt.Errorf("checksum line %q: size %q is not a non-negative integer", clip(line), clip(fields[1]))
	}
	if err := checkRelPath(fields[2]); err != nil {
		return FileEntry{}, fmt.Errorf("checksum line %q: %w", clip(line), err)
	}
	return FileEntry{Path: fields[2], Size: size, SHA256: strings.ToLower(fields[0])}, nil
}

// checkRelPath refuses paths that could climb out of the repository.
func checkRelPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == ".." || strings.HasPrefix(p, "../") {
		return fmt.Errorf("path %q is not a clean relative path", clip(p))
	}
	return nil
}

func newLineScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	sc.Split(scanLinesCR)
	return sc
}

// scanLinesCR is bufio.ScanLines, which already drops a trailing \r.
func scanLinesCR(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, bytes.TrimSuffix(data[:i], []byte{'\r'}), nil
	}
	if atEOF && len(data) > 0 {
		return len(data), bytes.TrimSuffix(data, []byte{'\r'}), nil
	}
	return 0, nil, nil
}

// clip shortens attacker-sized text before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
