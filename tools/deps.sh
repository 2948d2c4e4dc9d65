#!/bin/sh
# Makes sure the Debian packages the build needs are installed.
# Usage: deps.sh DEB... -- PKGCONFIG_NAME... [-- COMMAND...]
# (commands default to: sqlite3 python3 openssl; py:MODULE is a Python module,
# /ABSOLUTE/PATH an executable outside PATH)
# As root it installs what is missing; otherwise it prints the apt command.
debs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do debs="$debs $1"; shift; done
[ "$1" = "--" ] && shift
pkgs=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do pkgs="$pkgs $1"; shift; done
cmds="sqlite3 python3 openssl"
if [ "$1" = "--" ]; then shift; cmds="$*"; fi
missing=""
if [ -n "$pkgs" ]; then
    if command -v pkg-config >/dev/null 2>&1; then
        for p in $pkgs; do pkg-config --exists "$p" || missing="$missing $p"; done
    else
        missing="pkg-config"
    fi
fi
# The interpreter tests/run.sh uses: Debian's, when there is one.
if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=python3; fi
for c in $cmds; do
    case "$c" in
    py:*) "$py" -c "import ${c#py:}" >/dev/null 2>&1 || missing="$missing $c" ;;
    /*) [ -x "$c" ] || missing="$missing $c" ;;
    *) command -v "$c" >/dev/null 2>&1 || missing="$missing $c" ;;
    esac
done
[ -z "$missing" ] && exit 0
echo "flairgw: missing:$missing" >&2
if [ "$(id -u)" = "0" ]; then
    echo "flairgw: installing Debian packages:$debs" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq $debs >&2 || exit 1
else
    echo "flairgw: run as root:  apt-get install -y$debs" >&2
    exit 1
fi
