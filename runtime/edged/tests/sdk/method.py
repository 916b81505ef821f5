"""Direct methods, both sides.

    method.py serve              answers every method with status 200 and
                                 {"method": NAME, "module": OWN ID, "echo": PAYLOAD}
    method.py invoke MODULE NAME PAYLOAD_JSON
                                 invokes MODULE's method NAME on this device through the hub
                                 (the SDK's invoke_method, HTTPS to the gateway) and prints the
                                 status and payload"""

import json
import os
import sys

from azure.iot.device import MethodResponse

from common import connect, create, emit, wait_forever


def serve():
    client = create()

    def requested(request):
        emit(event="method", name=request.name, payload=request.payload)
        payload = {
            "method": request.name,
            "module": os.environ["IOTEDGE_MODULEID"],
            "echo": request.payload,
        }
        response = MethodResponse.create_from_method_request(request, 200, payload)
        client.send_method_response(response)

    connect(client, on_method_request_received=requested)
    wait_forever(client)


def invoke(module, name, payload):
    client = connect()
    params = {
        "methodName": name,
        "payload": json.loads(payload),
        "responseTimeoutInSeconds": 30,
        "connectTimeoutInSeconds": 10,
    }
    result = client.invoke_method(params, os.environ["IOTEDGE_DEVICEID"], module_id=module)
    emit(event="invoked", status=result.get("status"), payload=result.get("payload"))
    client.shutdown()


def main():
    if sys.argv[1] == "serve":
        serve()
    else:
        invoke(sys.argv[2], sys.argv[3], sys.argv[4])


if __name__ == "__main__":
    main()
