#!/usr/bin/env python3
"""Writes gRPC request bodies (the 5-byte length prefix and the protobuf message) for load tools
that send a fixed body, such as h2load -d: DIR/create.bin, a boxoffice.v1.CreateEventRequest for a
GA event of 1,000,000,000 tickets with id EVENT_ID, and DIR/reserve.bin, a ReserveRequest of one
ticket of it. Encoded by hand (field numbers from proto/boxoffice/v1), so nothing needs installing.

    scripts/grpc-frames.py DIR [EVENT_ID]
"""
import pathlib
import struct
import sys


def varint(n):
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        out += bytes([low | (0x80 if n else 0)])
        if not n:
            return out


def field(number, wire, payload):
    key = varint((number << 3) | wire)
    return key + (varint(len(payload)) + payload if wire == 2 else payload)


def text(number, value):
    return field(number, 2, value.encode())


def uint(number, value):
    return field(number, 0, varint(value))


def message(number, body):
    return field(number, 2, body)


def frame(body):
    return b"\x00" + struct.pack(">I", len(body)) + body


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = pathlib.Path(sys.argv[1])
    event = sys.argv[2] if len(sys.argv) == 3 else "0197a000-0000-7000-8000-000000000001"
    out.mkdir(parents=True, exist_ok=True)
    # Tier: code 1, name 2, price_minor 3, max_per_order 5, general_admission 7 {capacity 1}.
    tier = text(1, "GA") + text(2, "Standing") + uint(3, 4000) + uint(5, 1)
    tier += message(7, uint(1, 1_000_000_000))
    # CreateEventRequest: event_id 1, name 2, venue 3, starts_at 4, status 5 (ON_SALE = 2),
    # currency 6, tiers 9.
    create = text(1, event) + text(2, "h2load") + text(3, "Hall")
    create += message(4, uint(1, 4_000_000_000)) + uint(5, 2) + text(6, "EUR") + message(9, tier)
    # ReserveRequest: event_id 1, customer_id 2, items 3 {tier_code 1, quantity 2}.
    reserve = text(1, event) + text(2, "h2load-shopper") + message(3, text(1, "GA") + uint(2, 1))
    (out / "create.bin").write_bytes(frame(create))
    (out / "reserve.bin").write_bytes(frame(reserve))
    print(f"{out}/create.bin {out}/reserve.bin (event {event})")


main()
