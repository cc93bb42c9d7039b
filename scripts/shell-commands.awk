# Prints the external commands a bash script runs, for scripts/check-deps.sh: one
# "LINE<TAB>WORD" line per command word, and "FUNC<TAB>NAME" per function the script
# defines (calls to those are not external). Plain POSIX awk (Debian's mawk runs it).
#
# It is a scanner, not a full shell parser, made for the scripts of this repository:
# it follows quotes, $(...), <(...), ${...}, $((...)), [[ ... ]], here-documents,
# comments, case patterns, assignments and array literals, and looks through the
# wrappers sudo, as_root, env, exec, command, timeout, xargs, nohup, nice and
# "${array[@]}" to the command they run. A command named by a variable ("$BUF") is not
# reported: its value is not known here. Code inside quoted strings (bash -c '...',
# trap '...') is not scanned.

function push(kind, opener_) {
	d++
	ctx[d] = kind; opener[d] = opener_
	w[d] = ""; wq[d] = 0; wl[d] = line
	cs[d] = (kind == "C"); par[d] = 0; arr[d] = 0; intest[d] = 0
	wrap[d] = ""; skipw[d] = 0; loopw[d] = ""; depth[d] = 0; arrword[d] = 0
	incase[d] = 0; casepat[d] = 0
}

function pop() { d-- }

# literal: whether the word is plain text, with no quotes or expansions.
function literal(i) { return !wq[i] }

function is_assignment(s) { return s ~ /^[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=/ }

# endword handles the word accumulated at level i: a command name, a keyword, an
# assignment, an argument or a redirection target.
function endword(i,    s) {
	s = w[i]
	if (s == "" && !wq[i]) return
	w[i] = ""
	if (!(s == "\001" && arrword[i])) arrword[i] = 0
	if (skipw[i]) { skipw[i] = 0; wq[i] = 0; return }
	if (arr[i]) { wq[i] = 0; return }
	if (intest[i]) { if (s == "]]" && literal(i)) { intest[i] = 0; cs[i] = 0 }; wq[i] = 0; return }
	if (loopw[i] == "for") { wq[i] = 0; return } # for NAME in WORDS: up to ; or newline
	if (loopw[i] == "case") { if (s == "in" && literal(i)) { loopw[i] = ""; incase[i]++; casepat[i] = 1 }; wq[i] = 0; return }
	if (casepat[i]) { # a case pattern, up to ")"; or the esac that ends the case
		if (s == "esac" && literal(i)) { incase[i]--; casepat[i] = 0; cs[i] = 0 }
		wq[i] = 0; return
	}
	if (loopw[i] == "function") { printf "FUNC\t%s\n", s; loopw[i] = ""; cs[i] = 1; wq[i] = 0; return }
	if (!cs[i]) { wq[i] = 0; return }

	if (is_assignment(s)) { wq[i] = 0; return } # VAR=value cmd: still at a command
	if (!literal(i)) {
		# "${run[@]}" rabbitmqctl ...: an array holding a wrapper (sudo) or nothing.
		if (s == "\001" && arrword[i]) { wrap[i] = "opts"; wq[i] = 0; arrword[i] = 0; return }
		if (wrap[i] == "timeout") { wrap[i] = "opts"; wq[i] = 0; return } # timeout "$SECONDS" cmd
		cs[i] = 0; wq[i] = 0; arrword[i] = 0; wrap[i] = ""; return
	}
	wq[i] = 0
	if (wrap[i] != "") {
		if (s ~ /^-/) {
			# Options that take the next word as their argument.
			if (wrapname[i] == "env" && s ~ /^-[uCS]$/) skipw[i] = 1
			if (wrapname[i] == "sudo" && s ~ /^-[ugC]$/) skipw[i] = 1
			if (wrapname[i] == "timeout" && s ~ /^-[sk]$/) skipw[i] = 1
			if (wrapname[i] == "xargs" && s ~ /^-[nsdaEILP]$/) skipw[i] = 1
			return
		}
		if (wrap[i] == "timeout") { wrap[i] = "opts"; return } # the duration
	}
	if (s == "esac" && incase[i] > 0) { incase[i]--; cs[i] = 0; return }
	if (s ~ /^(if|then|else|elif|do|while|until|!|time|\{|\}|fi|done|esac)$/) { wrap[i] = ""; return }
	if (s == "for" || s == "select") { loopw[i] = "for"; cs[i] = 0; return }
	if (s == "case") { loopw[i] = "case"; cs[i] = 0; return }
	if (s == "function") { loopw[i] = "function"; cs[i] = 0; return }
	if (s == "[[") { intest[i] = 1; cs[i] = 0; return }
	printf "%d\t%s\n", wl[i], s
	wrap[i] = ""
	wrapname[i] = s
	if (s ~ /^(sudo|as_root|env|exec|command|builtin|nohup|nice|xargs)$/) { wrap[i] = "opts"; return }
	if (s == "timeout") { wrap[i] = "timeout"; return }
	cs[i] = 0
}

# separator: what follows starts a new command.
function separator(i) {
	endword(i)
	skipw[i] = 0
	if (arr[i] || intest[i]) return
	if (loopw[i] == "for") loopw[i] = ""
	cs[i] = 1; wrap[i] = ""
}

function addc(i, c) {
	if (w[i] == "" && !wq[i]) wl[i] = line
	w[i] = w[i] c
}

function mark(i) {
	if (w[i] == "" && !wq[i]) wl[i] = line
	wq[i] = 1
	w[i] = w[i] "\001"
}

# skip_heredocs: at a newline, skip the bodies of the here-documents opened on the line.
function skip_heredocs(    k, j, body) {
	for (k = 1; k <= nhd; k++) {
		while (pos <= n) {
			j = index(substr(src, pos), "\n")
			if (j == 0) { body = substr(src, pos); pos = n + 1 } else { body = substr(src, pos, j - 1); pos += j }
			line++
			if (hdtabs[k]) sub(/^\t+/, "", body)
			if (body == hd[k]) break
		}
	}
	nhd = 0
}

# read_heredoc_word: after "<<" or "<<-", the delimiter word (quotes removed).
function read_heredoc_word(    c, s) {
	while (substr(src, pos, 1) == " " || substr(src, pos, 1) == "\t") pos++
	s = ""
	while (pos <= n) {
		c = substr(src, pos, 1)
		if (c ~ /[ \t\n;&|<>()]/) break
		if (c != "'" && c != "\"" && c != "\\") s = s c
		pos++
	}
	return s
}

BEGIN { RS = "\001"; d = 0 }

{
	src = $0; n = length(src); pos = 1; line = 1; nhd = 0
	d = 0; push("C", "")
	while (pos <= n) {
		c = substr(src, pos, 1); c2 = substr(src, pos + 1, 1)
		k = ctx[d]
		if (k == "S") { # single quotes: nothing special until the closing one
			pos++
			if (c == "'") pop()
			else if (c == "\n") line++
			continue
		}
		if (k == "E") { # $'...': backslash escapes
			pos++
			if (c == "\\") pos++
			else if (c == "'") pop()
			else if (c == "\n") line++
			continue
		}
		if (k == "A") { # arithmetic: (( )) and $(( )): no commands
			pos++
			if (c == "(") depth[d]++
			else if (c == ")") { if (--depth[d] == 0) pop() }
			else if (c == "\n") line++
			continue
		}
		if (k == "D" || k == "P") { # "..." and ${...}
			if (c == "\\") { pos += 2; continue }
			if (c == "\n") line++
			if (c == "$" && c2 == "(") {
				if (substr(src, pos + 2, 1) == "(") { push("A"); depth[d] = 2; pos += 3 } else { push("C", "$("); pos += 2 }
				continue
			}
			if (c == "$" && c2 == "{") { push("P"); depth[d] = 1; pos += 2; continue }
			if (k == "D" && c == "\"") { pop(); pos++; continue }
			if (k == "P") {
				if (c == "\"") { push("D"); pos++; continue }
				if (c == "{") depth[d]++
				else if (c == "}" && --depth[d] == 0) { pop(); pos++; continue }
			}
			pos++
			continue
		}

		# k == "C": a command list, at the top or inside $(...), <(...) or an array literal.
		if (c == "\\") {
			if (c2 == "\n") { line++; pos += 2; continue } # line continuation
			mark(d); pos += 2; continue
		}
		if (c == "#" && w[d] == "" && !wq[d]) { # a comment, up to the end of the line
			while (pos <= n && substr(src, pos, 1) != "\n") pos++
			continue
		}
		if (w[d] == "" && !wq[d] && match(substr(src, pos, 64), /^"?\$\{[A-Za-z_][A-Za-z0-9_]*\[@\]\}"?/)) {
			# "${name[@]}", kept apart to recognise "${run[@]}" cmd.
			mark(d); arrword[d] = 1; pos += RLENGTH; continue
		}
		if (c == "'") { mark(d); push("S"); pos++; continue }
		if (c == "\"") { mark(d); push("D"); pos++; continue }
		if (c == "$") {
			if (c2 == "'") { mark(d); push("E"); pos += 2; continue }
			if (c2 == "(" && substr(src, pos + 2, 1) == "(") { mark(d); push("A"); depth[d] = 2; pos += 3; continue }
			if (c2 == "(") { mark(d); push("C", "$("); pos += 2; continue }
			if (c2 == "{") { mark(d); push("P"); depth[d] = 1; pos += 2; continue }
			mark(d); pos++; continue
		}
		if (c == "\n") {
			line++; pos++
			if (arr[d]) { continue }
			separator(d)
			if (nhd > 0) skip_heredocs()
			continue
		}
		if (c == " " || c == "\t") { endword(d); pos++; continue }
		if (casepat[d] && (c == "|" || c == "(")) { endword(d); pos++; continue } # a | b) in a case
		if (c == ";" && c2 == ";" || c == ";" && c2 == "&") { # ;; ;& ;;& end a case clause
			separator(d)
			if (incase[d] > 0) casepat[d] = 1
			pos += 2; if (substr(src, pos, 1) == "&") pos++
			continue
		}
		if (c == ";" || c == "|" || (c == "&" && c2 != ">")) { separator(d); pos++; continue }
		if (c == "<" || c == ">" || c == "&") {
			if (w[d] ~ /^[0-9]+$/ && !wq[d]) { w[d] = "" } # 2>&1: a file descriptor
			endword(d)
			if ((c == "<" || c == ">") && c2 == "(") { mark(d); push("C", "$("); pos += 2; continue } # <(...)
			if (c == "<" && c2 == "<" && substr(src, pos + 2, 1) == "<") { pos += 3; skipw[d] = 1; continue }
			if (c == "<" && c2 == "<") {
				pos += 2
				tabs = 0
				if (substr(src, pos, 1) == "-") { tabs = 1; pos++ }
				nhd++; hd[nhd] = read_heredoc_word(); hdtabs[nhd] = tabs
				continue
			}
			pos++
			while (substr(src, pos, 1) ~ /[<>&|]/) pos++
			if (intest[d]) continue # [[ a < b ]]: a comparison
			skipw[d] = 1
			continue
		}
		if (c == "(") {
			if (w[d] ~ /=$/ && !wq[d]) { w[d] = ""; push("C", "("); arr[d] = 1; cs[d] = 0; pos++; continue } # name=(...)
			if (c2 == ")" && w[d] != "") { printf "FUNC\t%s\n", w[d]; w[d] = ""; wq[d] = 0; pos += 2; cs[d] = 1; continue } # name()
			if (intest[d]) { pos++; continue }
			if ((cs[d] || loopw[d] == "for") && w[d] == "" && !wq[d] && c2 == "(") { push("A"); depth[d] = 2; pos += 2; continue } # (( ... ))
			endword(d); par[d]++; cs[d] = 1; pos++
			continue
		}
		if (c == ")") {
			if (intest[d]) { pos++; continue }
			if (arr[d] || (par[d] == 0 && opener[d] == "$(")) { endword(d); pop(); pos++; continue }
			if (par[d] > 0) { endword(d); par[d]--; separator(d); pos++; continue }
			# The end of a case pattern: the word before ")" is no command.
			w[d] = ""; wq[d] = 0; cs[d] = 1; wrap[d] = ""; casepat[d] = 0; pos++
			continue
		}
		addc(d, c); pos++
	}
	separator(d)
}
