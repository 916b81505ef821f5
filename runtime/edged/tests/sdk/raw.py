"""MQTT and workload-API access without the SDK's client, with the module's own identity: what
`spy.py` tries to abuse and `ordered_sink.py` uses to see the hub's delivery order. It speaks
MQTT through paho-mqtt and HTTP through requests-unixsocket2, the SDK's own dependencies."""

import base64
import os
import ssl
import tempfile
import time
import urllib.parse

import paho.mqtt.client as mqtt
import requests_unixsocket

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
