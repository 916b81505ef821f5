"""Records the messages the hub delivers on this module's input INPUT, in the order they arrive
on the MQTT connection, as JSON lines like sink.py's (`received`, with the message id).

    ordered_sink.py INPUT

The SDK runs message handlers on a pool of threads and drops input messages that arrive before
`receive_message_on_input` made its inbox, so neither shows the hub's order; this subscriber sees
it directly (paho's network thread calls on_message in arrival order). It connects as the module
itself, with a persistent session, and reconnects when the hub goes away."""

import sys
import time
import urllib.parse

from common import emit
from raw import client, device, gateway, module


def main():
    wanted = sys.argv[1]
    prefix = "devices/%s/modules/%s/inputs/" % (device, module)

    def received(_client, _userdata, message):
        rest = message.topic[len(prefix):]
        name, _, bag = rest.partition("/")
        properties = dict(urllib.parse.parse_qsl(bag, keep_blank_values=True))
        emit(event="received", input=name, id=properties.get("$.mid"))

    def connected(c, _userdata, _flags, rc):
        emit(event="connected", code=rc)
        c.subscribe(prefix + "#", qos=1)

    while True:
        own = client(module)
        own.on_message = received
        own.on_connect = connected
        try:
            own.connect(gateway, 8883)
            own.loop_forever()
        except OSError as error:
            emit(event="connect-retry", error=repr(error))
        time.sleep(0.5)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main()
