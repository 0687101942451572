#!/usr/bin/env bash
# Runs Postern's whole test suite. Installs the Debian packages the tests need
# when they are missing (needs root or sudo for that). Build products go to a
# cargo target dir outside the clone so repeated runs reuse them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive for real (command -> package; a key may be an
# absolute path for programs outside a non-root PATH, such as /usr/sbin/sshd).
declare -A needed=(
  [oathtool]=oathtool
  [sqlite3]=sqlite3
  [/usr/sbin/sshd]=openssh-server
  [ssh]=openssh-client
  [scp]=openssh-client
  [sftp]=openssh-client
  [ssh-keygen]=openssh-client
  [ssh-keyscan]=openssh-client
  [unshare]=util-linux
  [nsenter]=util-linux
  [/usr/sbin/useradd]=passwd
  [/usr/sbin/chpasswd]=passwd
  [asciinema]=asciinema
  [/usr/sbin/xrdp]=xrdp
  [/usr/sbin/xrdp-sesman]=xrdp
  [/usr/lib/xorg/Xorg]=xorgxrdp
  [/etc/X11/xrdp/xorg.conf]=xorgxrdp
  [xfreerdp]=freerdp2-x11
  [Xvfb]=xvfb
  [xwd]=x11-apps
  [xdotool]=xdotool
  [openssl]=openssl
  [/usr/bin/convert]=imagemagick
  [/usr/bin/chromium]=chromium
  [node]=nodejs
  [npm]=npm
  [script]=bsdutils
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || [ -e "$cmd" ] || missing+=("${needed[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Browser tests (tests/web_ui.rs): playwright-core from the lockfile, driving
# Debian's chromium (no browser download). The web console itself is built by
# web/build.rs during cargo build.
(cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error && cp package-lock.json node_modules/.postern-lock)

# schemathesis (PyPI, pinned) fuzzes the API from its OpenAPI document in
# tests/web_ui.rs; it lives in its own virtualenv.
ST_VENV="$HOME/.cache/postern-schemathesis"
ST_VERSION=4.32.5
if ! "$ST_VENV/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; then
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-venv
  fi
  rm -rf "$ST_VENV"
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postern-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --all-targets "$@"
