package debian_test

import (
	"fmt"
	"strings"

	"github.com/warren-cache/warren/debian"
)

// Keeping the newest of each name while streaming Packages, as a preload
// resolver does. Byte order gets each of these backwards: bookworm's
// librte-graph23 and its update, 1.9 and 1.10, and an epoch, which
// outranks everything after it.
func ExampleCompareVersions() {
	const sha = "0000000000000000000000000000000000000000000000000000000000000000"
	index := ""
	for _, nv := range [][2]string{
		{"librte-graph23", "22.11.11-0+deb12u1"},
		{"librte-graph23", "22.11.7-1~deb12u1"},
		{"hello", "1.9-1"},
		{"hello", "1.10-1"},
		{"tool", "2.0-1"},
		{"tool", "1:1.0-1"},
	} {
		index += fmt.Sprintf("Package: %s\nVersion: %s\nFilename: %s_%s.deb\nSize: 1\nSHA256: %s\n\n", nv[0], nv[1], nv[0], nv[1], sha)
	}
	newest := map[string]debian.Package{}
	var names []string
	err := debian.ParsePackages(strings.NewReader(index), func(p debian.Package) error {
		old, ok := newest[p.Name]
		if !ok {
			names = append(names, p.Name)
		}
		if !ok || debian.CompareVersions(p.Version, old.Version) > 0 {
			newest[p.Name] = p
		}
		return nil
	})
	if err != nil {
		fmt.Println(err)
	}
	for _, name := range names {
		fmt.Println(name, newest[name].Version)
	}
	// Output:
	// librte-graph23 22.11.11-0+deb12u1
	// hello 1.10-1
	// tool 1:1.0-1
}
