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
		"etc/yum.repos.d/docker.repo":               "[docker]\nname=Docker\nbaseurl=https://download.docker.com/linux/centos/9/x86_64/stable\n\n[vendor]\nbaseurl=https://rpm.vendor.example/el9\nsslclientcert=/etc/pki/vendor.pem\n",
		"etc/yum.repos.d/alma.repo":                 "[baseos]\nmirrorlist=https://mirrors.almalinux.org/mirrorlist/9/baseos\nbaseurl=http://plain.example/el9\n",
	}
	for p, body := range files {
		full := filepath.Join(root, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		os.WriteFile(full, []byte(body), 0o644)
	}
	f := Scan(root)
	if got := strings.Join(f.HTTPS, " "); got != "cli.github.com deb.nodesource.com download.docker.com inline.example mirrors.almalinux.org private.example rpm.vendor.example" {
		t.Fatalf("https hosts: %s", got)
	}
	if got := strings.Join(f.Credentials, " "); got != "inline.example private.example rpm.vendor.example" {
		t.Fatalf("hosts with credentials: %s", got)
	}
	if got := strings.Join(f.Intercept(), " "); got != "cli.github.com deb.nodesource.com download.docker.com mirrors.almalinux.org" {
		t.Fatalf("to intercept: %s", got)
	}
	if f := Scan(filepath.Join(root, "nothing-here")); len(f.HTTPS) != 0 {
		t.Fatalf("an empty root: %v", f)
	}
}
