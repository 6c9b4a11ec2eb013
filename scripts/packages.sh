# Sourced by scripts/test and scripts/quickstart: make sure Debian packages
# are installed, installing the missing ones (as root, or through sudo).

# ensure_packages PACKAGE...
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || {
      echo "missing packages: ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
      return 1
    }
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# What building needs: sequoia-openpgp's OpenSSL backend runs bindgen.
BUILD_PACKAGES=(gcc libssl-dev pkg-config libclang-dev)

# What the tests drive: the real ssh, sshd, gpg, git, a D-Bus session with
# gnome-keyring, the keyutils session keyring, systemd's tools, and python3
# (its plistlib checks the launchd property list).
TEST_PACKAGES=(openssh-client openssh-server gnupg git dbus dbus-daemon gnome-keyring
  keyutils systemd util-linux procps python3)
