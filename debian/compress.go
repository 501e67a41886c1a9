package debian

import (
	"compress/bzip2"
	"compress/gzip"
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

// Decompress wraps r according to the compression the file name's extension
// says (.gz, .xz, .bz2, .zst or none).
func Decompress(name string, r io.Reader) (io.ReadCloser, error) {
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
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(256<<20))
		if err != nil {
			return nil, fmt.Errorf("open zstd stream of %s: %w", name, err)
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(r), nil
	}
}
