#!/usr/bin/env bash
# README check: runs README.md's shell blocks (```sh) in order, in one shell, as a new user
# pastes them, and fails on the first command that fails. The test command runs it, so the
# README stays true.
#
#   scripts/readme-check.sh [README.md] [custos binary]     (default: target/debug/custos)
#
# What it substitutes, and nothing else:
#   - `custos` is the binary under test rather than `cargo run` (README's `alias` line is
#     left as it is: aliases do not expand in a script, so the function below wins);
#   - ports 8200, 8201, 8210, 9464, 29510, 2321 and 2322 become free ports (README's may be
#     taken here);
#   - the absolute paths /var/lib/custos, /var/lib/fw, /etc/custos and /tmp/ become folders of
#     a scratch directory, where every command runs;
#   - a line whose comment begins `# fails` must fail: it runs as `if LINE; then exit 1; fi`.
# It runs README's first command itself (the dev server, with the ports above) before the first
# block, and stops it at `<!-- readme-check: stop the dev server -->`; a block right after
# `<!-- readme-check: skip (why) -->` is not run (the two set-up commands, the benchmark).
# Background jobs a block starts (`&`) are stopped at the end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
readme=$(realpath "${1:-$root/README.md}")
bin=$(realpath "${2:-$root/target/debug/custos}")
[ -x "$bin" ] || { echo "readme-check: no custos binary at $bin (cargo build first)" >&2; exit 2; }

work=$(mktemp -d /tmp/custos-readme.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P8200=$(free_port) P8201=$(free_port) P8210=$(free_port) P9464=$(free_port) P29510=$(free_port)
P2321=$(free_port); P2322=$((P2321 + 1))

# The blocks, with the substitutions, as one script.
python3 - "$readme" "$work" "$P8200" "$P8201" "$P8210" "$P9464" "$P29510" "$P2321" "$P2322" > "$work/readme.sh" <<'PY'
import re, sys
readme, work, p8200, p8201, p8210, p9464, p29510, p2321, p2322 = sys.argv[1:]
lines = open(readme).read().split("\n")
ports = {"8200": p8200, "8201": p8201, "8210": p8210, "9464": p9464, "29510": p29510,
         "2321": p2321, "2322": p2322}
def subst(line):
    for old, new in ports.items():
        line = re.sub(r"(?<=[:=])%s\b" % old, new, line)
    # One pass, so a substituted path (under /tmp) is not substituted again.
    return re.sub(r"(?<![\w./-])(/var/lib/custos\b|/var/lib/fw\b|/etc/custos\b|/tmp/)", lambda m: work + m.group(1), line)
out, i, skip, prev = [], 0, False, ""
while i < len(lines):
    l = lines[i]
    if l.strip().startswith("<!-- readme-check: skip"):
        skip = True
    elif l.strip() == "<!-- readme-check: stop the dev server -->":
        out.append('echo "== README.md:%d: stopping the dev server"' % (i + 1))
        out.append("stop_dev_server")
    elif l.strip() == "```sh":
        start = i + 1
        i += 1
        block = []
        while i < len(lines) and lines[i].strip() != "```":
            block.append(lines[i])
            i += 1
        if skip:
            skip = False
        else:
            out.append('echo "== README.md:%d"' % start)
            heredoc = None
            for n, b in enumerate(block):
                b = subst(b)
                if heredoc is None:
                    m = re.search(r"<<-?\s*'?(\w+)'?", b)
                    if m:
                        heredoc = m.group(1)
                    fm = re.match(r"^(.*\S)\s+# fails\b.*$", b)
                    if fm and heredoc is None:
                        b = ('if %s; then echo "README.md:%d: this must fail and did not" >&2; exit 1; fi'
                             % (fm.group(1), start + n + 1))
                elif b.strip() == heredoc:
                    heredoc = None
                out.append(b)
    elif l.strip() and not l.strip().startswith("<!--"):
        skip = False
    i += 1
print("\n".join(out))
PY

mkdir -p "$work/var/lib" "$work/etc/custos" "$work/tmp"
cat > "$work/run.sh" <<EOF
set -eo pipefail
custos() { "$bin" "\$@"; }
export -f custos 2>/dev/null || true
export CUSTOS_BIN="$bin"
dev_pid=
stop_dev_server() {
  [ -n "\$dev_pid" ] || return 0
  kill -TERM "\$dev_pid"; wait "\$dev_pid" || true; dev_pid=
}
cleanup() { stop_dev_server; for j in \$(jobs -p); do pkill -TERM -P "\$j" 2>/dev/null || true; kill "\$j" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
# README's first command, with the free ports.
"$bin" server --dev --dev-root-token-id root --dev-listen-address 127.0.0.1:$P8200 \
  --dev-sbi-address 127.0.0.1:$P29510 > "$work/dev-server.log" 2>&1 &
dev_pid=\$!
for _ in \$(seq 100); do
  curl -s -o /dev/null "http://127.0.0.1:$P8200/v1/sys/health" && break
  sleep 0.1
done
cd "$work"
set -x
source "$work/readme.sh"
EOF

echo "readme-check: running the shell blocks of $readme in $work"
if (cd "$work" && bash "$work/run.sh") > "$work/output.log" 2>&1; then
  echo "readme-check: OK ($(grep -c '^== README.md:' "$work/output.log" || true) blocks)"
  rm -rf "$work"
else
  rc=$?
  echo "readme-check: FAILED (exit $rc); the last 60 lines of $work/output.log:" >&2
  tail -n 60 "$work/output.log" >&2
  echo "--- dev server log (last 20 lines)" >&2
  tail -n 20 "$work/dev-server.log" >&2 || true
  exit 1
fi
