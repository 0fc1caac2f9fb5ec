#!/usr/bin/env bash
# Puts ONNX Runtime's C/C++ API headers where xmodelkd_ros.sparse.ort_ops looks for them
# (default: <venv>/include/onnxruntime), so the custom-op library of the fused CPU graph
# can be built. The pip wheel of onnxruntime ships no headers; ONNX Runtime's release
# archives do (point XMODELKD_ORT_INCLUDE at their include/ instead of running this).
# Here they come from the npm registry: the Unity plugin package named below carries
# ONNX Runtime's official headers (C API version 29, MIT) inside its iOS framework, and
# headers are platform-independent. Only the headers are kept (the package is ~150 MB).
#
# Usage: scripts/fetch_ort_headers.sh [DEST]. Exit 0 with the headers in DEST, else 1
# with one line saying why (the caller decides whether that matters: setup_env.sh warns).
set -euo pipefail
DEST=""
if [ -n "${1:-}" ]; then
    DEST=$(realpath -m "$1")  # relative to the caller's directory
fi
cd "$(dirname "$0")/.."
DEST=${DEST:-${VENV:-.venv}/include/onnxruntime}
PACKAGE=${ORT_HEADERS_NPM_PACKAGE:-com.github.asus4.onnxruntime@0.4.9}
INNER='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64_x86_64-simulator/onnxruntime.framework/Headers'

if [ -f "$DEST/onnxruntime_cxx_api.h" ]; then
    echo "ONNX Runtime headers already in $DEST"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "fetch_ort_headers: npm not found; install ONNX Runtime headers by hand and set XMODELKD_ORT_INCLUDE" >&2
    exit 1
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
if ! (cd "$TMP" && npm pack --loglevel=error "$PACKAGE" >/dev/null 2>"$TMP/npm.err"); then
    echo "fetch_ort_headers: npm pack $PACKAGE failed: $(grep -m1 -v "^\s*$" "$TMP/npm.err" || true)" >&2
    exit 1
fi
tar -xzf "$TMP"/*.tgz -C "$TMP" "$INNER"
mkdir -p "$DEST"
cp "$TMP/$INNER"/*.h "$DEST"/
echo "ONNX Runtime headers ($(grep -m1 -o 'ORT_API_VERSION [0-9]*' "$DEST/onnxruntime_c_api.h")) in $DEST"
