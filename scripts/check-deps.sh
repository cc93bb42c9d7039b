#!/usr/bin/env bash
# Fails when the build relies on a Debian package that scripts/setup.sh does not
# install. Such a miss passes on every machine that happens to have the package and
# breaks `make test` on a fresh one (libprotobuf-dev, whose google/protobuf/*.proto
# protoc imports, was one). `make test` runs this check after setup.
#
# What the build relies on is derived, not listed by hand:
#
#   commands      run by every shell script of the repo (*.sh, .ci/run) and by the
#                 Makefile's recipes (as `make -n test demo` prints them), and named in
#                 exec.Command/exec.CommandContext/exec.LookPath calls of the Go code;
#   proto imports of every .proto in the repo that no file of the repo provides
#                 (google/protobuf/...), found where protoc finds them (../include
#                 next to the protoc binary);
#   Python imports of the repo's *.py files that are neither the standard library nor
#                 the repo's own, as Debian's /usr/bin/python3 finds them;
#   C headers     every header, transitively, of the #include <...> lines of the cgo
#                 packages the module builds, tests included (`go list -deps -test`),
#                 as the C compiler resolves them; their pkg-config modules; and the
#                 C compiler and pkg-config commands themselves.
#
# dpkg -S names the package of each file. The package is accounted for when
# `scripts/setup.sh --print-packages` lists it, when it is a hard dependency
# (Depends, Pre-Depends, no alternatives) of one listed, transitively, or when it is
# Essential or of Priority required (on every Debian system). Files of no package
# (Go from go.dev, buf in .tools/) and the repo's own programs are outside this check.
# A command that is not installed at all fails the check too, except those in
# OPTIONAL below.
#
# Usage: scripts/check-deps.sh [-v]     -v lists every file and the package it is from.
# It only reads: no root, no network, no stdin. Exit status 0 when all is accounted
# for, 1 when not (with the packages to add), 2 on a usage or environment error.
set -euo pipefail

SELF=$(realpath "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."
ROOT=$PWD

# Commands the scripts use only in a case that has its own check: sudo, when not
# running as root (setup.sh and broker.sh say so when it is missing).
OPTIONAL=(sudo)

verbose=0
for arg in "$@"; do
	case $arg in
	-v | --verbose) verbose=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$SELF"
		exit 0
		;;
	*)
		echo "check-deps: unknown argument: $arg (want -v)" >&2
		exit 2
		;;
	esac
done

die() {
	printf 'check-deps: error: %s\n' "$*" >&2
	exit 2
}

command -v dpkg >/dev/null 2>&1 || die "dpkg not found: this check (and scripts/setup.sh) is for Debian"
command -v go >/dev/null 2>&1 || die "go not found in PATH"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-deps.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# NEEDS is the table of what the build relies on: KIND<TAB>WHAT<TAB>WHERE<TAB>PATH,
# where WHERE says what uses it and PATH is the file on this machine.
NEEDS=$TMP/needs
: >"$NEEDS"
need() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$NEEDS"; }

# --- the repository's files ---------------------------------------------------------------

if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	git -C "$ROOT" ls-files -z --cached --others --exclude-standard
else
	find . \( -path ./.git -o -path ./.tools -o -path ./bin -o -name node_modules \) -prune -o -type f -print0 |
		sed -z 's|^\./||'
fi | while IFS= read -r -d '' f; do [[ -f $f ]] && printf '%s\n' "$f"; done | sort >"$TMP/files"

# --- commands -----------------------------------------------------------------------------

# Shell scripts: *.sh, and files whose first line runs bash or sh.
: >"$TMP/scripts"
while IFS= read -r f; do
	case $f in
	*.sh) echo "$f" >>"$TMP/scripts" ;;
	*.go | *.proto | *.md | *.golden | *.binpb | *.pb.go) ;;
	*) head -c 64 "$f" 2>/dev/null | head -n 1 | grep -Eq '^#!.*[/ ](ba)?sh( |$)' && echo "$f" >>"$TMP/scripts" ;;
	esac
done <"$TMP/files"

# The scanner is checked on every run against the constructs the scripts use, so
# that a change to it cannot silently stop seeing commands.
scanner_selftest() {
	local got want='foo bar alpha beta gamma delta epsilon zeta eta cat iota kappa lambda mu env pi timeout rho sigma sudo tau mapfile upsilon phi chi echo alef bet gimel dalet command he '
	got=$(awk -f "$ROOT/scripts/shell-commands.awk" <<'SAMPLE' | cut -f2 | tr '\n' ' '
foo() { bar; }
x=$(alpha | beta) y="$(gamma "$(delta)")"
[[ -n $(epsilon) ]] && zeta || eta
cat <<-EOF >out
	notacmd here
	EOF
case $1 in
start | stop) iota ;;
*) kappa ;;
esac
for ((i = 0; i < 3; i++)); do lambda; done
for f in a b c; do mu "$f"; done
arr=(nu xi
  omicron)
env -u FOO BAR=1 pi arg
timeout -k 5 10 rho
"${run[@]}" sigma
sudo -u root tau
mapfile -t a < <(upsilon)
phi 2>&1 >/dev/null | chi &
echo 'psi; omega' "# not comment" # comment; notcmd
if ! (( x > 1 )); then alef; fi
{ bet; } >&2
(gimel && dalet)
command -v he >/dev/null
SAMPLE
	)
	[[ $got == "$want" ]] || die "scripts/shell-commands.awk misreads its self-test: got '$got', want '$want'"
}
scanner_selftest

# scan FILE LABEL prints the commands of the shell text in FILE as LABEL:LINE<TAB>WORD,
# leaving out the functions FILE defines.
scan() {
	awk -f "$ROOT/scripts/shell-commands.awk" "$1" >"$TMP/scan"
	awk -F '\t' -v label="$2" '
		$1 == "FUNC" { fn[$2] = 1; next }
		{ line[NR] = $1; word[NR] = $2 }
		END { for (i = 1; i <= NR; i++) if ((i in word) && !(word[i] in fn)) printf "%s:%s\t%s\n", label, line[i], word[i] }
	' "$TMP/scan"
}

: >"$TMP/commands"
while IFS= read -r f; do scan "$f" "$f" >>"$TMP/commands"; done <"$TMP/scripts"

# The Makefile's recipes, expanded as make runs them: -n prints them without running
# any (recursive $(MAKE) lines run, with -n too).
env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make -n --no-print-directory -C "$ROOT" test demo >"$TMP/make-n" 2>&1 ||
	die "make -n test demo failed: $(tail -n 3 "$TMP/make-n")"
scan "$TMP/make-n" "Makefile (make -n test demo)" >>"$TMP/commands"

# Go code: the first string argument of exec.Command, exec.CommandContext and
# exec.LookPath, when it is a literal.
grep '\.go$' "$TMP/files" | tr '\n' '\0' | xargs -0 -r grep -HnoE \
	'exec\.(Command\(|CommandContext\([^,"]*, *|LookPath\()"[^"]+"' |
	sed -E 's/^([^:]+:[0-9]+):.*"([^"]+)"$/\1\t\2/' >>"$TMP/commands" || true

# cgo: the C compiler, pkg-config, and the headers of every cgo package built.
# CGO_ENABLED=1 as the Makefile sets it: -race and transport/zmq need cgo.
CGO_ENABLED=1 go list -e -deps -test \
	-f '{{if .CgoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{"\t"}}{{join .CgoFiles " "}}{{"\t"}}{{join .CgoPkgConfig " "}}{{end}}' \
	./... 2>"$TMP/golist.err" | sort -u >"$TMP/cgo" || die "go list failed: $(tail -n 3 "$TMP/golist.err")"
CC_CMD=$(go env CC)
PKG_CONFIG_CMD=$(go env PKG_CONFIG)
if [[ -s $TMP/cgo ]]; then
	printf 'cgo (%s)\t%s\n' "$(cut -f1 "$TMP/cgo" | head -n 1)" "${CC_CMD%% *}" >>"$TMP/commands"
fi
if cut -f4 "$TMP/cgo" | grep -q .; then
	printf 'cgo (%s)\t%s\n' "$(awk -F '\t' '$4 != "" { print $1; exit }' "$TMP/cgo")" "${PKG_CONFIG_CMD%% *}" >>"$TMP/commands"
fi

# The repo's own programs (bin/bank-server, ...), run by the demo, are built here.
CGO_ENABLED=1 go list -e -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' ./... 2>/dev/null |
	xargs -r -n1 basename | sort -u >"$TMP/own-programs"

mapfile -t BUILTINS < <(compgen -b; compgen -k)
LOOKUP_PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin:$ROOT/.tools/node_modules/.bin

declare -A seen=()
: >"$TMP/missing-commands"
while IFS=$'\t' read -r where cmd; do
	[[ -n ${seen[$cmd]:-} ]] && continue
	seen[$cmd]=1
	case $cmd in
	-* | *=* | '' | *[!A-Za-z0-9_./+-]*) continue ;; # not a command name
	/*) path=$cmd ;;
	*/*) continue ;; # a path in the repo: scripts/..., bin/...
	*)
		[[ " ${BUILTINS[*]} " == *" $cmd "* ]] && continue
		grep -qxF -- "$cmd" "$TMP/own-programs" && continue
		path=$(PATH=$LOOKUP_PATH type -P "$cmd" || true)
		;;
	esac
	if [[ -z $path || ! -e $path ]]; then
		[[ " ${OPTIONAL[*]} " == *" $cmd "* ]] || printf '%s\t%s\n' "$cmd" "$where" >>"$TMP/missing-commands"
		continue
	fi
	need command "$cmd" "$where" "$path"
done <"$TMP/commands"

# --- proto imports ------------------------------------------------------------------------

PROTOC_INCLUDE=
if protoc=$(command -v protoc); then
	PROTOC_INCLUDE=$(realpath -m "$(dirname "$(realpath "$protoc")")/../include")
fi
: >"$TMP/missing-imports"
grep '\.proto$' "$TMP/files" | grep -v '^\.tools/' >"$TMP/protos" || true
while IFS= read -r f; do
	sed -nE 's/^[[:space:]]*import[[:space:]]+(public[[:space:]]+|weak[[:space:]]+)?"([^"]+)"[[:space:]]*;.*/\2/p' "$f" |
		while IFS= read -r imp; do
			# An import of a file in the repo is resolved by its own -I or buf module.
			grep -qE "(^|/)${imp//./\\.}\$" "$TMP/protos" && continue
			if [[ -n $PROTOC_INCLUDE && -f $PROTOC_INCLUDE/$imp ]]; then
				need proto-import "$imp" "$f" "$PROTOC_INCLUDE/$imp"
			else
				printf '%s\t%s\n' "$imp" "$f" >>"$TMP/missing-imports"
			fi
		done
done <"$TMP/protos"

# --- Python imports -----------------------------------------------------------------------

# The modules the repo's *.py files import (clients/python), as Debian's python3 finds them:
# apt installs python3-* modules for /usr/bin/python3, not for another interpreter first on
# PATH. Left out: the standard library, relative imports, and the repo's own modules (the
# name of a .py file of the repo or of its directory, or a proto package under proto/,
# which protoc --python_out generates).
PYTHON=/usr/bin/python3
: >"$TMP/missing-py"
grep '\.py$' "$TMP/files" | grep -v '^\.tools/' >"$TMP/pyfiles" || true
if [[ -s $TMP/pyfiles ]]; then
	if [[ ! -x $PYTHON ]]; then
		printf 'python3\t%s\n' "$(head -n 1 "$TMP/pyfiles") (the repo's *.py files)" >>"$TMP/missing-commands"
	else
		need command python3 "the repo's *.py files" "$PYTHON"
		"$PYTHON" - "$TMP/files" "$TMP/pyfiles" >"$TMP/pyimports" <<'PY' || die "$PYTHON could not read the repo's *.py files"
import ast, importlib.util, os, sys
own = set()  # the repo's modules: each .py file's name and directory, and the proto packages
for f in open(sys.argv[1]).read().split():
    parts = f.split("/")
    if f.endswith(".py"):
        own.add(parts[-1][:-3])
        if len(parts) > 1:
            own.add(parts[-2])
    elif parts[0] == "proto" and len(parts) > 2:
        own.add(parts[1])
seen = set()
for f in open(sys.argv[2]).read().split():
    for node in ast.walk(ast.parse(open(f, "rb").read(), f)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in own or name in seen:
                continue
            seen.add(name)
            try:
                spec = importlib.util.find_spec(name)
            except Exception:
                spec = None
            origin = spec and (spec.origin if spec.has_location else next(iter(spec.submodule_search_locations or []), None))
            print("%s\t%s:%d\t%s" % (name, f, node.lineno, origin or ""))
PY
		while IFS=$'\t' read -r mod where origin; do
			if [[ -n $origin && -e $origin ]]; then
				need python-module "$mod" "$where" "$origin"
			else
				printf '%s\t%s\n' "$mod" "$where" >>"$TMP/missing-py"
			fi
		done <"$TMP/pyimports"
	fi
fi

# --- C headers ----------------------------------------------------------------------------

: >"$TMP/missing-pc"
while IFS=$'\t' read -r pkg dir files pcs; do
	cflags=()
	for pc in $pcs; do
		if pcdir=$(pkg-config --variable=pcfiledir "$pc" 2>/dev/null) && [[ -f $pcdir/$pc.pc ]]; then
			need pkg-config-module "$pc" "$pkg" "$pcdir/$pc.pc"
			read -r -a more <<<"$(pkg-config --cflags "$pc")"
			cflags+=("${more[@]}")
		else
			printf '%s\t%s\n' "$pc" "$pkg" >>"$TMP/missing-pc"
		fi
	done
	# Each header on its own: one included only under an #if for another system is
	# not on this one, and is left out (a header the build needs and lacks fails the
	# build on its own).
	(cd "$dir" && grep -hoE '^[[:space:]]*(//)?[[:space:]]*#[[:space:]]*include[[:space:]]*<[^>]+>' $files || true) |
		sed -E 's/.*<([^>]+)>.*/\1/' | sort -u | while IFS= read -r h; do
		printf '#include <%s>\n' "$h" | $CC_CMD "${cflags[@]}" -M -E -xc - 2>/dev/null |
			tr -d '\\' | tr ' ' '\n' | grep '^/' | while IFS= read -r p; do
			need c-header "$p" "$pkg (#include <$h>)" "$p"
		done || true
	done
done <"$TMP/cgo"

# --- which package each file is from --------------------------------------------------------

# candidates prints PATH<TAB>NAME for each name dpkg may know PATH by, best first: as
# given, then resolved (/usr/bin/awk -> /etc/alternatives/awk -> /usr/bin/mawk), each
# also with or without the /usr prefix (Debian 12 merges /bin into /usr/bin, but dpkg
# keeps the names the packages shipped).
candidates() {
	local p
	for p in "$1" "$(realpath -m "$1")"; do
		printf '%s\t%s\n' "$1" "$p"
		case $p in
		/usr/bin/* | /usr/sbin/* | /usr/lib/* | /usr/lib64/*) printf '%s\t%s\n' "$1" "${p#/usr}" ;;
		/bin/* | /sbin/* | /lib/* | /lib64/*) printf '%s\t%s\n' "$1" "/usr$p" ;;
		esac
	done
}
cut -f4 "$NEEDS" | sort -u | while IFS= read -r p; do candidates "$p"; done >"$TMP/candidates"
# dpkg -S prints "pkg[:arch][, pkg...]: /path" for each path it knows, and complains
# about the others.
cut -f2 "$TMP/candidates" | sort -u | tr '\n' '\0' | xargs -0 -r dpkg -S 2>/dev/null |
	sed -nE 's/^([^ :]+(:[a-z0-9]+)?(, [^ :]+(:[a-z0-9]+)?)*): (\/.*)$/\5\t\1/p' >"$TMP/owners" || true

# Installed packages: name, Essential, Priority, hard dependencies.
dpkg-query -W -f='${db:Status-Abbrev}\t${Package}\t${Essential}\t${Priority}\t${Pre-Depends}, ${Depends}\n' >"$TMP/installed"
# "PACKAGE" or "PACKAGE COMMAND": setup.sh installs the package when the command is
# absent, so that command is there whichever package provides it (npm from nodejs).
bash "$ROOT/scripts/setup.sh" --print-packages >"$TMP/setup-list"
[[ -s $TMP/setup-list ]] || die "scripts/setup.sh --print-packages printed nothing"
cut -d ' ' -f1 "$TMP/setup-list" >"$TMP/setup-packages"
awk 'NF > 1 { print $2 }' "$TMP/setup-list" >"$TMP/setup-commands"

# covered: every package accounted for, and why.
awk -F '\t' '
	FNR == NR { listed[$1] = 1; next }
	$1 !~ /^ii/ { next }
	{
		inst[$2] = 1; deps[$2] = $5
		if ($3 == "yes") why[$2] = "Essential"
		else if ($4 == "required") why[$2] = "Priority required"
	}
	END {
		for (p in listed) { why[p] = "scripts/setup.sh"; queue[++n] = p }
		for (i = 1; i <= n; i++) {
			p = queue[i]
			if (!(p in inst)) continue
			m = split(deps[p], ds, ",")
			for (j = 1; j <= m; j++) {
				dep = ds[j]
				if (dep ~ /\|/) continue # alternatives: which one is installed is not sure
				gsub(/\([^)]*\)|:[a-z0-9]+|[ \t]/, "", dep)
				if (dep == "" || (dep in why) || !(dep in inst)) continue
				why[dep] = "dependency of " p; queue[++n] = dep
			}
		}
		for (p in why) printf "%s\t%s\n", p, why[p]
	}
' "$TMP/setup-packages" "$TMP/installed" >"$TMP/covered"

# result: KIND WHAT WHERE PATH PACKAGE WHY, one line per need; WHY is MISSING for a
# package not accounted for, "-" for a file of no package.
awk -F '\t' -v OFS='\t' '
	FILENAME == ARGV[1] { owner[$1] = $2; next }
	FILENAME == ARGV[2] { if (!($1 in pkgs) && ($2 in owner)) pkgs[$1] = owner[$2]; next }
	FILENAME == ARGV[3] { why[$1] = $2; next }
	FILENAME == ARGV[4] { ifabsent[$1] = 1; next }
	{
		if ($1 == "command" && ($2 in ifabsent)) {
			print $1, $2, $3, $4, ($4 in pkgs ? pkgs[$4] : "-"), "scripts/setup.sh (when the command is absent)"
			next
		}
		if (!($4 in pkgs)) { print $1, $2, $3, $4, "-", "-"; next }
		m = split(pkgs[$4], ps, /, /); pkg = ""; reason = "MISSING"
		for (i = 1; i <= m; i++) {
			p = ps[i]; sub(/:[a-z0-9]+$/, "", p)
			if (pkg == "") pkg = p
			if (p in why) { pkg = p; reason = why[p]; break }
		}
		print $1, $2, $3, $4, pkg, reason
	}
' "$TMP/owners" "$TMP/candidates" "$TMP/covered" "$TMP/setup-commands" "$NEEDS" | sort -u >"$TMP/result"

# --- verdict --------------------------------------------------------------------------------

if [[ $verbose == 1 ]]; then
	echo "check-deps: what the build uses, and the Debian package it is from:"
	# One line per command, proto import and pkg-config module; C headers by package.
	sort -t $'\t' -k1,1 -k2,2 "$TMP/result" | awk -F '\t' '
		$1 == "c-header" { if (!(($5) in nh)) { order[++n] = $5; eg[$5] = $2; whyh[$5] = $6 }; if (!seen[$2]++) nh[$5]++; next }
		!seen[$1 FS $2]++ { printf "  %-17s %-32s %-18s %s (%s)\n", $1, $2, ($5 == "-" ? "no package" : $5), $6, $3 }
		END { for (i = 1; i <= n; i++) { p = order[i]; printf "  %-17s %-32s %-18s %s (e.g. %s)\n", "c-headers", nh[p] " files", p, whyh[p], eg[p] } }
	'
fi

failed=0
if [[ -s $TMP/missing-commands ]]; then
	failed=1
	while IFS=$'\t' read -r cmd where; do
		echo "check-deps: command '$cmd' ($where) is not installed: add the package that provides it to scripts/setup.sh" >&2
	done <"$TMP/missing-commands"
fi
if [[ -s $TMP/missing-imports ]]; then
	failed=1
	while IFS=$'\t' read -r imp where; do
		echo "check-deps: $where imports \"$imp\", which is in no file of the repo and not in protoc's include directory (${PROTOC_INCLUDE:-protoc not found}): add the package that provides it to scripts/setup.sh" >&2
	done <"$TMP/missing-imports"
fi
if [[ -s $TMP/missing-py ]]; then
	failed=1
	while IFS=$'\t' read -r mod where; do
		echo "check-deps: $where imports $mod, which $PYTHON cannot import: add the python3-* package that provides it to scripts/setup.sh" >&2
	done <"$TMP/missing-py"
fi
if [[ -s $TMP/missing-pc ]]; then
	failed=1
	while IFS=$'\t' read -r pc where; do
		echo "check-deps: $where needs the pkg-config module $pc, which pkg-config does not find: add the package that provides it (its -dev package) to scripts/setup.sh" >&2
	done <"$TMP/missing-pc"
fi
mapfile -t missing < <(awk -F '\t' '$6 == "MISSING" { print $5 }' "$TMP/result" | sort -u)
for pkg in "${missing[@]}"; do
	failed=1
	echo "check-deps: $pkg is installed here but scripts/setup.sh does not install it; a fresh machine lacks it. Used for:" >&2
	awk -F '\t' -v pkg="$pkg" '$5 == pkg && $6 == "MISSING" && n++ < 5 { printf "  %s %s (%s)\n", $1, $2, $3 }
		END { if (n > 5) printf "  ... and %d more\n", n - 5 }' "$TMP/result" >&2
done
if ((${#missing[@]} > 0)); then
	echo "check-deps: add to the want list in scripts/setup.sh: ${missing[*]}" >&2
fi
if ((failed)); then
	exit 1
fi

count() { awk -F '\t' -v k="$1" '$1 == k { print $2 }' "$TMP/result" | sort -u | wc -l; }
echo "check-deps: ok: $(count command) commands, $(count proto-import) proto imports, $(count python-module) Python modules, $(count c-header) C headers and $(count pkg-config-module) pkg-config modules come from packages scripts/setup.sh installs ($(wc -l <"$TMP/setup-packages") listed, with their dependencies), from Essential or required ones, or from no package (Go, buf in .tools/)"
