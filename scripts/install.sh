#!/usr/bin/env bash
# Install what the local stack and the tests need, on Debian 12 as root. Idempotent and fast
# when nothing changed: apt runs only for missing packages, pip only when the requirements
# changed since the last successful install (stamp file .venv/.installed).
set -euo pipefail

cd "$(dirname "$0")/.."

# chromium: the results page is tested in a real headless browser (driven by Playwright).
APT_PACKAGES=(ceph-mon ceph-osd radosgw ffmpeg python3-venv chromium prometheus podman runc mmdebstrap)
# face_recognition's metadata asks for "dlib", which would compile from source; dlib-bin
# (requirements.txt) is the same library prebuilt, so face_recognition goes in without deps.
FACE_RECOGNITION="face_recognition==1.3.0"
VENV=.venv
STAMP="$VENV/.installed"

say() { printf 'install: %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        say "missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
        exit 1
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi

want=$(cat pyproject.toml requirements.txt requirements-dev.txt functions/face-recognition/requirements.txt <(echo "$FACE_RECOGNITION") <("$VENV/bin/python" --version) |
    sha256sum | cut -d' ' -f1)
if [[ -f $STAMP && $(cat "$STAMP") == "$want" ]]; then
    exit 0
fi
say "pip install -r requirements-dev.txt (into $VENV)"
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
"$VENV/bin/python" -m pip install --quiet --no-deps "$FACE_RECOGNITION"
# The project itself, editable: facepipe (runtime) and facepipe_tools, and their commands.
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation --editable .
echo "$want" >"$STAMP"
say "done"
