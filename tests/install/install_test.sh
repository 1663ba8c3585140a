#!/usr/bin/env bash
# Installs the build into a temporary prefix, then builds a consumer with find_package(switchyard)
# and another with pkg-config, and runs both.
set -euo pipefail
build_dir="$1" source_dir="$2"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
lib="$(dirname "$(find "$work/prefix" -name 'libswitchyard.so*' | head -n1)")"

cmake -S "$source_dir/consumer" -B "$work/cmake-build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-build" >/dev/null
LD_LIBRARY_PATH="$lib" "$work/cmake-build/consumer"

export PKG_CONFIG_PATH="$lib/pkgconfig"
# shellcheck disable=SC2046
cc "$source_dir/consumer/main.c" -o "$work/pc-consumer" $(pkg-config --cflags --libs switchyard)
LD_LIBRARY_PATH="$lib" "$work/pc-consumer"
echo "install test: find_package and pkg-config consumers built and ran"
