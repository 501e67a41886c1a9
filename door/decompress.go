package door

import (
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"

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

// decoders opens compressed metadata for a learn. xz is what most of it is
// (Debian's Packages.xz, Fedora's primary.xml.xz) and the slowest part of a
// learn: Go's decoders run at half the speed of the system's, so the
// system's xz is used when it is installed (the packages depend on it), in
// a child process capped in memory, and the Go decoder otherwise.
type decoders struct {
	xz string // path of the xz binary; "" for the Go decoder
}

// xzMemLimit caps the xz child's memory: a hostile stream cannot make it
// allocate a huge dictionary (Debian's indexes need 8 MiB).
const xzMemLimit = "256MiB"

func findDecoders() decoders {
	p, err := exec.LookPath("xz")
	if err != nil {
		return decoders{}
	}
	return decoders{xz: p}
}

// open wraps r (a stored blob) as decompress does, with the system's xz for
// .xz when there is one. Close ends the child process.
func (d decoders) open(ctx context.Context, name string, r io.Reader, maxBytes int64) (io.ReadCloser, error) {
	f, isFile := r.(*os.File)
	if path.Ext(name) != ".xz" || d.xz == "" || !isFile {
		return decompress(name, bufio.NewReaderSize(r, 256<<10), maxBytes)
	}
	cmd := exec.CommandContext(ctx, d.xz, "--decompress", "--stdout", "--quiet", "--memlimit="+xzMemLimit)
	cmd.Stdin = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("decode %s with %s: %w", name, d.xz, err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("decode %s with %s: %w", name, d.xz, err)
	}
	x := &xzProcess{cmd: cmd, out: bufio.NewReaderSize(out, 256<<10), stderr: &stderr, name: name}
	return &limitedReadCloser{rc: x, left: maxBytes, name: name}, nil
}

// xzProcess is the xz child: its output, and its verdict at the end.
type xzProcess struct {
	cmd    *exec.Cmd
	out    io.Reader
	stderr *bytes.Buffer
	name   string
	done   bool
}

func (x *xzProcess) Read(p []byte) (int, error) {
	n, err := x.out.Read(p)
	if errors.Is(err, io.EOF) && !x.done {
		// The output ended: the stream is whole only if xz says so.
		x.done = true
		if werr := x.cmd.Wait(); werr != nil {
			return n, fmt.Errorf("open xz stream of %s: %s: %w", x.name, strings.TrimSpace(x.stderr.String()), werr)
		}
	}
	return n, err
}

// Close stops xz if it is still running (a learn that ended early).
func (x *xzProcess) Close() error {
	if !x.done {
		x.done = true
		_ = x.cmd.Process.Kill()
		_ = x.cmd.Wait()
	}
	return nil
}
