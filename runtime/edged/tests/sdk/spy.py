"""Tries what a module must not be able to do, and prints what the hub answered:

1. ask its own workload socket to sign with another module's key (`sign-other`, HTTP status);
2. connect as another module with a token signed by its own key (`connect-as-other`, CONNACK code);
3. connect as itself and subscribe to another module's inputs (`subscribe-other`, SUBACK codes,
   and whether any message arrived in the seconds after).

    spy.py OTHER_MODULE

The SDK's public API cannot even express these attempts, so it goes through `raw.py`."""

import sys
import time

from common import emit
from raw import client, device, gateway, module, sign


def main():
    other = sys.argv[1]
    emit(event="sign-other", status=sign(other, b"data").status_code)

    outcome = {}
    impostor = client(other)
    impostor.on_connect = lambda c, u, flags, rc: outcome.setdefault("rc", rc)
    impostor.connect(gateway, 8883)
    impostor.loop_start()
    for _ in range(100):
        if "rc" in outcome:
            break
        time.sleep(0.1)
    impostor.loop_stop()
    emit(event="connect-as-other", code=outcome.get("rc"))

    seen = {"granted": None, "messages": 0}
    own = client(module)
    own.on_subscribe = lambda c, u, mid, granted: seen.update(granted=list(granted))
    own.on_message = lambda c, u, message: seen.update(messages=seen["messages"] + 1)
    own.on_connect = lambda c, u, flags, rc: c.subscribe(
        "devices/%s/modules/%s/inputs/#" % (device, other), qos=1
    )
    own.connect(gateway, 8883)
    own.loop_start()
    time.sleep(5)
    own.loop_stop()
    emit(event="subscribe-other", granted=seen["granted"], messages=seen["messages"])


if __name__ == "__main__":
    main()
