#!/usr/bin/env bash
# System packages the gateway (run) and its tests (test) need. Installed with apt when we are
# root and they are missing; otherwise a clear message says what to install.
set -euo pipefail
what=${1:-run}

# convert-pdf (mailmoat.convert): LibreOffice without its GUI, the UNO bridge for the system
# Python, and poppler (pdftoppm) to re-render PDFs from pixels.
convert_pkgs=(libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui
              libreoffice-draw-nogui python3-uno poppler-utils)
run_pkgs=(libmagic1 "${convert_pkgs[@]}")
# LibreOffice also writes the legacy Office fixtures the detection tests encrypt
# (tests/detection: .doc/.xls with a password).
test_pkgs=(libmagic1 clamav-daemon zip unzip chromium fonts-noto-cjk fonts-noto-color-emoji rspamd
           "${convert_pkgs[@]}")

pkgs=("${run_pkgs[@]}")
[ "$what" = test ] && pkgs=("${test_pkgs[@]}")

# ClamAV signatures for `make run`'s private clamd (mailmoat.local.clamd), when ClamAV is there
# and we are root. Never a reason to fail, and bounded: offline, freshclam would retry for ~40 s,
# so a name lookup (fails at once without DNS) decides first, and `timeout` caps the download.
update_signatures() {
  [ "$(id -u)" = 0 ] && command -v freshclam >/dev/null 2>&1 || return 0
  timeout 3 getent ahosts database.clamav.net >/dev/null 2>&1 || {
    echo "system-deps: ClamAV signatures not updated (database.clamav.net unreachable)"; return 0; }
  timeout "${MAILMOAT_FRESHCLAM_SECONDS:-120}" freshclam --quiet >/dev/null 2>&1 \
    || echo "system-deps: freshclam failed or took too long; ClamAV signatures not updated"
  return 0
}
[ "$what" = run ] && update_signatures

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # clamav-daemon's service would start freshclam/clamd with the distro config; tests run their own.
  # rspamd's would hold 11333/11334; the rspamd tests and bench-peers start their own on loopback.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now clamav-daemon clamav-freshclam rspamd >/dev/null 2>&1 || true; fi
else
  echo "system-deps: missing packages: ${missing[*]}" >&2
  echo "  install them with: sudo apt-get install ${missing[*]}" >&2
  [ "$what" = run ] && exit 1
  echo "  (tests that need them will be skipped)" >&2
fi
