"""What the test modules share: connecting through the public SDK entry point, and JSON lines
on stdout (flushed at once, so a test reading a pipe sees each event as it happens)."""

import json
import sys
import time

from azure.iot.device import IoTHubModuleClient


def emit(**event):
    """Writes one event as a JSON line."""
    sys.stdout.write(json.dumps(event, sort_keys=True) + "\n")
    sys.stdout.flush()


def create():
    """A client made from the IOTEDGE_* environment, exactly as a module on IoT Edge makes it."""
    return IoTHubModuleClient.create_from_edge_environment()


def connect(client=None, **handlers):
    """Connects `client` (a new one from `create()` if not given), with `handlers`
    (`on_message_received=…`) set before it connects: the hub delivers
    what is queued for a module as soon as its persistent session is back, and the SDK drops
    input messages that arrive before a handler is set. The hub may not be listening yet when a
    module starts (a restarted edged may still be opening its store), so connecting is retried."""
    client = client or create()
    for attempt in range(60):
        try:
            # Setting a receive handler enables its feature, which connects.
            for name, handler in handlers.items():
                setattr(client, name, handler)
            client.connect()
            break
        except Exception as error:  # The SDK raises several connection error types.
            if attempt == 59:
                raise
            emit(event="connect-retry", error=repr(error))
            time.sleep(1)
    emit(event="connected")
    return client


def wait_forever(client):
    """Keeps a module serving until the test stops it."""
    try:
        while True:
            time.sleep(3600)
    finally:
        client.shutdown()
