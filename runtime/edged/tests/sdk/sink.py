"""Records every message it receives, on any input, as a JSON line: input, message id, body,
content type and encoding, custom properties.

    sink.py

The SDK runs `on_message_received` on a pool of four threads, so the lines may come out in
another order than the hub delivered; `ordered_sink.py` sees the hub's order."""

from common import connect, emit, wait_forever


def main():
    def received(message):
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

    wait_forever(connect(on_message_received=received))


if __name__ == "__main__":
    main()
