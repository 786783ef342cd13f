#!/usr/bin/env bash
# Put a built bundle in the user's applications menu (no root needed):
#   packaging/linux/install.sh [BUNDLE_DIR]      (default: dist/mistudio)
#   packaging/linux/install.sh --uninstall
# The bundle stays where it is (a USB stick works); the entry points at it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
icons="${XDG_DATA_HOME:-$HOME/.local/share}/icons/hicolor"
if [[ "${1:-}" == "--uninstall" ]]; then
    rm -f "$apps/mistudio.desktop"
    find "$icons" -path '*/apps/mistudio.png' -delete 2>/dev/null || true
    echo "miStudio removed from the applications menu (the bundle itself was not touched)."
    exit 0
fi
bundle="$(cd "${1:-$here/../../dist/mistudio}" 2>/dev/null && pwd)" || {
    echo "error: no bundle at ${1:-dist/mistudio}. Build it first: packaging/build.sh" >&2; exit 2; }
if [[ ! -x "$bundle/mistudio" ]]; then
    echo "error: $bundle has no mistudio executable. Build it first: packaging/build.sh" >&2
    exit 2
fi
mkdir -p "$apps"
for png in "$here"/../../resources/icons/hicolor/*/apps/mistudio.png; do
    size="$(basename "$(dirname "$(dirname "$png")")")"
    mkdir -p "$icons/$size/apps"
    cp "$png" "$icons/$size/apps/mistudio.png"
done
tmp="$apps/.mistudio.desktop.tmp"
sed "s|@BUNDLE@|$bundle|g" "$here/mistudio.desktop" > "$tmp"
mv "$tmp" "$apps/mistudio.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$apps" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$icons" || true
echo "miStudio is in the applications menu ($apps/mistudio.desktop -> $bundle/mistudio)."
