package debian

import (
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// ParseSources streams a (decompressed) Sources file and calls fn for every
// file a source package lists under Checksums-Sha256 (the .dsc, tarballs,
// signatures), with Filename joined to the paragraph's Directory. Paragraphs
// without Checksums-Sha256 (very old archives) are skipped. A malformed
// paragraph stops the parse with an error naming its line; fn's error stops
// it too and is returned as is.
func ParseSources(r io.Reader, fn func(Package) error) error {
	var (
		dir    string
		files  []Package // names relative to dir until the paragraph ends
		inSums bool      // reading Checksums-Sha256's continuation lines
	)
	return paragraphs{
		what: "sources",
		field: func(lineNo int, key, val string) error {
			inSums = false
			switch key {
			case "Directory":
				if err := checkRelPath(val); err != nil {
					return fmt.Errorf("sources line %d: Directory: %w", lineNo, err)
				}
				dir = val
			case "Checksums-Sha256":
				if val != "" {
					return fmt.Errorf("sources line %d: Checksums-Sha256 has a value on its own line; it must list files on the lines below", lineNo)
				}
				inSums = true
			}
			return nil
		},
		cont: func(lineNo int, line string) error {
			if !inSums {
				return nil // another multi-line field (Files, Package-List, ...)
			}
			f, err := parseSourceFile(line)
			if err != nil {
				return fmt.Errorf("sources line %d: Checksums-Sha256: %w", lineNo, err)
			}
			files = append(files, f)
			return nil
		},
		end: func(startLine int) error {
			defer func() { dir, files, inSums = "", nil, false }()
			if len(files) == 0 {
				return nil
			}
			if dir == "" {
				return fmt.Errorf("sources paragraph at line %d: Checksums-Sha256 but no Directory field", startLine)
			}
			for _, f := range files {
				f.Filename = path.Join(dir, f.Filename)
				if err := fn(f); err != nil {
					return err
				}
			}
			return nil
		},
	}.walk(r)
}

// parseSourceFile reads " <sha256> <size> <name>": a file name only, never
// a path, so a hostile index cannot point outside the package's Directory.
func parseSourceFile(line string) (Package, error) {
	fields := strings.Fields(line)
	if len(fields) != 3 {
		return Package{}, fmt.Errorf("%q is not \"<sha256> <size> <name>\"", clip(strings.TrimSpace(line)))
	}
	if !isSHA256Hex(fields[0]) {
		return Package{}, fmt.Errorf("%q is not a 64-digit hex digest", clip(fields[0]))
	}
	n, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil || n < 0 {
		return Package{}, fmt.Errorf("size %q is not a non-negative integer", clip(fields[1]))
	}
	name := fields[2]
	if strings.Contains(name, "/") || name == "." || name == ".." {
		return Package{}, fmt.Errorf("file name %q is not a plain name", clip(name))
	}
	return Package{Filename: name, Size: n, SHA256: strings.ToLower(fields[0])}, nil
}
