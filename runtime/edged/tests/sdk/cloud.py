"""IoT Hub's side for a leaf device behind the gateway, played on the stand-in cloud (mosquitto):
a cloud-to-device message and a desired-properties patch, published where the gateway's
connection subscribes for its leaf devices (runtime/README.md, "The cloud connection").

    cloud.py PORT CA_FILE LEAF

Paho is the MQTT client the SDK itself is built on; it publishes with QoS 1 and exits once the
broker acknowledged both."""

import json
import ssl
import sys
import time

import paho.mqtt.client as mqtt

from common import emit


def main():
    port, ca_file, leaf = sys.argv[1:]
    client = mqtt.Client(client_id="cloud-" + leaf, protocol=mqtt.MQTTv311)
    client.tls_set(ca_certs=ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    client.connect("localhost", int(port))
    client.loop_start()
    c2d = client.publish(
        "devices/%s/messages/devicebound/%%24.mid=c2d-1&valve=shut" % leaf, "close it", qos=1
    )
    desired = client.publish(
        "$iothub/%s/twin/PATCH/properties/desired/?$version=5" % leaf,
        json.dumps({"interval": 30, "$version": 5}),
        qos=1,
    )
    for sent in (c2d, desired):
        sent.wait_for_publish(timeout=30)
    emit(event="published", c2d=c2d.is_published(), desired=desired.is_published())
    time.sleep(0.5)
    client.loop_stop()
    client.disconnect()


if __name__ == "__main__":
    main()
