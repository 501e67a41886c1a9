package proxy

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// Range requests, one reading for every path: a hit (http.ServeContent,
// given the Range this reading leaves), a fill as it grows, a full
// disk's pass-through. A Range header is answered
//
//   - with the whole file (200), the header ignored as RFC 9110 §14.2
//     allows, when it is malformed, names more than maxRanges ranges, or
//     ranges that overlap: nginx (max_ranges) and Apache (MaxRanges,
//     MaxRangeOverlaps) answer the whole file beyond their bounds too,
//     and net/http and nginx once the ranges add up to more than the
//     file. Each part of a multipart answer costs some 100 bytes of
//     headers for 4 bytes of request ("0-0,"): 15,000 ranges of byte 0
//     were a 2.3 MB answer to a 60 KB header, and each overlapping one is
//     the same bytes again. No client warren serves asks for
//     overlapping ranges;
//   - with 416 and "Content-Range: bytes */size" when no range is within
//     the file, as net/http answers; a range that starts past the end is
//     dropped and the others answered, as net/http does;
//   - with the ranges, 206, otherwise.

// maxRanges bounds the ranges of one request: librepo asks for at most
// 256 chunks of a zchunk file a request (a mirror's max_ranges), fewer if
// a server refuses that many.
const maxRanges = 256

// byteRange is one range of a Range header, resolved against a size.
type byteRange struct{ start, length int64 }

// rangeVerdict is how a request with a Range header is answered.
type rangeVerdict int

const (
	rangeWhole         rangeVerdict = iota // 200, the whole file
	rangeParts                             // 206, the ranges
	rangeUnsatisfiable                     // 416
)

// parseRanges reads a Range header for a file of size bytes (-1:
// unknown, which is answered whole): the ranges, in the order asked,
// and how to answer them.
func parseRanges(h string, size int64) ([]byteRange, rangeVerdict) {
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || size <= 0 {
		return nil, rangeWhole
	}
	parts := strings.Split(spec, ",")
	if len(parts) > maxRanges {
		return nil, rangeWhole
	}
	out := make([]byteRange, 0, len(parts))
	asked := 0
	for _, part := range parts {
		part = strings.TrimSpace(part)
		if part == "" {
			continue // an empty list element, as RFC 9110's #rule allows
		}
		asked++
		rg, ok, valid := oneRange(part, size)
		if !valid {
			return nil, rangeWhole
		}
		if ok {
			out = append(out, rg)
		}
	}
	switch {
	case asked == 0:
		return nil, rangeWhole
	case len(out) == 0:
		return nil, rangeUnsatisfiable
	}
	sorted := slices.SortedFunc(slices.Values(out), func(a, b byteRange) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(sorted); i++ {
		if sorted[i].start < sorted[i-1].start+sorted[i-1].length {
			return nil, rangeWhole
		}
	}
	return out, rangeParts
}

// oneRange resolves "a-b", "a-" or "-n" against size: valid false for
// one that is malformed, ok false for one the file cannot satisfy (it
// starts past the end, or "-0").
func oneRange(spec string, size int64) (rg byteRange, ok, valid bool) {
	a, b, found := strings.Cut(spec, "-")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !found || a == "" && b == "" {
		return byteRange{}, false, false
	}
	if a == "" {
		n, err := strconv.ParseInt(b, 10, 64)
		if err != nil || n < 0 || b[0] == '+' {
			return byteRange{}, false, false
		}
		n = min(n, size)
		return byteRange{size - n, n}, n > 0, true
	}
	start, err := strconv.ParseInt(a, 10, 64)
	if err != nil || start < 0 || a[0] == '+' {
		return byteRange{}, false, false
	}
	end := size - 1
	if b != "" {
		e, err := strconv.ParseInt(b, 10, 64)
		if err != nil || e < start || b[0] == '+' {
			return byteRange{}, false, false
		}
		end = min(e, size-1)
	}
	if start >= size {
		return byteRange{}, false, true
	}
	return byteRange{start, end - start + 1}, true, true
}

// rangeHeader is the Range header that makes http.ServeContent answer as
// parseRanges decides: "" for the whole file.
func rangeHeader(ranges []byteRange, verdict rangeVerdict, size int64) string {
	switch verdict {
	case rangeParts:
		var b strings.Builder
		b.WriteString("bytes=")
		for i, rg := range ranges {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d-%d", rg.start, rg.start+rg.length-1)
		}
		return b.String()
	case rangeUnsatisfiable:
		return fmt.Sprintf("bytes=%d-", size) // past the end: net/http's 416
	}
	return ""
}

// withRanges is r with its Range header as parseRanges reads it for a
// file of size bytes, for http.ServeContent (which would take any number
// of ranges, overlapping ones too); r itself when it has none.
func withRanges(r *http.Request, size int64) *http.Request {
	h := r.Header.Get("Range")
	if h == "" {
		return r
	}
	ranges, verdict := parseRanges(h, size)
	want := rangeHeader(ranges, verdict, size)
	if want == h {
		return r
	}
	r2 := r.Clone(r.Context())
	if want == "" {
		r2.Header.Del("Range")
	} else {
		r2.Header.Set("Range", want)
	}
	return r2
}

// notSatisfiable answers 416 for a file of size bytes, as net/http does.
func notSatisfiable(w http.ResponseWriter, size int64) {
	w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", size))
	http.Error(w, "invalid range: failed to overlap", http.StatusRequestedRangeNotSatisfiable)
}
