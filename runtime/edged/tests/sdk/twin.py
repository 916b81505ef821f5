"""Prints the module twin's desired properties, patches the reported properties with PATCH
(a JSON object), then prints every desired-properties patch the hub sends.

    twin.py [PATCH]"""

import json
import sys

from common import connect, emit, wait_forever


def main():
    def patched(patch):
        emit(event="desired-patch", patch=patch)

    client = connect(on_twin_desired_properties_patch_received=patched)
    twin = client.get_twin()
    emit(event="twin", desired=twin.get("desired"), reported=twin.get("reported"))
    if len(sys.argv) > 1:
        client.patch_twin_reported_properties(json.loads(sys.argv[1]))
        emit(event="reported")
    wait_forever(client)


if __name__ == "__main__":
    main()
