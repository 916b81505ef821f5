"""A leaf (downstream) device connecting through the gateway with the SDK's device client, as
on a transparent IoT Edge gateway: reads its twin, reports a property and sends telemetry, each
event a JSON line.

    leaf.py sas CONNECTION_STRING CA_FILE [--cloud]
    leaf.py x509 HOSTNAME DEVICE_ID CERT_FILE KEY_FILE GATEWAY CA_FILE [--cloud]

With `--cloud` it then listens for a cloud-to-device message and a desired-properties patch,
which come from the cloud through the gateway's own connection, emits `listening` once its
handlers are set, and each of them as it arrives.

The connection string carries `GatewayHostName`; the certificate client is given
`gateway_hostname`. Both verify the gateway with `server_verification_cert`, the hub's CA."""

import queue
import sys
import time

from azure.iot.device import IoTHubDeviceClient, Message, X509

from common import emit


def create(arguments):
    mode = arguments[0]
    if mode == "sas":
        connection_string, ca_file = arguments[1:]
        with open(ca_file) as ca:
            return IoTHubDeviceClient.create_from_connection_string(
                connection_string, server_verification_cert=ca.read()
            )
    hostname, device_id, cert_file, key_file, gateway, ca_file = arguments[1:]
    with open(ca_file) as ca:
        return IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(cert_file=cert_file, key_file=key_file),
            hostname=hostname,
            device_id=device_id,
            gateway_hostname=gateway,
            server_verification_cert=ca.read(),
        )


def main():
    arguments = sys.argv[1:]
    listen = arguments[-1] == "--cloud"
    if listen:
        arguments = arguments[:-1]
    client = create(arguments)
    arrived = queue.Queue()
    if listen:
        # Set before connecting: the gateway delivers what it queued for the leaf as soon as the
        # leaf's session is back.
        client.on_message_received = lambda message: arrived.put(
            ("c2d", {"data": message.data.decode(), "properties": message.custom_properties}))
        client.on_twin_desired_properties_patch_received = lambda patch: arrived.put(
            ("desired", {"patch": patch}))
    for attempt in range(60):
        try:
            client.connect()
            break
        except Exception as error:  # The SDK raises several connection error types.
            if attempt == 59:
                raise
            emit(event="connect-retry", error=repr(error))
            time.sleep(1)
    emit(event="twin", twin=client.get_twin())
    client.patch_twin_reported_properties({"firmware": "1.2"})
    emit(event="reported")
    for seq in range(3):
        message = Message('{"seq": %d}' % seq, content_type="application/json",
                          content_encoding="utf-8")
        message.custom_properties["seq"] = str(seq)
        client.send_message(message)
        emit(event="sent", seq=seq)
    if listen:
        emit(event="listening")
        for _ in range(2):
            kind, fields = arrived.get(timeout=120)
            emit(event=kind, **fields)
    client.shutdown()


if __name__ == "__main__":
    main()
