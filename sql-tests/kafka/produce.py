#!/usr/bin/env python3
"""Produces test messages to a Kafka topic, for the Kafka .slt files.

    produce.py BROKER TOPIC [--partitions N] < messages

Creates TOPIC with N partitions (default 1) if it does not exist, then sends
one message per input line and waits until the broker has them all. A line
may start with `@P ` to pick partition P (default 0) and `key=K ` to set a
key. `<empty>` sends an empty message and `<bytes N>` a message of N bytes.
Uses PyPI's confluent-kafka, a real librdkafka client.
"""

import argparse
import sys

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("broker")
    ap.add_argument("topic")
    ap.add_argument("--partitions", type=int, default=1)
    args = ap.parse_args()

    admin = AdminClient({"bootstrap.servers": args.broker})
    if args.topic not in admin.list_topics(timeout=10).topics:
        futures = admin.create_topics([NewTopic(args.topic, num_partitions=args.partitions, replication_factor=1)])
        for f in futures.values():
            f.result(timeout=10)

    producer = Producer(
        {"bootstrap.servers": args.broker, "acks": "all", "enable.idempotence": False, "message.max.bytes": 10_000_000}
    )
    failures = []

    def delivered(err, _msg):
        if err is not None:
            failures.append(str(err))

    for raw in sys.stdin.read().splitlines():
        line = raw
        partition = 0
        key = None
        if line.startswith("@"):
            head, _, line = line.partition(" ")
            partition = int(head[1:])
        if line.startswith("key="):
            head, _, line = line.partition(" ")
            key = head[len("key="):].encode()
        if line == "<empty>":
            payload = b""
        elif line.startswith("<bytes ") and line.endswith(">"):
            payload = b"x" * int(line[len("<bytes "):-1])
        else:
            payload = line.encode()
        while True:
            try:
                producer.produce(args.topic, value=payload, key=key, partition=partition, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.1)
    remaining = producer.flush(30)
    if remaining or failures:
        print(f"produce failed: {remaining} undelivered, errors: {failures}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
