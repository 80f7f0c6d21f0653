"""`payout-manager events`: reads the topic and prints each event as one JSON line.

Also the reference consumer for the teams downstream, who may copy it: it reads in a consumer
group, checks the `message-type` header, decodes the value as `payout_manager.v1.Event`, and moves
the group's offset only after the event was handled (printed). The JSON is protobuf's canonical
mapping with the proto field names: int64 amounts are strings, so no money becomes a float.

Delivery is at least once: a consumer that applies events keeps, per payout, the highest
`sequence_id` it applied and skips anything at or below it. This tool prints what the topic holds.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from types import FrameType
from typing import TextIO

from confluent_kafka import Consumer, KafkaError, Message
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from payout_manager.events.kafka_config import KafkaConnection, client_config
from payout_manager.events.relay import HEADERS_MESSAGE_TYPE
from payout_manager.proto.payout_manager.v1 import payout_manager_pb2 as pb


@dataclass(frozen=True)
class Options:
    kafka: KafkaConnection
    topic: str
    from_beginning: bool = False
    payout_id: str | None = None
    # A named group resumes where it stopped; without one, each run is a group of its own.
    group: str | None = None
    max_events: int | None = None
    idle_timeout: float | None = None


class NotAnEventError(Exception):
    """A record on the topic that is not a payout_manager.v1.Event."""


def decode(message: Message) -> pb.Event:
    """The record's Event; NotAnEventError when its headers or its value say otherwise."""
    header_name, expected_type = HEADERS_MESSAGE_TYPE
    message_type = dict(message.headers() or []).get(header_name)
    if message_type != expected_type:
        raise NotAnEventError(f"{header_name} is {message_type!r}, not {expected_type.decode()}")
    event = pb.Event()
    try:
        event.ParseFromString(message.value() or b"")
    except DecodeError as error:
        raise NotAnEventError(f"the value does not decode: {error}") from None
    return event


def to_json(event: pb.Event) -> str:
    return json.dumps(
        json_format.MessageToDict(event, preserving_proto_field_name=True),
        ensure_ascii=False,
        separators=(",", ":"),
    )


def consumer_config(options: Options) -> dict[str, str | int | float | bool]:
    named = options.group is not None
    return {
        **client_config(options.kafka),
        "group.id": options.group or f"payout-manager-events-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest" if options.from_beginning else "latest",
        # Offsets are stored by hand after an event is handled, and committed in the background.
        "enable.auto.commit": named,
        "enable.auto.offset.store": False,
    }


def run(options: Options, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Prints events until SIGTERM/SIGINT, --max-events or --idle-timeout; returns the exit code."""
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    said: set[str] = set()

    def on_error(error: KafkaError) -> None:
        # librdkafka repeats a client-wide error (no broker reachable) on every reconnect: once each.
        if str(error) not in said:
            said.add(str(error))
            print(f"payout-manager events: {error}", file=err, flush=True)

    consumer = Consumer(
        # Its own log is left to errors that matter; the rest reach on_error, said once each.
        {**consumer_config(options), "error_cb": on_error, "log_level": 2}
    )
    printed = 0
    last_error = ""
    last_seen = time.monotonic()
    wanted = options.payout_id.encode() if options.payout_id is not None else None
    try:
        consumer.subscribe([options.topic])
        while not stopping:
            if options.max_events is not None and printed >= options.max_events:
                break
            if options.idle_timeout is not None and time.monotonic() - last_seen >= options.idle_timeout:
                break
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                # A broker away repeats its error on every poll: say each one once in a row.
                if str(error) != last_error:
                    print(f"payout-manager events: {error}", file=err, flush=True)
                    last_error = str(error)
                if error.fatal():
                    return 1
                continue
            last_error = ""
            last_seen = time.monotonic()
            if wanted is None or message.key() == wanted:
                try:
                    line = to_json(decode(message))
                except NotAnEventError as reason:
                    print(
                        f"payout-manager events: skipped partition {message.partition()} "
                        f"offset {message.offset()}: {reason}",
                        file=err,
                        flush=True,
                    )
                else:
                    print(line, file=out, flush=True)
                    printed += 1
            consumer.store_offsets(message)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error. Python would fail flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    finally:
        consumer.close()
    return 0
