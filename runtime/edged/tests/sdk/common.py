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


def connect():
    """A connected client made from the IOTEDGE_* environment, exactly as a module on IoT Edge
    makes it. The hub may not be listening yet when a module starts (edged starts it first, but
    a restarted edged may still be opening its store), so the first connect is retried."""
    client = IoTHubModuleClient.create_from_edge_environment()
    for attempt in range(60):
        try:
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
