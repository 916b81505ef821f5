"""Sends COUNT JSON telemetry messages on an output, each with content type and encoding,
a message id and custom properties, and prints the id of every message the hub acknowledged.

    sensor.py COUNT [--output NAME] [--interval SECONDS] [--prefix TEXT]

Message ids are PREFIX-SEQ; `--prefix auto` takes a prefix unique to this run, so the runs of a
restarted module can be told apart.

Message `seq` i has temperature 20 + (i % 10), so a route condition such as
`$body.temperature > 25` lets a known subset through. A send that fails (the hub went away) is
retried with the same message id: the hub may then hold it twice, which at-least-once allows."""

import argparse
import json
import time

from azure.iot.device import Message

from common import connect, emit


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("count", type=int)
    parser.add_argument("--output", default="temperature")
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--prefix", default="m")
    args = parser.parse_args()
    prefix = args.prefix if args.prefix != "auto" else "r%d" % time.time_ns()
    client = connect()
    for seq in range(args.count):
        body = {"seq": seq, "temperature": 20 + seq % 10, "unit": "C"}
        message_id = "%s-%d" % (prefix, seq)
        while True:
            message = Message(
                json.dumps(body),
                message_id=message_id,
                content_encoding="utf-8",
                content_type="application/json",
            )
            message.custom_properties["sensor"] = "sensor"
            message.custom_properties["seq"] = str(seq)
            try:
                client.send_message_to_output(message, args.output)
                break
            except Exception as error:  # The SDK raises several connection error types.
                emit(event="send-retry", id=message_id, error=repr(error))
                time.sleep(0.5)
        emit(event="acked", id=message_id, seq=seq)
        if args.interval:
            time.sleep(args.interval)
    emit(event="done", count=args.count)
    client.shutdown()


if __name__ == "__main__":
    main()
