"""Tries what a module must not be able to do, and prints what the hub answered:

1. ask its own workload socket to sign with another module's key (`sign-other`, HTTP status);
2. connect as another module with a token signed by its own key (`connect-as-other`, CONNACK code);
3. connect as itself and subscribe to another module's inputs (`subscribe-other`, SUBACK codes,
   and whether any message arrived in the seconds after).

    spy.py OTHER_MODULE

It speaks MQTT through paho-mqtt and HTTP through requests-unixsocket2, the SDK's own
dependencies, because the SDK's public API cannot even express these attempts."""

import base64
import json
import os
import ssl
import sys
import tempfile
import time
import urllib.parse

import paho.mqtt.client as mqtt
import requests_unixsocket

from common import emit

env = os.environ
device = env["IOTEDGE_DEVICEID"]
module = env["IOTEDGE_MODULEID"]
genid = env["IOTEDGE_MODULEGENERATIONID"]
hub = env["IOTEDGE_IOTHUBHOSTNAME"]
gateway = env["IOTEDGE_GATEWAYHOSTNAME"]
api = env["IOTEDGE_APIVERSION"]
workload = "http+unix://" + urllib.parse.quote(
    env["IOTEDGE_WORKLOADURI"][len("unix://"):], safe=""
)
session = requests_unixsocket.Session()


def sign(as_module, data):
    url = "%s/modules/%s/genid/%s/sign?api-version=%s" % (workload, as_module, genid, api)
    body = {"keyId": "primary", "algo": "HMACSHA256", "data": base64.b64encode(data).decode()}
    return session.post(url, json=body)


def token(for_module):
    resource = urllib.parse.quote("%s/devices/%s/modules/%s" % (hub, device, for_module), safe="")
    expiry = int(time.time()) + 3600
    response = sign(module, ("%s\n%d" % (resource, expiry)).encode())
    response.raise_for_status()
    signature = urllib.parse.quote(response.json()["digest"], safe="")
    return "SharedAccessSignature sr=%s&sig=%s&se=%d" % (resource, signature, expiry)


def client(as_module):
    ca = session.get("%s/trust-bundle?api-version=%s" % (workload, api)).json()["certificate"]
    ca_file = tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False)
    ca_file.write(ca)
    ca_file.close()
    result = mqtt.Client(client_id="%s/%s" % (device, as_module), clean_session=False,
                         protocol=mqtt.MQTTv311)
    result.username_pw_set("%s/%s/%s/?api-version=2021-04-12" % (hub, device, as_module),
                           token(as_module))
    result.tls_set(ca_certs=ca_file.name, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    return result


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
