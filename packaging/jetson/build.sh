#!/usr/bin/env bash
# Build the miStudio bundle on a Jetson board (JetPack 6, aarch64) with NVIDIA's PyTorch wheel.
#   packaging/jetson/build.sh /path/to/torch-<version>-cp310-cp310-linux_aarch64.whl
set -euo pipefail
wheel="${1:-}"
if [[ "$(uname -m)" != "aarch64" ]]; then
    echo "error: this script is for Jetson boards (aarch64); on a desktop run packaging/build.sh" >&2
    exit 2
fi
if [[ ! -f /etc/nv_tegra_release ]]; then
    echo "error: no /etc/nv_tegra_release: this does not look like a JetPack system." >&2
    exit 2
fi
if [[ -z "$wheel" || ! -f "$wheel" ]]; then
    echo "error: pass NVIDIA's PyTorch wheel for your JetPack (see packaging/jetson/README.md)." >&2
    exit 2
fi
command -v tegrastats >/dev/null || echo "note: tegrastats not found: the system monitor will show CPU and RAM only."
here="$(cd "$(dirname "$0")" && pwd)"
TORCH_WHEEL="$wheel" exec "$here/../build.sh"
