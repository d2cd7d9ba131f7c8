#!/usr/bin/env bash
# Installs the Debian packages mtl needs that are missing; does nothing when all are there.
# Usage: scripts/install-deps.sh [build|demo|bench|all]   (default: build)
set -euo pipefail
want=${1:-build}
build_pkgs=(cmake make gcc pkg-config python3 libopenblas-dev zlib1g-dev liblmdb-dev libstb-dev libcjson-dev)
demo_pkgs=(dataset-fashion-mnist)
bench_pkgs=(python3-torch python3-numpy)
case "$want" in
  build) pkgs=("${build_pkgs[@]}") ;;
  demo) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}") ;;
  bench) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${bench_pkgs[@]}") ;;
  all) pkgs=("${build_pkgs[@]}" "${demo_pkgs[@]}" "${bench_pkgs[@]}") ;;
  *) echo "usage: $0 [build|demo|bench|all]" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing missing packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
