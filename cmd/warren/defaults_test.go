package main

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// settingKeys lists every YAML key of the config, "a.b" for nested ones.
func settingKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(duration{}) {
			keys = append(keys, settingKeys(f.Type, prefix+tag+".")...)
			continue
		}
		keys = append(keys, prefix+tag)
	}
	return keys
}

// Each default is written once, in defaults(): the flags' help takes it
// from there (defaultOf), and the shipped warren.yaml, which says it shows
// every key with its default, and the README's settings table must agree.
func TestDefaultsAgree(t *testing.T) {
	shipped, err := os.ReadFile("../../packaging/warren.yaml")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	keys := settingKeys(reflect.TypeOf(config{}), "")
	if len(keys) < 30 {
		t.Fatalf("found only %d settings: the walk is broken", len(keys))
	}
	for _, key := range keys {
		leaf := key[strings.LastIndex(key, ".")+1:]
		def := defaultOf(key)
		// warren.yaml: "# key: value   # comment", commented out.
		m := regexp.MustCompile(`(?m)^#\s+` + regexp.QuoteMeta(leaf) + `:[ \t]*([^#\n]*)`).FindSubmatch(shipped)
		if m == nil {
			t.Errorf("packaging/warren.yaml does not show %s", key)
		} else if got := strings.Trim(strings.TrimSpace(string(m[1])), `"[]`); def != "" && got != def {
			t.Errorf("packaging/warren.yaml shows %s: %q, the default is %q", key, got, def)
		}
		// README: a row of the settings table naming the key and its default.
		row := regexp.MustCompile("(?m)^\\| [^\\n]*`" + regexp.QuoteMeta(key) + "`[^\\n]*$").Find(readme)
		if row == nil {
			t.Errorf("the README's settings table has no row for %s", key)
		} else if def != "" && !strings.Contains(string(row), "`"+def+"`") {
			t.Errorf("the README's row for %s does not give its default `%s`: %s", key, def, row)
		}
	}
}

// Every setting the shipped warren.yaml shows can be uncommented as it is
// shown: "# https_intercept: auto" once failed, being a scalar where the
// file's type wanted a list.
func TestShippedConfigUncomments(t *testing.T) {
	shipped, err := os.ReadFile("../../packaging/warren.yaml")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(shipped), "\n")
	key := regexp.MustCompile(`^# ([a-z_]+):`)
	n := 0
	for i, l := range lines {
		m := key.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		// The setting's line, and the indented lines of a block under it.
		doc := strings.TrimPrefix(l, "# ")
		for _, more := range lines[i+1:] {
			if !strings.HasPrefix(more, "#   ") {
				break
			}
			doc += "\n" + strings.TrimPrefix(more, "# ")
		}
		cfg := defaults()
		if err := decodeYAML([]byte(doc+"\n"), &cfg); err != nil {
			t.Errorf("uncommented, the shipped %s does not load: %v\n%s", m[1], err, doc)
		}
		n++
	}
	if n < 30 {
		t.Fatalf("found only %d settings in the shipped warren.yaml: the walk is broken", n)
	}
}
