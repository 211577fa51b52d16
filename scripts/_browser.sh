# Sourced by scripts/test: the browser tests drive Debian's Chromium (never `playwright install`).
# Installed here when missing, only as root on a machine with apt-get (a fresh CI machine); elsewhere the
# browser tests skip and say why.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests…" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "could not install chromium: the browser tests will be skipped" >&2
fi
