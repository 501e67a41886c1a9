package proxy

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
)

// The same Range header gets the same answer on a miss (the fill as it
// grows) and on a hit (http.ServeContent): the whole file when the
// ranges are too many, overlap or are malformed; 416 when none is within
// the file; the ranges within it otherwise. (Before, a hit took any
// number of ranges, 15,000 of byte 0 a 2.3 MB answer to a 60 KB header,
// a miss up to 1,024 overlapping ones, and a range past the end was 416
// on a hit and the whole file on a miss.)
func TestRangesHitAndMissAgree(t *testing.T) {
	up := newUpstream(t, 100000)
	size := len(up.deb)
	spaced := func(n int) string {
		var rs []string
		for i := range n {
			rs = append(rs, fmt.Sprintf("%d-%d", i*300, i*300+4))
		}
		return "bytes=" + strings.Join(rs, ",")
	}
	type part struct{ start, end int } // inclusive
	for _, tc := range []struct {
		name   string
		rng    string
		status int
		parts  []part // 206: what comes back
	}{
		{"one range", "bytes=0-9", 206, []part{{0, 9}}},
		{"two ranges, not in order", "bytes=50-59,0-9", 206, []part{{50, 59}, {0, 9}}},
		{"a suffix", "bytes=-10", 206, []part{{size - 10, size - 1}}},
		{"librepo's most", spaced(maxRanges), 206, nil},
		{"one range more than librepo's most", spaced(maxRanges + 1), 200, nil},
		{"1024 times byte 0", "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", 1024), ","), 200, nil},
		{"two that overlap", "bytes=0-9,5-14", 200, nil},
		{"one inside another", "bytes=0-99,10-19", 200, nil},
		{"adjacent ones", "bytes=0-9,10-19", 206, []part{{0, 9}, {10, 19}}},
		{"past the end", fmt.Sprintf("bytes=%d-", size), 416, nil},
		{"a zero suffix", "bytes=-0", 416, nil},
		{"one within, one past the end", fmt.Sprintf("bytes=0-9,%d-%d", size+10, size+20), 206, []part{{0, 9}}},
		{"malformed", "bytes=abc", 200, nil},
		{"backwards", "bytes=9-0", 200, nil},
		{"another unit", "items=0-9", 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, up)
			h.learn()
			for _, warm := range []bool{false, true} {
				resp, body := h.mustGet(up.debURL, tc.status, "Range", tc.rng)
				what := map[bool]string{false: "miss", true: "hit"}[warm]
				if want := map[bool]string{false: "MISS", true: "HIT"}[warm]; !strings.HasPrefix(resp.Header.Get("X-Cache"), want) {
					t.Fatalf("%s: X-Cache %q", what, resp.Header.Get("X-Cache"))
				}
				switch tc.status {
				case 200:
					if !bytes.Equal(body, up.deb) {
						t.Fatalf("%s: 200 with %d bytes, want the whole file", what, len(body))
					}
				case 416:
					if got := resp.Header.Get("Content-Range"); got != fmt.Sprintf("bytes */%d", size) {
						t.Fatalf("%s: 416 with Content-Range %q", what, got)
					}
				case 206:
					got := readParts(t, resp, body)
					want := tc.parts
					if want == nil {
						want = make([]part, 0, maxRanges)
						for i := range maxRanges {
							want = append(want, part{i * 300, i*300 + 4})
						}
					}
					if len(got) != len(want) {
						t.Fatalf("%s: %d parts, want %d", what, len(got), len(want))
					}
					for i, p := range want {
						if got[i].cr != fmt.Sprintf("bytes %d-%d/%d", p.start, p.end, size) || !bytes.Equal(got[i].body, up.deb[p.start:p.end+1]) {
							t.Fatalf("%s: part %d is %q with %d bytes, want %d-%d", what, i, got[i].cr, len(got[i].body), p.start, p.end)
						}
					}
				}
				h.settle()
			}
		})
	}
}

type gotPart struct {
	cr   string
	body []byte
}

// readParts reads a 206: its one range, or its multipart/byteranges.
func readParts(t *testing.T, resp *http.Response, body []byte) []gotPart {
	t.Helper()
	mt, params, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt != "multipart/byteranges" {
		return []gotPart{{resp.Header.Get("Content-Range"), body}}
	}
	var out []gotPart
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("part %d: %v", len(out), err)
		}
		b, _ := io.ReadAll(p)
		out = append(out, gotPart{p.Header.Get("Content-Range"), b})
	}
}

func TestParseRanges(t *testing.T) {
	for _, tc := range []struct {
		h       string
		size    int64
		verdict rangeVerdict
		ranges  []byteRange
	}{
		{"", 100, rangeWhole, nil},
		{"bytes=0-9", -1, rangeWhole, nil},
		{"bytes=0-9", 0, rangeWhole, nil},
		{"bytes=0-9", 100, rangeParts, []byteRange{{0, 10}}},
		{"bytes= 0-9 , ,20-", 100, rangeParts, []byteRange{{0, 10}, {20, 80}}},
		{"bytes=90-200", 100, rangeParts, []byteRange{{90, 10}}},
		{"bytes=-200", 100, rangeParts, []byteRange{{0, 100}}},
		{"bytes=,", 100, rangeWhole, nil},
		{"bytes=+1-2", 100, rangeWhole, nil},
		{"bytes=1-+2", 100, rangeWhole, nil},
		{"bytes=--1", 100, rangeWhole, nil},
		{"bytes=-", 100, rangeWhole, nil},
		{"bytes=100-,-0", 100, rangeUnsatisfiable, nil},
		{"bytes=0-0,0-0", 100, rangeWhole, nil},
	} {
		got, verdict := parseRanges(tc.h, tc.size)
		if verdict != tc.verdict || fmt.Sprint(got) != fmt.Sprint(tc.ranges) {
			t.Errorf("parseRanges(%q, %d) = %v %v, want %v %v", tc.h, tc.size, got, verdict, tc.ranges, tc.verdict)
		}
	}
}
