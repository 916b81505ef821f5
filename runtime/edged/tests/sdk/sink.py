"""Records every message it receives as a JSON line: input, message id, body, content type and
encoding, custom properties.

    sink.py [--input NAME]

Without --input it takes every input through `on_message_received`, which the SDK runs on a pool
of four threads: lines may then come out in another order than the hub delivered. With --input
it takes that input's messages with `receive_message_on_input`, one at a time in the order they
arrived, for tests that check the hub's order."""

import argparse

from common import connect, emit, wait_forever


def record(message):
    body = message.data.decode("utf-8") if isinstance(message.data, bytes) else message.data
    emit(
        event="received",
        input=message.input_name,
        id=message.message_id,
        body=body,
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        properties=dict(message.custom_properties),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--input")
    args = parser.parse_args()
    client = connect()
    if args.input:
        while True:
            record(client.receive_message_on_input(args.input, block=True))
    client.on_message_received = record
    wait_forever(client)


if __name__ == "__main__":
    main()
