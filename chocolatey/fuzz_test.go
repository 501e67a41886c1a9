package chocolatey

import (
	"bytes"
	"os"
	"testing"
)

func FuzzParseFeed(f *testing.F) {
	for _, name := range []string{"testdata/feed-chocolatey.xml", "testdata/feed-nugetgallery.xml", "testdata/entry.xml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		feed, err := ParseFeed(bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, e := range feed.Entries {
			if !ValidID(e.ID) || !ValidVersion(e.Version) || e.ContentSrc == "" {
				t.Fatalf("accepted a bad entry %+v", e)
			}
		}
	})
}
