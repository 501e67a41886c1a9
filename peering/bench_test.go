package peering

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkUploadRate serves a 4 MB blob with upload_rate 8 MB/s and reports
// the rate achieved (it should sit at the limit, not above it).
func BenchmarkUploadRate(b *testing.B) {
	body := make([]byte, 4<<20)
	store, d := testBlobTB(b, body)
	const limit = 8 << 20
	bs := NewBlobServer(store, BlobConfig{Slots: 2, UploadRate: limit})
	srv := httptest.NewServer(bs)
	defer srv.Close()
	defer http.DefaultClient.CloseIdleConnections()
	var total int64
	start := time.Now()
	for b.Loop() {
		resp, err := http.Get(srv.URL + BlobPathPrefix + d.Algo + "/" + d.Hex)
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		total += n
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds()/(1<<20), "MiB/s")
	b.ReportMetric(float64(limit)/(1<<20), "MiB/s-limit")
}
