package repohosts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestScan(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"etc/apt/sources.list": "# deb https://commented.example/debian stable main\n" +
			"deb http://deb.debian.org/debian bookworm main\n" +
			"deb [arch=amd64 signed-by=/usr/share/keyrings/docker.gpg] https://Download.Docker.com/linux/debian bookworm stable\n",
		"etc/apt/sources.list.d/gh.list":            "deb [signed-by=/x.gpg] https://cli.github.com/packages stable main\n",
		"etc/apt/sources.list.d/nodesource.sources": "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n\nTypes: deb\nURIs: https://private.example/apt https://user:secret@inline.example/apt\nSuites: stable\n",
		"etc/apt/auth.conf.d/private.conf":          "machine private.example/apt login me password secret\n",
		// apt reads every form of auth.conf: one field per line, a port,
		// a scheme, a "#" line (no comment to apt), a part with no
		// extension; it skips a part with another extension.
		"etc/apt/auth.conf":            "machine\nlines.example\nlogin\nme\npassword\nx\n# machine hash.example login me password x\nmachine port.example:8443 login me\n",
		"etc/apt/auth.conf.d/vendor":   "machine https://scheme.example/debian\n\tpassword x login me\n",
		"etc/apt/auth.conf.d/old.save": "machine https://ignored.example login me password x\n",
		"etc/apt/sources.list.d/more.list": "deb https://lines.example/d s m\ndeb https://hash.example/d s m\ndeb https://port.example/d s m\n" +
			"deb https://scheme.example/debian s m\ndeb https://ignored.example/d s m\n",
		"etc/yum.repos.d/docker.repo": "[docker]\nname=Docker\nbaseurl=https://download.docker.com/linux/centos/9/x86_64/stable\n\n[vendor]\nbaseurl=https://rpm.vendor.example/el9\nsslclientcert=/etc/pki/vendor.pem\n",
		"etc/yum.repos.d/alma.repo":   "[baseos]\nmirrorlist=https://mirrors.almalinux.org/mirrorlist/9/baseos\nbaseurl=http://plain.example/el9\n",
		// An empty password after a username takes nothing back.
		"etc/yum.repos.d/login.repo": "[login]\nbaseurl=https://rpm.login.example/el9\nusername=me\npassword=\n",
	}
	for p, body := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(body), 0o644)
	}
	f := Scan(root)
	if got := strings.Join(f.HTTPS, " "); got != "cli.github.com deb.nodesource.com download.docker.com hash.example ignored.example inline.example lines.example mirrors.almalinux.org port.example private.example rpm.login.example rpm.vendor.example scheme.example" {
		t.Fatalf("https hosts: %s", got)
	}
	if got := strings.Join(f.Credentials, " "); got != "hash.example inline.example lines.example port.example private.example rpm.login.example rpm.vendor.example scheme.example" {
		t.Fatalf("hosts with credentials: %s", got)
	}
	if got := strings.Join(f.Intercept(), " "); got != "cli.github.com deb.nodesource.com download.docker.com ignored.example mirrors.almalinux.org" {
		t.Fatalf("to intercept: %s", got)
	}
	if len(f.Unreadable) != 0 {
		t.Fatalf("unreadable: %v", f.Unreadable)
	}
	if f := Scan(filepath.Join(root, "nothing-here")); len(f.HTTPS) != 0 {
		t.Fatalf("an empty root: %v", f)
	}
}

// dnf's repo files' lists and bases, as written: what makes a list of
// mirrors trusted (package door), and which bases no list may take.
func TestScanYumRepos(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "fedora.repo"), []byte("[fedora]\nmetalink=https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch\n#baseurl=http://commented.example/\n"+
		"[local]\nbaseurl=http://a.example/el9/, http://b.example/el9\n\thttp://c.example/el9\nenabled=0\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "alma.repo"), []byte("[baseos]\nmirrorlist = https://mirrors.almalinux.org/mirrorlist/$releasever/baseos\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "old.repo.rpmsave"), []byte("[x]\nmetalink=https://ignored.example/metalink\n"), 0o644)
	got := ScanYumRepos(dir)
	if want := "https://mirrors.almalinux.org/mirrorlist/$releasever/baseos https://mirrors.fedoraproject.org/metalink?repo=fedora-$releasever&arch=$basearch"; strings.Join(got.Lists, " ") != want {
		t.Errorf("lists %q, want %q", got.Lists, want)
	}
	if want := "http://a.example/el9/ http://b.example/el9 http://c.example/el9"; strings.Join(got.BaseURLs, " ") != want {
		t.Errorf("bases %q, want %q", got.BaseURLs, want)
	}
	if len(got.Unreadable) != 0 {
		t.Errorf("unreadable %v", got.Unreadable)
	}
	if got := ScanYumRepos(filepath.Join(dir, "not-there")); len(got.Lists)+len(got.BaseURLs)+len(got.Unreadable) != 0 {
		t.Errorf("no directory: %+v", got)
	}
}
