package proxy

import (
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"path"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// maxIndexBytes bounds a decompressed index. Debian's largest Packages file
// and Fedora's largest primary.xml are well under 1 GiB; more than this is
// a decompression bomb, not metadata.
const maxIndexBytes = 1 << 30

// errTooLarge is returned when decompressed data passes its limit.
var errTooLarge = errors.New("decompressed data exceeds the limit")

// decompress wraps r according to the compression the file name's extension
// says (.gz, .xz, .bz2, .zst or none); reading more than maxBytes of
// decompressed data fails with errTooLarge.
func decompress(name string, r io.Reader, maxBytes int64) (io.ReadCloser, error) {
	zr, err := decompressor(name, r)
	if err != nil {
		return nil, err
	}
	return &limitedReadCloser{rc: zr, left: maxBytes, name: name}, nil
}

type limitedReadCloser struct {
	rc   io.ReadCloser
	left int64
	name string
}

func (l *limitedReadCloser) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One more byte tells a file of exactly the limit from a larger one.
		var one [1]byte
		n, err := l.rc.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("%s: %w", l.name, errTooLarge)
		}
		return 0, err
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.rc.Read(p)
	l.left -= int64(n)
	return n, err
}

func (l *limitedReadCloser) Close() error { return l.rc.Close() }

func decompressor(name string, r io.Reader) (io.ReadCloser, error) {
	switch path.Ext(name) {
	case ".gz":
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("open gzip stream of %s: %w", name, err)
		}
		return zr, nil
	case ".xz":
		zr, err := xz.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("open xz stream of %s: %w", name, err)
		}
		return io.NopCloser(zr), nil
	case ".bz2":
		return io.NopCloser(bzip2.NewReader(r)), nil
	case ".zst":
		// A hostile frame header must not make us allocate a huge window.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(32<<20), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, fmt.Errorf("open zstd stream of %s: %w", name, err)
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(r), nil
	}
}
