package repohosts

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParseAuthConf(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []AuthEntry
	}{
		{"one line", "machine example.org login apt password debian\n",
			[]AuthEntry{{Machine: "example.org", Host: "example.org", Login: "apt", Password: true}}},
		{"one field per line", "machine\nexample.org\nlogin\napt\npassword\ndebian\n",
			[]AuthEntry{{Machine: "example.org", Host: "example.org", Login: "apt", Password: true}}},
		{"the man page's three lines", "machine example.org\nlogin apt\npassword debian",
			[]AuthEntry{{Machine: "example.org", Host: "example.org", Login: "apt", Password: true}}},
		{"password before login", "machine example.com/bar password pass2 login user2\n",
			[]AuthEntry{{Machine: "example.com/bar", Host: "example.com", Path: "/bar", Login: "user2", Password: true}}},
		{"a password alone", "machine example.com password only\n",
			[]AuthEntry{{Machine: "example.com", Host: "example.com", Password: true}}},
		{"a port", "machine example.org:8080 login a password b\n",
			[]AuthEntry{{Machine: "example.org:8080", Host: "example.org", Port: "8080", Login: "a", Password: true}}},
		{"https and a path", "machine https://Example.ORG/debian login a password b\n",
			[]AuthEntry{{Machine: "https://Example.ORG/debian", Scheme: "https", Host: "example.org", Path: "/debian", Login: "a", Password: true}}},
		{"http, a port and a path", "machine http://plain.example:8080/deb/ login a password b\n",
			[]AuthEntry{{Machine: "http://plain.example:8080/deb/", Scheme: "http", Host: "plain.example", Port: "8080", Path: "/deb/", Login: "a", Password: true}}},
		{"an IPv6 address", "machine [FD00::1]:8443/repo login a\nmachine fd00::2 login b\n", []AuthEntry{
			{Machine: "[FD00::1]:8443/repo", Host: "fd00::1", Port: "8443", Path: "/repo", Login: "a"},
			{Machine: "fd00::2", Host: "fd00::2", Login: "b"}}},
		{"tabs, blanks and CRLF", "machine\t\texample.org  \r\n\r\n\tlogin \t apt\r\npassword\tx\r\r\n",
			[]AuthEntry{{Machine: "example.org", Host: "example.org", Login: "apt", Password: true}}},
		{"unknown tokens are ignored", "machine example.com/foo login user1 unknown token password pass1\n\t\tunknown token\n",
			[]AuthEntry{{Machine: "example.com/foo", Host: "example.com", Path: "/foo", Login: "user1", Password: true}}},
		{"several entries", "machine a.example login a password x\n\nmachine b.example\nlogin b\npassword y\n", []AuthEntry{
			{Machine: "a.example", Host: "a.example", Login: "a", Password: true},
			{Machine: "b.example", Host: "b.example", Login: "b", Password: true}}},
		// apt has no comments: "#" is an unknown token, and the
		// "machine" after it starts an entry apt uses.
		{"a # line is no comment to apt", "# a note with a login in it\n# machine old.example login me password x\nmachine new.example login a\n", []AuthEntry{
			{Machine: "old.example", Host: "old.example", Login: "me", Password: true},
			{Machine: "new.example", Host: "new.example", Login: "a"}}},
		{"login and password before any machine", "login x password y machine a.example\n",
			[]AuthEntry{{Machine: "a.example", Host: "a.example"}}},
		{"a login that is the word machine", "machine a.example login machine b.example password p\n", []AuthEntry{
			{Machine: "a.example", Host: "a.example", Login: "machine"},
			{Machine: "b.example", Host: "b.example", Password: true}}},
		{"a host named machine", "machine machine login a\n",
			[]AuthEntry{{Machine: "machine", Host: "machine", Login: "a"}}},
		{"machine at the end", "machine a.example login x password y\nmachine",
			[]AuthEntry{{Machine: "a.example", Host: "a.example", Login: "x", Password: true}}},
		{"no host", "machine https:// login x\nmachine /debian login y\nmachine :80\n", nil},
		{"empty", "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAuthConf(strings.NewReader(tc.in))
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ParseAuthConf(%q) = %+v, %v\nwant %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

// A whole file in every form apt_auth.conf(5) allows.
func TestParseAuthConfFile(t *testing.T) {
	f, err := os.Open("testdata/auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ParseAuthConf(f)
	if err != nil {
		t.Fatal(err)
	}
	var entries []string
	for _, e := range got {
		entries = append(entries, fmt.Sprintf("%s|%s|%s|%s|%s|%t", e.Scheme, e.Host, e.Port, e.Path, e.Login, e.Password))
	}
	want := []string{
		"|vendor.example|||acme|true", "|packages.example|8443||ci|true", "|repo.example|||deploy|true",
		"https|private.example||/debian|u1|true", "http|plain.example||/apt|u2|true", "socks5h|proxy.example|||u3|true",
		"|fd00::5|8080|/deb|u4|true", "|mirror.example|||u5|true",
	}
	if !reflect.DeepEqual(entries, want) {
		t.Fatalf("entries\n%q\nwant\n%q", entries, want)
	}
}

// A file larger than warren reads is an error, never a partial list: the
// part not read could hold an entry.
func TestParseAuthConfBounded(t *testing.T) {
	line := "machine a.example login a password b\n"
	fits := strings.Repeat(line, maxFile/len(line))
	if _, err := ParseAuthConf(strings.NewReader(fits)); err != nil {
		t.Fatalf("%d bytes: %v", len(fits), err)
	}
	big := fits + strings.Repeat("x", maxFile-len(fits)+1)
	if _, err := ParseAuthConf(strings.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d bytes: %v, want ErrTooLarge", len(big), err)
	}
	if _, err := ParseAuthConf(strings.NewReader("machine " + strings.Repeat("h", maxFile))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("one token too large: %v, want ErrTooLarge", err)
	}
}

// The fuzzer checks the promise that matters to warren: every token apt
// may read as a machine (the token after a "machine" keyword, found here
// by a plain reading of apt's tokens) is an entry, whatever else the file
// holds, and every entry names a host.
func FuzzParseAuthConf(f *testing.F) {
	f.Add([]byte("machine example.org login apt password debian\n"))
	f.Add([]byte("machine https://example.org:8443/debian\nlogin\napt\npassword\ndebian\r\n"))
	f.Add([]byte("# machine old.example\nmachine a login machine b password machine\n"))
	if b, err := os.ReadFile("testdata/auth.conf"); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := ParseAuthConf(strings.NewReader(string(data)))
		if err != nil {
			t.Fatalf("a small file: %v", err)
		}
		hosts := map[string]bool{}
		for _, e := range got {
			if e.Host == "" || e.Host != strings.ToLower(e.Host) || strings.ContainsAny(e.Host, "/ \t\n") {
				t.Fatalf("entry %+v", e)
			}
			hosts[e.Host] = true
		}
		var toks []string
		for _, line := range strings.Split(string(data), "\n") {
			toks = append(toks, strings.FieldsFunc(strings.TrimRight(line, "\r"), func(r rune) bool { return r == ' ' || r == '\t' })...)
		}
		for i := 0; i+1 < len(toks); i++ {
			if toks[i] != "machine" {
				continue
			}
			if h := authEntry(toks[i+1]).Host; h != "" && !hosts[h] {
				t.Fatalf("machine %q (host %q) was not found in %q: %+v", toks[i+1], h, data, got)
			}
			i++
		}
	})
}
