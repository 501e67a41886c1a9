package chocolatey

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"unicode/utf8"
)

// An install script (tools/chocolateyInstall.ps1) is PowerShell, and
// warren runs none of it: ParseInstallScript reads the little of the
// language that community packages use to name their downloads, and
// nothing else. It follows, in source order:
//
//   - plain assignments of strings, variables, concatenations of them and
//     hashtables ($url = '…', $url64 = "…/$version/…", $packageArgs = @{ … },
//     $packageArgs.url64bit = $url64, $packageArgs['checksum'] = '…');
//   - the calls that download: Install-ChocolateyPackage,
//     Install-ChocolateyZipPackage, Get-ChocolateyWebFile,
//     Install-ChocolateyPowershellCommand, Install-ChocolateyVsixPackage,
//     with named parameters (-Url, -Url64bit or -Url64, -Checksum,
//     -Checksum64, -ChecksumType, -ChecksumType64, -FileType), a splatted
//     hashtable (@packageArgs) or positional arguments, in any mix;
//   - $env:ChocolateyPackageName and $env:ChocolateyPackageVersion, which
//     choco sets from the package (Env).
//
// Anything else (a subexpression, a method call, -f, a branch's
// condition) makes the value it feeds unknown, and a download whose URL
// or checksum is unknown is not learnt: a script it cannot read teaches
// nothing. Branches are not followed: an assignment inside an if counts
// as any other, in source order. Only SHA256 and SHA512 checksums are
// kept: MD5 and SHA1 (choco's default type is MD5) can be forged, and a
// blob's name must not be.

// Limits: real install scripts are a few KB with a handful of downloads,
// and no value longer than a URL. A script could make a value double with
// each line ($a = $a + $a) or splat one big table on every argument: each
// value is bounded, so is the text a parse puts together in all, and so is
// its work (tokens read, table entries bound). What passes a bound is not
// followed: a value too long is unknown, and a parse out of steps stops
// where it is, learning nothing from the call it was reading.
const (
	maxScriptBytes = 256 << 10
	maxInstallers  = 32
	maxVars        = 4096
	maxNesting     = 32
	maxValueBytes  = 8 << 10
	maxBuiltBytes  = 16 * maxScriptBytes
	maxSteps       = 1 << 20
)

// ErrScriptTooLarge refuses a script over maxScriptBytes.
var ErrScriptTooLarge = fmt.Errorf("install script larger than %d bytes", maxScriptBytes)

// Env is what choco tells a script about its package.
type Env struct {
	PackageName    string
	PackageVersion string
}

// Span is where a value's text stands in the script: [Start, End) byte
// offsets of the one string literal it came from.
type Span struct{ Start, End int }

// IsZero says the value did not come from one literal alone.
func (s Span) IsZero() bool { return s.End == 0 }

// Installer is one download a script makes, with the checksum choco checks.
type Installer struct {
	Call         string // the helper, as warren spells it (Install-ChocolateyPackage, ...)
	Arch         string // "32" (-Url), "64" (-Url64bit)
	URL          string
	ChecksumType string // sha256 or sha512
	Checksum     string // lowercase hex
	FileType     string // exe, msi, zip, ... as the call says ("" when it does not)
	// URLSpan is the literal the URL came from (zero when it was built
	// from several): a hub's internalization rewrites it.
	URLSpan Span
}

// Script is what ParseInstallScript found.
type Script struct {
	Installers []Installer
	// Skipped says why downloads were not learnt (an unknown URL, an MD5
	// checksum, ...).
	Skipped []string
}

// ParseInstallScript reads an install script and returns the downloads
// it names with their checksums. It fails only on a script too large or
// not text; what it cannot follow is left out, with the reason in Skipped.
func ParseInstallScript(r io.Reader, env Env) (*Script, error) {
	src, err := io.ReadAll(io.LimitReader(r, maxScriptBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read install script: %w", err)
	}
	if len(src) > maxScriptBytes {
		return nil, ErrScriptTooLarge
	}
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf")) // the BOM Windows editors write
	if !utf8.Valid(src) {
		// UTF-16 scripts exist; none of them has been seen to download.
		return nil, errors.New("install script is not UTF-8 text")
	}
	lx := &lexer{src: string(src)}
	toks := lx.all()
	p := &parser{toks: toks, vars: map[string]value{}, out: &Script{}}
	if env.PackageName != "" {
		p.vars["env:chocolateypackagename"] = value{kind: vString, s: env.PackageName}
	}
	if env.PackageVersion != "" {
		p.vars["env:chocolateypackageversion"] = value{kind: vString, s: env.PackageVersion}
	}
	p.run()
	return p.out, nil
}

// ---- parser ----

type valueKind uint8

const (
	vUnknown valueKind = iota
	vString
	vTable
)

type value struct {
	kind  valueKind
	s     string
	span  Span // vString from one literal
	table map[string]value
}

var unknown = value{}

type parser struct {
	toks  []token
	i     int
	vars  map[string]value
	out   *Script
	depth int
	// built counts the bytes of the strings put together so far, steps
	// the tokens read and table entries bound (the limits above).
	built, steps int
	// stopped: out of steps, the parse reads nothing more (every token
	// is the end).
	stopped bool
	// tooLong: a value was past maxValueBytes (said once in Skipped).
	tooLong bool
}

var eof = token{kind: tEOF}

func (p *parser) peek() token {
	if p.stopped {
		return eof
	}
	return p.toks[p.i]
}

func (p *parser) advance() token {
	t := p.peek()
	if t.kind != tEOF {
		p.i++
		p.step(1)
	}
	return t
}

// step counts n units of work, and stops the parse past maxSteps.
func (p *parser) step(n int) bool {
	p.steps += n
	if p.steps > maxSteps && !p.stopped {
		p.stopped = true
		p.skip(fmt.Sprintf("the script takes more than %d steps to read: the rest of it is not learnt", maxSteps))
	}
	return !p.stopped
}

// join puts strings together into one value: unknown when it would be
// longer than maxValueBytes, or the parse has put too much together.
func (p *parser) join(parts ...string) (string, bool) {
	n := 0
	for _, s := range parts {
		n += len(s)
	}
	if n > maxValueBytes {
		if !p.tooLong {
			p.tooLong = true
			p.skip(fmt.Sprintf("a value longer than %d bytes is not followed", maxValueBytes))
		}
		return "", false
	}
	if p.built += n; p.built > maxBuiltBytes {
		if !p.tooLong {
			p.tooLong = true
			p.skip(fmt.Sprintf("the script puts more than %d bytes of text together: the rest of its values are not followed", maxBuiltBytes))
		}
		return "", false
	}
	return strings.Join(parts, ""), true
}

// concat is a + b: a string when both are, and not too long.
func (p *parser) concat(a, b value) value {
	if a.kind != vString || b.kind != vString {
		return unknown
	}
	s, ok := p.join(a.s, b.s)
	if !ok {
		return unknown
	}
	return value{kind: vString, s: s}
}

func (p *parser) isPunct(text string) bool {
	t := p.peek()
	return t.kind == tPunct && t.text == text
}

// atEnd says whether the statement ends here (not consumed but for tEnd).
func (p *parser) atEnd() bool {
	t := p.peek()
	return t.kind == tEOF || t.kind == tEnd || t.kind == tPunct && (t.text == "}" || t.text == ")" || t.text == "|")
}

func (p *parser) run() {
	for p.peek().kind != tEOF {
		p.statement()
	}
}

// statement reads one statement, or steps over one token it does not
// know (a block's brace, a keyword, an expression's piece).
func (p *parser) statement() {
	t := p.peek()
	switch {
	case t.kind == tVar:
		save := p.i
		if p.assignment() {
			return
		}
		p.i = save + 1
	case t.kind == tWord:
		if h, ok := helpers[strings.ToLower(t.text)]; ok {
			p.advance()
			p.call(h)
			return
		}
		p.advance()
	default:
		p.advance()
	}
}

// assignment reads $name = …, $name.key = … or $name['key'] = …; false
// when the tokens at the cursor are no assignment.
func (p *parser) assignment() bool {
	name := p.advance().text
	var path []string
	for {
		switch {
		case p.peek().kind == tMember:
			path = append(path, p.advance().text)
			continue
		case p.isPunct("["):
			p.advance()
			k := p.peek()
			if k.kind != tString {
				return false
			}
			p.advance()
			key, ok := p.evalString(k.parts)
			if !ok || !p.isPunct("]") {
				return false
			}
			p.advance()
			path = append(path, strings.ToLower(key))
			continue
		}
		break
	}
	if !p.isPunct("=") {
		return false
	}
	p.advance()
	v := p.expression()
	if len(path) == 0 {
		p.setVar(name, v)
		return true
	}
	// Into a hashtable held by the variable (one level: what scripts do).
	tbl, ok := p.vars[name]
	if !ok || tbl.kind != vTable || len(path) != 1 {
		return true
	}
	if len(tbl.table) < maxVars {
		tbl.table[path[0]] = v
	}
	return true
}

func (p *parser) setVar(name string, v value) {
	if _, exists := p.vars[name]; exists || len(p.vars) < maxVars {
		p.vars[name] = v
	}
}

// expression reads a value in expression mode up to the statement's end:
// a primary, and strings joined with '+'. Anything else makes it unknown.
func (p *parser) expression() value {
	if t := p.peek(); t.kind == tWord {
		if h, ok := helpers[strings.ToLower(t.text)]; ok {
			p.advance()
			p.call(h) // $r = Install-ChocolateyPackage …
			return unknown
		}
	}
	v := p.primary(false)
	for !p.atEnd() {
		if p.isPunct("+") {
			p.advance()
			v = p.concat(v, p.primary(false))
			continue
		}
		// An operator, a method call, an index: not followed.
		p.skipExpressionRest()
		return unknown
	}
	return v
}

// skipExpressionRest steps to the statement's end, nested brackets whole.
func (p *parser) skipExpressionRest() {
	for !p.atEnd() {
		p.skipOne()
	}
}

// skipOne steps over one token, or one bracketed group whole.
func (p *parser) skipOne() {
	t := p.advance()
	if t.kind != tPunct {
		return
	}
	var closing string
	switch t.text {
	case "(", "@(", "$(":
		closing = ")"
	case "{", "@{":
		closing = "}"
	case "[":
		closing = "]"
	default:
		return
	}
	p.skipTo(closing)
}

// skipTo steps past the closing bracket matching one just read.
func (p *parser) skipTo(closing string) {
	depth := 1
	for p.peek().kind != tEOF {
		t := p.advance()
		if t.kind != tPunct {
			continue
		}
		switch t.text {
		case "(", "@(", "$(", "{", "@{", "[":
			depth++
		case ")", "}", "]":
			depth--
			if depth == 0 {
				return
			}
		}
	}
}

// primary reads one value. In argument mode (a command's arguments) a bare
// word is a string, as PowerShell reads `-FileType exe`.
func (p *parser) primary(argMode bool) value {
	t := p.peek()
	switch t.kind {
	case tString:
		p.advance()
		s, ok := p.evalString(t.parts)
		if !ok {
			return p.members(unknown)
		}
		// The literal stands for the whole value, what it puts in
		// included: rewriting it rewrites the value.
		return p.members(value{kind: vString, s: s, span: t.span})
	case tVar:
		p.advance()
		v, ok := p.vars[t.text]
		if !ok {
			v = unknown
		}
		if v.kind == vString {
			// A variable's value stands where it was written: the
			// literal it was assigned from.
			v = value{kind: vString, s: v.s, span: v.span}
		}
		return p.members(v)
	case tWord:
		p.advance()
		if argMode {
			return value{kind: vString, s: t.text, span: t.span}
		}
		if n := t.text; n != "" && ('0' <= n[0] && n[0] <= '9') {
			return value{kind: vString, s: n}
		}
		return unknown
	case tPunct:
		switch t.text {
		case "@{":
			p.advance()
			return p.hashtable()
		case "(":
			p.advance()
			if p.depth >= maxNesting {
				p.skipTo(")")
				return unknown
			}
			p.depth++
			v := p.expression()
			p.depth--
			if !p.isPunct(")") {
				p.skipTo(")")
				return unknown
			}
			p.advance()
			return p.members(v)
		case "@(", "$(", "[", "{":
			p.skipOne()
			return unknown
		}
	}
	if !p.atEnd() {
		p.advance()
	}
	return unknown
}

// members applies .key and ['key'] to a hashtable; anything else on a
// value (a string's .Replace(), ...) makes it unknown.
func (p *parser) members(v value) value {
	for {
		switch {
		case p.peek().kind == tMember:
			k := p.advance().text
			if p.isPunct("(") { // a method call
				p.skipOne()
				v = unknown
				continue
			}
			if v.kind == vTable {
				if w, ok := v.table[k]; ok {
					v = w
					continue
				}
			}
			v = unknown
		case p.isPunct("[") && p.i > 0 && p.toks[p.i-1].span.End == p.peek().span.Start:
			p.advance()
			k := p.peek()
			if k.kind == tString && len(p.toks) > p.i+1 && p.toks[p.i+1].kind == tPunct && p.toks[p.i+1].text == "]" {
				p.advance()
				p.advance()
				key, ok := p.evalString(k.parts)
				if ok && v.kind == vTable {
					if w, found := v.table[strings.ToLower(key)]; found {
						v = w
						continue
					}
				}
				v = unknown
				continue
			}
			p.skipTo("]")
			v = unknown
		default:
			return v
		}
	}
}

// hashtable reads @{ key = value; … } (the @{ read already).
func (p *parser) hashtable() value {
	if p.depth >= maxNesting {
		p.skipTo("}")
		return unknown
	}
	p.depth++
	defer func() { p.depth-- }()
	tbl := value{kind: vTable, table: map[string]value{}}
	for {
		t := p.peek()
		switch {
		case t.kind == tEOF:
			return tbl
		case t.kind == tEnd:
			p.advance()
			continue
		case t.kind == tPunct && t.text == "}":
			p.advance()
			return tbl
		}
		var key string
		switch t.kind {
		case tWord:
			key = strings.ToLower(t.text)
		case tString:
			s, ok := p.evalString(t.parts)
			if !ok {
				p.skipEntry()
				continue
			}
			key = strings.ToLower(s)
		default:
			p.skipEntry()
			continue
		}
		p.advance()
		if !p.isPunct("=") {
			p.skipEntry()
			continue
		}
		p.advance()
		v := p.entryValue()
		if len(tbl.table) < maxVars {
			tbl.table[key] = v
		}
	}
}

// entryValue is a hashtable entry's value: an expression up to the
// entry's end (a newline, ';' or the closing brace).
func (p *parser) entryValue() value {
	v := p.primary(false)
	for {
		t := p.peek()
		if t.kind == tEOF || t.kind == tEnd || t.kind == tPunct && t.text == "}" {
			return v
		}
		if p.isPunct("+") {
			p.advance()
			v = p.concat(v, p.primary(false))
			continue
		}
		p.skipOne()
		v = unknown
	}
}

// skipEntry steps over a hashtable entry it cannot read.
func (p *parser) skipEntry() {
	for {
		t := p.peek()
		if t.kind == tEOF || t.kind == tEnd || t.kind == tPunct && t.text == "}" {
			return
		}
		p.skipOne()
	}
}

// evalString puts a string's parts together; false when one is unknown,
// or the whole would be too long (join).
func (p *parser) evalString(parts []strPart) (string, bool) {
	if len(parts) == 1 && parts[0].varName == "" && !parts[0].unknown {
		return parts[0].lit, true // a literal: the script's own text, no copy
	}
	strs := make([]string, 0, len(parts))
	for _, pt := range parts {
		switch {
		case pt.unknown:
			return "", false
		case pt.varName != "":
			v, ok := p.vars[pt.varName]
			if !ok || v.kind != vString {
				return "", false
			}
			strs = append(strs, v.s)
		default:
			strs = append(strs, pt.lit)
		}
	}
	if !p.step(len(parts)) {
		return "", false
	}
	return p.join(strs...)
}

// ---- the helpers that download ----

type helper struct {
	name       string
	positional []string // parameter names by position (lower-case)
	url        string   // the parameter naming the 32-bit (or only) URL
	fileType   string   // the type the helper implies ("zip")
}

var helpers = map[string]helper{
	"install-chocolateypackage":           {name: "Install-ChocolateyPackage", positional: []string{"packagename", "filetype", "silentargs", "url", "url64bit"}, url: "url"},
	"install-chocolateyzippackage":        {name: "Install-ChocolateyZipPackage", positional: []string{"packagename", "url", "unziplocation", "url64bit"}, url: "url", fileType: "zip"},
	"get-chocolateywebfile":               {name: "Get-ChocolateyWebFile", positional: []string{"packagename", "filefullpath", "url", "url64bit"}, url: "url"},
	"install-chocolateypowershellcommand": {name: "Install-ChocolateyPowershellCommand", positional: []string{"packagename", "psfilefullpath", "url", "url64bit"}, url: "url", fileType: "ps1"},
	"install-chocolateyvsixpackage":       {name: "Install-ChocolateyVsixPackage", positional: []string{"packagename", "vsixurl", "vsversion", "checksum", "checksumtype"}, url: "vsixurl", fileType: "vsix"},
}

// paramAliases are the helpers' parameter aliases.
var paramAliases = map[string]string{"url64": "url64bit"}

// switches take no value: the word after one is the next argument.
var switches = map[string]bool{
	"useoriginallocation": true, "getoriginalfilename": true, "forcedownload": true,
	"force": true, "disablelogging": true, "verbose": true, "debug": true,
}

// call reads a helper's arguments (its name read) and records what it
// downloads.
func (p *parser) call(h helper) {
	named := map[string]value{}
	var positional []value
	for !p.atEnd() {
		t := p.peek()
		switch {
		case t.kind == tSplat:
			p.advance()
			if v, ok := p.vars[t.text]; ok && v.kind == vTable {
				if !p.step(len(v.table)) {
					return // out of steps: this call is not read whole
				}
				for k, w := range v.table {
					named[canonicalParam(k)] = w
				}
			} else {
				// Unknown splat: what it binds is unknown.
				named["?splat"] = unknown
			}
		case t.kind == tParam:
			p.advance()
			name := canonicalParam(t.text)
			if !t.colon && (switches[name] || p.atEnd() || p.peek().kind == tParam) {
				named[name] = value{kind: vString, s: "true"}
				continue
			}
			named[name] = p.argument()
		default:
			positional = append(positional, p.argument())
		}
	}
	if p.stopped {
		return // its arguments were not all read: it teaches nothing
	}
	// Named first, then positional ones fill the positions left, in order.
	next := 0
	for _, name := range h.positional {
		if next >= len(positional) {
			break
		}
		if _, bound := named[name]; bound {
			continue
		}
		named[name] = positional[next]
		next++
	}
	p.record(h, named)
}

// argument reads one argument in argument mode: pieces written together
// are one string (`$toolsDir\setup.exe`), and a list (0, 3010) is one
// value, unknown.
func (p *parser) argument() value {
	v := p.primary(true)
	for p.i > 0 {
		t, prev := p.peek(), p.toks[p.i-1]
		switch {
		case prev.span.End == t.span.Start && (t.kind == tWord || t.kind == tVar || t.kind == tString):
			v = p.concat(v, p.primary(true))
		case p.isPunct(","):
			p.advance()
			if !p.atEnd() {
				p.primary(true)
			}
			v = unknown
		default:
			return v
		}
	}
	return v
}

func canonicalParam(name string) string {
	name = strings.ToLower(name)
	if a, ok := paramAliases[name]; ok {
		return a
	}
	return name
}

// record adds a call's downloads: the 32-bit URL with -Checksum and
// -ChecksumType (MD5 when not given, as choco reads it), the 64-bit with
// -Checksum64 and -ChecksumType64 (the 32-bit type when not given).
func (p *parser) record(h helper, args map[string]value) {
	str := func(name string) (string, bool, bool) {
		v, ok := args[name]
		if !ok {
			return "", false, true
		}
		return v.s, true, v.kind == vString
	}
	fileType, _, _ := str("filetype")
	if fileType == "" {
		fileType = h.fileType
	}
	typ, given, known := str("checksumtype")
	if !given {
		typ, known = "md5", true
	}
	typ64, given64, known64 := str("checksumtype64")
	if !given64 {
		typ64, known64 = typ, known
	}
	for _, d := range []struct{ arch, url, sum, typ string }{
		{"32", h.url, "checksum", typ},
		{"64", "url64bit", "checksum64", typ64},
	} {
		uv, ok := args[d.url]
		if !ok {
			continue // no such download in this call
		}
		typeKnown := known
		if d.arch == "64" {
			typeKnown = known64
		}
		where := h.name + " -" + map[string]string{"32": "Url", "64": "Url64bit"}[d.arch]
		if uv.kind != vString {
			p.skip(where + ": its URL is not a value warren can read")
			continue
		}
		raw := strings.TrimSpace(uv.s)
		if raw == "" {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			p.skip(fmt.Sprintf("%s: %q is not an http(s) URL", where, clip(raw)))
			continue
		}
		sv, ok := args[d.sum]
		if !ok || sv.kind != vString || strings.TrimSpace(sv.s) == "" {
			p.skip(fmt.Sprintf("%s %s: no checksum warren can read", where, clip(raw)))
			continue
		}
		if !typeKnown {
			p.skip(fmt.Sprintf("%s %s: its checksum type is not a value warren can read", where, clip(raw)))
			continue
		}
		algo := strings.ToLower(strings.TrimSpace(d.typ))
		sum := strings.ToLower(strings.TrimSpace(sv.s))
		if want := map[string]int{"sha256": 64, "sha512": 128}[algo]; want == 0 {
			p.skip(fmt.Sprintf("%s %s: checksum type %s is not learnt (only sha256 and sha512 name a blob)", where, clip(raw), clip(algo)))
			continue
		} else if len(sum) != want || !isHex(sum) {
			p.skip(fmt.Sprintf("%s %s: checksum %q is not a %s", where, clip(raw), clip(sum), algo))
			continue
		}
		if len(p.out.Installers) >= maxInstallers {
			p.skip(fmt.Sprintf("more than %d downloads: the rest are not learnt", maxInstallers))
			return
		}
		in := Installer{Call: h.name, Arch: d.arch, URL: raw, ChecksumType: algo, Checksum: sum, FileType: strings.ToLower(fileType), URLSpan: uv.span}
		if raw != uv.s {
			in.URLSpan = Span{} // the literal has spaces around it: not the URL alone
		}
		if !p.seen(in) {
			p.out.Installers = append(p.out.Installers, in)
		}
	}
}

// seen says whether in is learnt already: the same download from the same
// literal (one written twice, as -Url and -Url64bit, is two: a rewrite
// must change both).
func (p *parser) seen(in Installer) bool {
	for _, o := range p.out.Installers {
		if o.URL == in.URL && o.Checksum == in.Checksum && o.URLSpan == in.URLSpan {
			return true
		}
	}
	return false
}

func (p *parser) skip(why string) {
	if len(p.out.Skipped) < maxInstallers {
		p.out.Skipped = append(p.out.Skipped, why)
	}
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
