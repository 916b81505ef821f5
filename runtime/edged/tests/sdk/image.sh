#!/usr/bin/env bash
# Builds the test module image with the real Azure IoT Python SDK, once: a Debian bookworm root
# filesystem made by mmdebstrap from Debian's archive (python3 and ca-certificates), the
# unmodified azure-iot-device package from PyPI installed into it. The module programs beside this
# script are not in the image: tests bind-mount this directory at /opt/sdk, so editing a program
# does not rebuild the image. The tag carries a hash of this script, so an unchanged recipe reuses
# the image Docker already has and a changed one builds a new image.
#
#   image.sh image        prints the image tag, building the image if Docker lacks it
#   image.sh venv DIR     makes (once) a host venv in DIR with the same SDK, prints its python
#
# Needs root (mmdebstrap's root mode), mmdebstrap, python3 3.11 with pip and venv (the same
# minor version as bookworm's python3, so the packages pip installs on the host run in the image).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
sdk_requirement="azure-iot-device==2.14.*"
suite=bookworm
mirror="${EDGEC_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

recipe_hash() {
  sha256sum < "$here/image.sh" | cut -c1-16
}

build_image() {
  local tag="edgec-test-python-sdk:$(recipe_hash)"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    return
  fi
  local work
  work="$(mktemp -d /tmp/edgec-sdk-image.XXXXXX)"
  trap 'rm -rf "$work"' RETURN
  local rootfs="$work/rootfs"
  mmdebstrap --quiet --variant=apt --include=python3,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$suite" "$rootfs" "$mirror" >&2
  local image_python
  image_python="$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  local host_python
  host_python="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$image_python" != "$host_python" ]; then
    echo "image.sh: the image has python $image_python, the host $host_python; pip on the host must match" >&2
    exit 1
  fi
  # Installed by the host's pip (the image has none) into the directory Debian's python3
  # searches for locally installed packages.
  python3 -m pip install --quiet --no-compile --no-warn-script-location \
    --target "$rootfs/usr/local/lib/python$image_python/dist-packages" "$sdk_requirement" >&2
  mkdir -p "$rootfs/opt/sdk"
  rm -rf "$rootfs/var/cache/apt/archives"/*.deb "$rootfs/var/lib/apt/lists"/*
  tar -C "$rootfs" --numeric-owner -c . | docker import --change 'WORKDIR /opt/sdk' - "$tag" >&2
  echo "$tag"
}

make_venv() {
  local dir="$1"
  local stamp="$dir/.edgec-recipe"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$sdk_requirement" ]; then
    echo "$dir/bin/python"
    return
  fi
  rm -rf "$dir"
  python3 -m venv "$dir" >&2
  "$dir/bin/python" -m pip install --quiet "$sdk_requirement" >&2
  echo "$sdk_requirement" > "$stamp"
  echo "$dir/bin/python"
}

case "${1:-}" in
  image) build_image ;;
  venv) make_venv "${2:?usage: image.sh venv DIR}" ;;
  *) echo "usage: image.sh image | image.sh venv DIR" >&2; exit 2 ;;
esac
