"""Receives messages on an input and forwards each, body and properties unchanged, to an output.

    filter.py [--input NAME] [--output NAME]"""

import argparse

from azure.iot.device import Message

from common import connect, create, emit, wait_forever


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input", default="input1")
    parser.add_argument("--output", default="output1")
    args = parser.parse_args()
    client = create()

    def received(message):
        if message.input_name != args.input:
            emit(event="unexpected-input", input=message.input_name)
            return
        forwarded = Message(
            message.data,
            message_id=message.message_id,
            content_encoding=message.content_encoding,
            content_type=message.content_type,
        )
        forwarded.custom_properties.update(message.custom_properties)
        forwarded.custom_properties["filtered"] = "yes"
        client.send_message_to_output(forwarded, args.output)
        emit(event="forwarded", id=message.message_id)

    connect(client, on_message_received=received)
    wait_forever(client)


if __name__ == "__main__":
    main()
