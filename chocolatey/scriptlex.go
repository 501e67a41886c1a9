package chocolatey

import "strings"

// The lexer of install scripts (script.go): PowerShell's tokens, as far
// as the parser needs them.

type tokKind uint8

const (
	tEOF      tokKind = iota
	tEnd              // a newline or ';': a statement's end
	tVar              // $name, ${name}, $env:Name (text: lower-case name)
	tSplat            // @name
	tString           // a quoted string (parts)
	tWord             // a bare word: a command, a key, an argument
	tParam            // -Name (text: lower-case name; colon: -Name:value)
	tMember           // .name after a variable (text: lower-case name)
	tPunct            // = ( ) { } [ ] , | + @{ @( $(
	tOperator         // anything else the lexer steps over
)

type token struct {
	kind  tokKind
	text  string
	parts []strPart // tString
	span  Span
	colon bool // tParam written -Name:value
}

// strPart is a piece of a string: literal text, a variable to put in, or
// something warren does not evaluate.
type strPart struct {
	lit     string
	varName string
	unknown bool
}

type lexer struct {
	src string
	i   int
	// afterVar: a '.' or '[' right after a variable is member access.
	afterVar bool
}

func (lx *lexer) all() []token {
	var out []token
	for {
		t := lx.next()
		out = append(out, t)
		if t.kind == tEOF {
			return out
		}
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' }

func isNameByte(c byte) bool {
	return c == '_' || c == '?' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// wordStop says which bytes end a bare word.
func wordStop(c byte) bool {
	return isSpace(c) || strings.IndexByte("\n;(){}[],|&'\"$@#=+`", c) >= 0
}

func (lx *lexer) next() token {
	afterVar := lx.afterVar
	lx.afterVar = false
	for lx.i < len(lx.src) {
		c := lx.src[lx.i]
		switch {
		case isSpace(c):
			lx.i++
			afterVar = false
			continue
		case c == '`' && lx.i+1 < len(lx.src) && (lx.src[lx.i+1] == '\n' || lx.src[lx.i+1] == '\r'):
			// A line continued: the backtick and the line end are space.
			lx.i += 2
			if lx.i < len(lx.src) && lx.src[lx.i-1] == '\r' && lx.src[lx.i] == '\n' {
				lx.i++
			}
			continue
		case c == '#':
			for lx.i < len(lx.src) && lx.src[lx.i] != '\n' {
				lx.i++
			}
			continue
		case c == '<' && strings.HasPrefix(lx.src[lx.i:], "<#"):
			end := strings.Index(lx.src[lx.i+2:], "#>")
			if end < 0 {
				lx.i = len(lx.src)
			} else {
				lx.i += 2 + end + 2
			}
			continue
		}
		break
	}
	if lx.i >= len(lx.src) {
		return token{kind: tEOF}
	}
	start := lx.i
	c := lx.src[lx.i]
	switch {
	case c == '\n' || c == ';':
		lx.i++
		return token{kind: tEnd, span: Span{start, lx.i}}
	case afterVar && c == '.' && lx.i+1 < len(lx.src) && isNameByte(lx.src[lx.i+1]):
		lx.i++
		j := lx.i
		for lx.i < len(lx.src) && isNameByte(lx.src[lx.i]) {
			lx.i++
		}
		lx.afterVar = true
		return token{kind: tMember, text: strings.ToLower(lx.src[j:lx.i]), span: Span{start, lx.i}}
	case c == '$':
		return lx.variable()
	case c == '@':
		if lx.i+1 < len(lx.src) {
			switch n := lx.src[lx.i+1]; {
			case n == '{' || n == '(':
				lx.i += 2
				return token{kind: tPunct, text: lx.src[start:lx.i], span: Span{start, lx.i}}
			case n == '\'' || n == '"':
				return lx.hereString()
			case isNameByte(n):
				lx.i++
				j := lx.i
				for lx.i < len(lx.src) && isNameByte(lx.src[lx.i]) {
					lx.i++
				}
				return token{kind: tSplat, text: strings.ToLower(lx.src[j:lx.i]), span: Span{start, lx.i}}
			}
		}
		lx.i++
		return token{kind: tOperator, text: "@", span: Span{start, lx.i}}
	case c == '\'':
		return lx.singleQuoted()
	case c == '"':
		return lx.doubleQuoted()
	case c == '-' && lx.i+1 < len(lx.src) && (isNameByte(lx.src[lx.i+1]) && !('0' <= lx.src[lx.i+1] && lx.src[lx.i+1] <= '9')):
		lx.i++
		j := lx.i
		for lx.i < len(lx.src) && (isNameByte(lx.src[lx.i]) || lx.src[lx.i] == '-') {
			lx.i++
		}
		t := token{kind: tParam, text: strings.ToLower(lx.src[j:lx.i])}
		if lx.i < len(lx.src) && lx.src[lx.i] == ':' {
			lx.i++
			t.colon = true
		}
		t.span = Span{start, lx.i}
		return t
	case strings.IndexByte("=(){}[],|+", c) >= 0:
		lx.i++
		if c == ']' || c == ')' {
			lx.afterVar = true // ($x).y, $x['a'].b: still member access
		}
		return token{kind: tPunct, text: string(c), span: Span{start, lx.i}}
	case c == '&' || c == '`':
		lx.i++
		return token{kind: tOperator, text: string(c), span: Span{start, lx.i}}
	}
	for lx.i < len(lx.src) && !wordStop(lx.src[lx.i]) {
		lx.i++
	}
	if lx.i == start { // a byte no rule takes: step over it
		lx.i++
		return token{kind: tOperator, text: lx.src[start:lx.i], span: Span{start, lx.i}}
	}
	return token{kind: tWord, text: lx.src[start:lx.i], span: Span{start, lx.i}}
}

// variable reads $name, ${name}, $scope:name, $env:Name or $(.
func (lx *lexer) variable() token {
	start := lx.i
	lx.i++ // '$'
	if lx.i < len(lx.src) && lx.src[lx.i] == '(' {
		lx.i++
		return token{kind: tPunct, text: "$(", span: Span{start, lx.i}}
	}
	if lx.i < len(lx.src) && lx.src[lx.i] == '{' {
		end := strings.IndexByte(lx.src[lx.i:], '}')
		if end < 0 {
			lx.i = len(lx.src)
			return token{kind: tOperator, text: "$", span: Span{start, lx.i}}
		}
		name := lx.src[lx.i+1 : lx.i+end]
		lx.i += end + 1
		lx.afterVar = true
		return token{kind: tVar, text: varName(name), span: Span{start, lx.i}}
	}
	j := lx.i
	for lx.i < len(lx.src) && (isNameByte(lx.src[lx.i]) || lx.src[lx.i] == ':' && lx.i+1 < len(lx.src) && isNameByte(lx.src[lx.i+1])) {
		lx.i++
	}
	if lx.i == j {
		return token{kind: tOperator, text: "$", span: Span{start, lx.i}}
	}
	lx.afterVar = true
	return token{kind: tVar, text: varName(lx.src[j:lx.i]), span: Span{start, lx.i}}
}

// varName is a variable's name as the parser keys it: lower-case, a scope
// (script:, global:, local:, private:) dropped, env: kept.
func varName(s string) string {
	s = strings.ToLower(s)
	for _, scope := range []string{"script:", "global:", "local:", "private:"} {
		if rest, ok := strings.CutPrefix(s, scope); ok {
			return rest
		}
	}
	return s
}

func (lx *lexer) singleQuoted() token {
	start := lx.i
	lx.i++
	var b strings.Builder
	for lx.i < len(lx.src) {
		c := lx.src[lx.i]
		if c == '\'' {
			if lx.i+1 < len(lx.src) && lx.src[lx.i+1] == '\'' {
				b.WriteByte('\'')
				lx.i += 2
				continue
			}
			lx.i++
			return token{kind: tString, parts: []strPart{{lit: b.String()}}, span: Span{start, lx.i}}
		}
		b.WriteByte(c)
		lx.i++
	}
	// Unterminated: the rest of the script was inside it.
	return token{kind: tString, parts: []strPart{{unknown: true}}, span: Span{start, lx.i}}
}

// doubleQuoted reads "…": escapes with a backtick, "" for a quote, and
// $name, ${name} and $($name) put in; any other $( … ) is unknown.
func (lx *lexer) doubleQuoted() token {
	start := lx.i
	lx.i++
	var parts []strPart
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			parts = append(parts, strPart{lit: b.String()})
			b.Reset()
		}
	}
	for lx.i < len(lx.src) {
		c := lx.src[lx.i]
		switch {
		case c == '"':
			if lx.i+1 < len(lx.src) && lx.src[lx.i+1] == '"' {
				b.WriteByte('"')
				lx.i += 2
				continue
			}
			lx.i++
			flush()
			return token{kind: tString, parts: parts, span: Span{start, lx.i}}
		case c == '`' && lx.i+1 < len(lx.src):
			b.WriteString(backtickEscape(lx.src[lx.i+1]))
			lx.i += 2
		case c == '$' && lx.i+1 < len(lx.src) && lx.src[lx.i+1] == '(':
			flush()
			inner, ok := lx.subexpression()
			if name, isVar := simpleVar(inner); ok && isVar {
				parts = append(parts, strPart{varName: name})
			} else {
				parts = append(parts, strPart{unknown: true})
			}
		case c == '$' && lx.i+1 < len(lx.src) && lx.src[lx.i+1] == '{':
			end := strings.IndexByte(lx.src[lx.i:], '}')
			if end < 0 {
				lx.i = len(lx.src)
				break
			}
			flush()
			parts = append(parts, strPart{varName: varName(lx.src[lx.i+2 : lx.i+end])})
			lx.i += end + 1
		case c == '$' && lx.i+1 < len(lx.src) && isNameByte(lx.src[lx.i+1]):
			j := lx.i + 1
			k := j
			for k < len(lx.src) && (isNameByte(lx.src[k]) || lx.src[k] == ':' && k+1 < len(lx.src) && isNameByte(lx.src[k+1])) {
				k++
			}
			flush()
			parts = append(parts, strPart{varName: varName(lx.src[j:k])})
			lx.i = k
		default:
			b.WriteByte(c)
			lx.i++
		}
	}
	return token{kind: tString, parts: []strPart{{unknown: true}}, span: Span{start, lx.i}}
}

// subexpression steps over $( … ) inside a string, nested parentheses and
// strings included, and returns its inside.
func (lx *lexer) subexpression() (string, bool) {
	lx.i += 2
	from, depth := lx.i, 1
	for lx.i < len(lx.src) {
		switch lx.src[lx.i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				inner := lx.src[from:lx.i]
				lx.i++
				return inner, true
			}
		case '\'':
			if end := strings.IndexByte(lx.src[lx.i+1:], '\''); end >= 0 {
				lx.i += end + 1
			}
		case '"':
			if end := strings.IndexByte(lx.src[lx.i+1:], '"'); end >= 0 {
				lx.i += end + 1
			}
		case '`':
			lx.i++
		}
		lx.i++
	}
	return "", false
}

// simpleVar says whether a subexpression's inside is one variable.
func simpleVar(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || s[0] != '$' {
		return "", false
	}
	for i := 1; i < len(s); i++ {
		if !isNameByte(s[i]) && s[i] != ':' {
			return "", false
		}
	}
	return varName(s[1:]), true
}

func backtickEscape(c byte) string {
	switch c {
	case 'n':
		return "\n"
	case 't':
		return "\t"
	case 'r':
		return "\r"
	case '0':
		return "\x00"
	}
	return string(c)
}

// hereString reads @' … '@ and @" … "@ (the closing mark at a line's
// start); a double-quoted one is unknown when it puts anything in.
func (lx *lexer) hereString() token {
	start := lx.i
	q := lx.src[lx.i+1]
	mark := "\n" + string(q) + "@"
	end := strings.Index(lx.src[lx.i:], mark)
	if end < 0 {
		lx.i = len(lx.src)
		return token{kind: tString, parts: []strPart{{unknown: true}}, span: Span{start, lx.i}}
	}
	body := lx.src[lx.i+2 : lx.i+end]
	lx.i += end + len(mark)
	body = strings.TrimPrefix(strings.TrimPrefix(body, "\r"), "\n")
	body = strings.TrimSuffix(body, "\r")
	if q == '"' && strings.ContainsAny(body, "$`") {
		return token{kind: tString, parts: []strPart{{unknown: true}}, span: Span{start, lx.i}}
	}
	return token{kind: tString, parts: []strPart{{lit: body}}, span: Span{start, lx.i}}
}
