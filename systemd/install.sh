#!/usr/bin/env bash
# Install dicom-agent as a systemd service on Debian 12, one instance per profile:
#
#   systemd/install.sh [OPTIONS] NAME
#
# What it does (each step prints one progress line; running it again changes nothing that exists,
# except the program, the unit and the documentation, which it brings up to date):
#   - a system user and group `dicom-agent` (no login, no home);
#   - a virtual environment in /opt/dicom-agent with the project installed from this checkout (or from
#     --wheel FILE); the unit runs /opt/dicom-agent/bin/dicom-agent;
#   - the documentation in /opt/dicom-agent/share/doc (the unit's Documentation= points there);
#   - /etc/dicom-agent/NAME.toml from a shipped profile (profiles/*.toml), its data_dir set to
#     /var/lib/dicom-agent/NAME; an existing profile is never overwritten;
#   - the data folder /var/lib/dicom-agent/NAME (owner dicom-agent, mode 0750: the service and the
#     administrators in its group, who may run `dicom-agent status`);
#   - the template unit /etc/systemd/system/dicom-agent@.service, then `systemctl enable dicom-agent@NAME`
#     (and start it with --now).
#
# A scratch root (--root DIR, or DESTDIR=DIR in the environment) lays the same files out under DIR and
# runs neither useradd/groupadd, chown, nor systemctl: it prints what it would run instead.
#
# Exit status: 0 done; 2 usage; 1 a step failed (the message says which and why).
set -euo pipefail

PREFIX=/opt/dicom-agent
UNIT_NAME=dicom-agent@.service
USER_NAME=dicom-agent
SRC="$(cd "$(dirname "$0")/.." && pwd)"

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() {
  cat <<EOF
usage: $0 [--root DIR] [--profile SHIPPED|FILE] [--python PY] [--wheel FILE | --no-venv] [--now] [--no-enable] NAME

  NAME              the instance: /etc/dicom-agent/NAME.toml, dicom-agent@NAME (letters, digits, - _ .)
  --profile P       the profile to start from: a shipped one ($(cd "$SRC/profiles" && ls ./*.toml | sed 's#^\./##; s#\.toml$##' | paste -sd, -))
                    or a TOML file; default: the shipped profile called NAME, else "default"
  --root DIR        install under DIR (also DESTDIR=DIR): no user, chown or systemctl, only what would run
  --python PY       the Python (3.11 or later) for the virtual environment [python3]
  --wheel FILE      install this wheel instead of the checkout at $SRC
  --no-venv         no virtual environment: $PREFIX/bin/dicom-agent runs "PY -m agent", and PY must
                    already import the project (a development install; used by the tests)
  --now             start the instance too (systemctl enable --now)
  --no-enable       install everything but leave the instance disabled
EOF
}

ROOT="${DESTDIR:-}"
PROFILE=""
PYTHON=python3
WHEEL=""
VENV=1
ENABLE=1
NOW=""
NAME=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { usage >&2; exit 2; }; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --profile) [ $# -ge 2 ] || { usage >&2; exit 2; }; PROFILE="$2"; shift 2 ;;
    --python) [ $# -ge 2 ] || { usage >&2; exit 2; }; PYTHON="$2"; shift 2 ;;
    --wheel) [ $# -ge 2 ] || { usage >&2; exit 2; }; WHEEL="$2"; shift 2 ;;
    --no-venv) VENV=""; shift ;;
    --now) NOW=1; shift ;;
    --no-enable) ENABLE=""; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) printf 'install.sh: unknown option %s\n' "$1" >&2; usage >&2; exit 2 ;;
    *) [ -z "$NAME" ] || { printf 'install.sh: one NAME only (got %s and %s)\n' "$NAME" "$1" >&2; exit 2; }
       NAME="$1"; shift ;;
  esac
done
[ -n "$NAME" ] || { usage >&2; exit 2; }
# The name becomes a file name, a folder name and a systemd instance name: keep it to safe characters.
[[ "$NAME" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || { printf 'install.sh: NAME must be letters, digits, "-", "_" or "." (at most 64), got %q\n' "$NAME" >&2; exit 2; }
[ -z "$WHEEL" ] || [ -n "$VENV" ] || { printf 'install.sh: --wheel needs the virtual environment (drop --no-venv)\n' >&2; exit 2; }
[ -z "$NOW" ] || [ -n "$ENABLE" ] || { printf 'install.sh: --now and --no-enable contradict each other\n' >&2; exit 2; }
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT" || die "cannot create the root $ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != / ] || ROOT=""
fi

# Run a command that changes the host's users or services; under a scratch root only say it.
host() {
  if [ -n "$ROOT" ]; then say "would run: $*"; else "$@"; fi
}

# --- checks before changing anything -----------------------------------------------------------------
if [ -z "$PROFILE" ]; then
  if [ -f "$SRC/profiles/$NAME.toml" ]; then PROFILE="$NAME"; else PROFILE=default; fi
fi
if [ -f "$SRC/profiles/$PROFILE.toml" ]; then
  PROFILE_FILE="$SRC/profiles/$PROFILE.toml"
elif [ -f "$PROFILE" ]; then
  PROFILE_FILE="$PROFILE"
else
  die "no profile $PROFILE: neither a shipped one ($SRC/profiles/$PROFILE.toml) nor a file"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "no Python called $PYTHON (install python3, or give --python)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])'); dicom-agent needs 3.11 or later"
if [ -n "$VENV" ] && [ -z "$WHEEL" ]; then
  [ -f "$SRC/pyproject.toml" ] || die "$SRC is not a dicom-agent checkout (no pyproject.toml); give --wheel FILE"
fi
[ -z "$WHEEL" ] || [ -f "$WHEEL" ] || die "no wheel at $WHEEL"
if [ -z "$ROOT" ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root (or give --root DIR to lay the files out in a scratch folder)"
  command -v systemctl >/dev/null 2>&1 || die "systemctl not found: this installs a systemd service"
  command -v useradd >/dev/null 2>&1 || die "useradd not found (Debian package passwd)"
fi

# --- user and group ------------------------------------------------------------------------------------
if [ -z "$ROOT" ] && getent group "$USER_NAME" >/dev/null; then
  say "group $USER_NAME exists"
else
  say "creating the system group $USER_NAME"
  host groupadd --system "$USER_NAME"
fi
if [ -z "$ROOT" ] && getent passwd "$USER_NAME" >/dev/null; then
  say "user $USER_NAME exists"
else
  say "creating the system user $USER_NAME (no login; device groups come from the unit)"
  host useradd --system --gid "$USER_NAME" --home-dir /var/lib/dicom-agent --no-create-home \
    --shell /usr/sbin/nologin --comment "DICOM agent" "$USER_NAME"
fi

# --- the program -----------------------------------------------------------------------------------------
P="$ROOT$PREFIX"
mkdir -p "$P/bin" "$P/share/doc"
if [ -n "$VENV" ]; then
  if [ -x "$P/bin/python" ]; then
    say "virtual environment $PREFIX exists"
  else
    say "creating the virtual environment $PREFIX"
    rm -f "$P/bin/dicom-agent"  # a --no-venv wrapper from an earlier run
    "$PYTHON" -m venv "$P" || die "python -m venv failed (Debian: apt-get install python3-venv)"
  fi
  say "installing dicom-agent from ${WHEEL:-$SRC} into $PREFIX"
  "$P/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "${WHEEL:-$SRC}" \
    || die "pip install failed (see above)"
  # A venv built under a scratch root has that root in its scripts' #! lines: fine for CI, which
  # only looks at the layout; a real install has ROOT empty.
else
  say "no virtual environment: $PREFIX/bin/dicom-agent runs $PYTHON -m agent"
  "$PYTHON" -c 'import agent' 2>/dev/null || die "$PYTHON cannot import the project (install it first, or drop --no-venv)"
  PY_ABS="$(command -v "$PYTHON")"
  printf '#!/bin/sh\n# Written by systemd/install.sh --no-venv: the agent from %s.\nexec %s -m agent "$@"\n' \
    "$PY_ABS" "$PY_ABS" >"$P/bin/dicom-agent.new"
  chmod 0755 "$P/bin/dicom-agent.new"
  mv -f "$P/bin/dicom-agent.new" "$P/bin/dicom-agent"
fi
say "installing the documentation into $PREFIX/share/doc"
install -m 0644 "$SRC/README.md" "$P/share/doc/README.md"
for doc in "$SRC"/docs/*.md "$SRC"/systemd/README.md; do
  [ -f "$doc" ] || continue
  case "$doc" in */systemd/README.md) target=systemd.md ;; *) target="$(basename "$doc")" ;; esac
  install -m 0644 "$doc" "$P/share/doc/$target"
done

# --- the profile -----------------------------------------------------------------------------------------
ETC="$ROOT/etc/dicom-agent"
DATA=/var/lib/dicom-agent/$NAME
install -d -m 0750 "$ETC"
host chgrp "$USER_NAME" /etc/dicom-agent
if [ -e "$ETC/$NAME.toml" ]; then
  say "profile /etc/dicom-agent/$NAME.toml exists: kept as it is"
else
  say "writing /etc/dicom-agent/$NAME.toml from $PROFILE_FILE (data_dir = $DATA)"
  # The first data_dir line is replaced (the [agent] section); without one, it is added under [agent].
  awk -v data="$DATA" -v from="$PROFILE_FILE" '
    BEGIN { print "# Installed by systemd/install.sh from " from "; edit freely, install.sh never overwrites it." }
    !done && /^[ \t]*data_dir[ \t]*=/ { print "data_dir = \"" data "\"   # the unit'"'"'s StateDirectory"; done = 1; next }
    { print }
    END { if (!done) exit 3 }
  ' "$PROFILE_FILE" >"$ETC/$NAME.toml.new" || {
    # No data_dir line: insert one right after [agent] (or add the section).
    if grep -q '^[[:space:]]*\[agent\]' "$PROFILE_FILE"; then
      awk -v data="$DATA" -v from="$PROFILE_FILE" '
        BEGIN { print "# Installed by systemd/install.sh from " from "; edit freely, install.sh never overwrites it." }
        { print } !done && /^[ \t]*\[agent\]/ { print "data_dir = \"" data "\""; done = 1 }' \
        "$PROFILE_FILE" >"$ETC/$NAME.toml.new"
    else
      { printf '# Installed by systemd/install.sh from %s; edit freely, install.sh never overwrites it.\n[agent]\ndata_dir = "%s"\n\n' \
          "$PROFILE_FILE" "$DATA"; cat "$PROFILE_FILE"; } >"$ETC/$NAME.toml.new"
    fi
  }
  chmod 0640 "$ETC/$NAME.toml.new"
  mv "$ETC/$NAME.toml.new" "$ETC/$NAME.toml"
  host chgrp "$USER_NAME" "/etc/dicom-agent/$NAME.toml"
fi
if [ -z "$ROOT" ]; then
  # The profile must load before the unit is enabled: a typo found now, not at the next boot.
  "$PREFIX/bin/dicom-agent" check-profile "/etc/dicom-agent/$NAME.toml" >/dev/null \
    || die "/etc/dicom-agent/$NAME.toml does not load (see above); fix it and run install.sh again"
  say "profile /etc/dicom-agent/$NAME.toml loads"
fi

# --- the data folder -------------------------------------------------------------------------------------
install -d -m 0755 "$ROOT/var/lib/dicom-agent"
if [ -d "$ROOT$DATA" ]; then
  say "data folder $DATA exists: kept"
else
  say "creating the data folder $DATA (mode 0750)"
fi
install -d -m 0750 "$ROOT$DATA"
host chown "$USER_NAME:$USER_NAME" "$DATA"

# --- the unit --------------------------------------------------------------------------------------------
say "installing the unit /etc/systemd/system/$UNIT_NAME"
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$SRC/systemd/$UNIT_NAME" "$ROOT/etc/systemd/system/$UNIT_NAME"
host systemctl daemon-reload
if [ -n "$ENABLE" ]; then
  say "enabling dicom-agent@$NAME${NOW:+ and starting it}"
  host systemctl enable ${NOW:+--now} "dicom-agent@$NAME.service"
else
  say "not enabling dicom-agent@$NAME (--no-enable): systemctl enable --now dicom-agent@$NAME when ready"
fi
say "done: dicom-agent@$NAME; logs: journalctl -u dicom-agent@$NAME -f; live view: $PREFIX/bin/dicom-agent status --profile /etc/dicom-agent/$NAME.toml --watch"
