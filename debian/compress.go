package debian

import (
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

var compressions = []string{".gz", ".xz", ".bz2", ".zst"}

func splitCompression(base string) (name, ext string) {
	for _, ext := range compressions {
		if strings.HasSuffix(base, ext) {
			return strings.TrimSuffix(base, ext), ext
		}
	}
	return base, ""
}

// MaxIndexBytes bounds a decompressed index. Debian's largest Packages file
// is under 100 MB; more than this is a decompression bomb, not metadata.
const MaxIndexBytes = 1 << 30

// ErrTooLarge is returned when decompressed data passes its limit.
var ErrTooLarge = errors.New("decompressed data exceeds the limit")

// Decompress wraps r according to the compression the file name's extension
// says (.gz, .xz, .bz2, .zst or none); reading more than maxBytes of
// decompressed data fails with ErrTooLarge.
func Decompress(name string, r io.Reader, maxBytes int64) (io.ReadCloser, error) {
	zr, err := decompress(name, r)
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
			return 0, fmt.Errorf("%s: %w", l.name, ErrTooLarge)
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

func decompress(name string, r io.Reader) (io.ReadCloser, error) {
	_, ext := splitCompression(name)
	switch ext {
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
