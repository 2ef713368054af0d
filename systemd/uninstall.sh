#!/usr/bin/env bash
# Remove what systemd/install.sh installed:
#
#   systemd/uninstall.sh [--root DIR] [--purge]
#
# Stops and disables every dicom-agent@NAME instance (those with a profile in /etc/dicom-agent and
# those systemd knows), removes the unit and /opt/dicom-agent. Profiles (/etc/dicom-agent) and data
# (/var/lib/dicom-agent: the database, received and acquired images not yet sent) are KEPT, as is the
# user: installing again picks up where the agent stopped. --purge removes those too, after saying
# what it removes. Running it again when nothing is left is not an error.
#
# A scratch root (--root DIR, or DESTDIR=DIR) removes the files under DIR and runs neither systemctl
# nor userdel/groupdel: it prints what it would run.
set -euo pipefail

PREFIX=/opt/dicom-agent
UNIT_NAME=dicom-agent@.service
USER_NAME=dicom-agent

say() { printf 'uninstall.sh: %s\n' "$*"; }
die() { printf 'uninstall.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { printf 'usage: %s [--root DIR] [--purge]\n  --purge  also delete /etc/dicom-agent, /var/lib/dicom-agent (all data!) and the user and group\n' "$0"; }

ROOT="${DESTDIR:-}"
PURGE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --root) [ $# -ge 2 ] || { usage >&2; exit 2; }; ROOT="$2"; shift 2 ;;
    --root=*) ROOT="${1#*=}"; shift ;;
    --purge) PURGE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) printf 'uninstall.sh: unknown argument %s\n' "$1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || die "no such root folder: $ROOT"
  ROOT="$(cd "$ROOT" && pwd)"
  [ "$ROOT" != / ] || ROOT=""
fi
host() { if [ -n "$ROOT" ]; then say "would run: $*"; else "$@"; fi; }
if [ -z "$ROOT" ]; then
  [ "$(id -u)" -eq 0 ] || die "run as root (or give --root DIR)"
fi

# --- instances ---------------------------------------------------------------------------------------
instances=()
for profile in "$ROOT"/etc/dicom-agent/*.toml; do
  [ -f "$profile" ] && instances+=("dicom-agent@$(basename "$profile" .toml).service")
done
if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  while read -r unit _; do
    [[ "$unit" == dicom-agent@?*.service ]] && instances+=("$unit")
  done < <(systemctl list-units --all --plain --no-legend 'dicom-agent@*.service' 2>/dev/null || true)
fi
if [ ${#instances[@]} -gt 0 ]; then
  mapfile -t instances < <(printf '%s\n' "${instances[@]}" | sort -u)
  say "stopping and disabling ${instances[*]}"
  host systemctl disable --now "${instances[@]}" || say "systemctl could not stop every instance (continuing)"
else
  say "no instance to stop"
fi

# --- program, unit, documentation ----------------------------------------------------------------------
if [ -e "$ROOT/etc/systemd/system/$UNIT_NAME" ]; then
  say "removing the unit /etc/systemd/system/$UNIT_NAME"
  rm -f "$ROOT/etc/systemd/system/$UNIT_NAME"
  host systemctl daemon-reload
else
  say "no unit installed"
fi
if [ -e "$ROOT$PREFIX" ]; then
  say "removing $PREFIX (program and documentation)"
  rm -rf "$ROOT$PREFIX"
else
  say "no $PREFIX"
fi

# --- profiles, data, user --------------------------------------------------------------------------------
if [ -z "$PURGE" ]; then
  [ -d "$ROOT/etc/dicom-agent" ] && say "kept the profiles in /etc/dicom-agent (--purge deletes them)"
  [ -d "$ROOT/var/lib/dicom-agent" ] && say "kept the data in /var/lib/dicom-agent (--purge deletes it)"
  say "kept the user $USER_NAME"
  say "done"
  exit 0
fi
for dir in /etc/dicom-agent /var/lib/dicom-agent /run/dicom-agent; do
  if [ -e "$ROOT$dir" ]; then
    say "--purge: deleting $dir"
    rm -rf "$ROOT$dir"
  fi
done
if [ -n "$ROOT" ] || getent passwd "$USER_NAME" >/dev/null; then
  say "--purge: deleting the user $USER_NAME"
  host userdel "$USER_NAME"
fi
if [ -n "$ROOT" ] || getent group "$USER_NAME" >/dev/null; then
  say "--purge: deleting the group $USER_NAME"
  host groupdel "$USER_NAME" || true
fi
say "done"
