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
  [openssl]=openssl
  [/usr/bin/convert]=imagemagick
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

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/postern-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo test --workspace --all-targets "$@"
