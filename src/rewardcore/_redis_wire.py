"""The tags the Redis client and its Lua scripts exchange, named once.

tools/gen_lua_constants.py writes these (and the outcome codes of rewardcore.outcomes) into
src/rewardcore/lua/_constants.lua, which is prepended to every script when it is loaded;
tests/test_redis_engine.py checks the generated file is current.
"""

from __future__ import annotations

# Items of an order-bucket call (mark_orders.lua): kind, order id, argument.
BUCKET_PLACED = 1  # argument: -1 = a candidate for the core, else the client's final outcome
BUCKET_CLOSED = 2  # argument unused
BUCKET_COMPLETED = 3  # argument: the event's ts (remembered if the order is not placed yet)

# The bucket's reply for a new candidate (other replies: an outcome code, or a string).
NEW_CANDIDATE = -1

# Items of a core call (decide_batch.lua), each opening with its kind. A beneficiary is its
# place in the call's list of beneficiaries, a region its place in the call's regions.
CORE_PLACED = 1  # beneficiary, region, where its order id and ts start in the call's ids
CORE_PLACED_AGAIN = 5  # oid, beneficiary, region, ts, early completion ts ("" none),
#                        ref ("" this call)
CORE_CLOSED = 2  # oid, ts, ref
CORE_COMPLETED = 3  # oid, ts, ref
CORE_REDEEM = 4  # redemption id, beneficiary, prize id, qty, unit cost (-1 unknown), stock

# A new candidate's order id and ts, in one string of the core call (ARGV[6]): read only when
# the order is awarded, so an order that is not leaves no Lua string behind. The byte length
# of the order id (uint32), its UTF-8 bytes, the length of the ts text (uint8), the text.
CANDIDATE_IDS = "<I4c0Bc0"

# Whole-call replies of decide_batch.lua besides the per-item results.
CALL_CANCELLED = "cancelled"  # a redelivery adopted this call's orders: redo it as refs
CALL_REPEATED = "repeated"  # this call id was applied before (a client bug)

# Order records in a bucket (hash order id -> record), by first character.
REC_TOMBSTONE = "T"  # closed before placed
REC_EARLY = "E"  # completed before placed: "E<ts>"
REC_DONE = "-"  # placed, decided in the bucket (no claim possible)
REC_ROUTED = "R"  # placed, sent to the core in call <id>: "R<id>" or "R<id>=<early ts>"

# A bucket's header: the field "" (no order id is empty), written with the bucket's first
# records. Its value is longer than Redis's hash-max-listpack-value (64 bytes by default), so
# a bucket is a hash table from its first write: while a small hash is kept as a listpack,
# every lookup and insert scans it, which was half of the bucket step in young buckets.
BUCKET_HEADER_FIELD = ""
BUCKET_HEADER = ("rewardcore order bucket: order id -> record, first character: "
                 "T tombstone, E completed early, - decided, R routed to the core")

# The core's regions (decide_batch.lua KEYS[1]): one string, the campaign's region list
# fingerprint then one record per region in campaign order: used slots, taken, released slots
# count (uint32), rank (double: exact to 2**53). REGION_STRUCT is the same for Python's struct.
#: written into the fingerprint of the region list: a core written by a version of rewardcore
#: with other records is refused, not misread
LAYOUT = 3
REGION_FORMAT = "<I4I4I4d"
REGION_STRUCT = "<IIId"
REGION_REC = 20
#: the core's regions written for another region list under this campaign id, or by an
#: earlier layout (the core and the views say so rather than misread them)
OTHER_REGIONS = ("the stored regions were written for another region list or by another "
                 "version of rewardcore: reset the campaign's state (rewardcore reset) or give "
                 "the campaign another id")

# The core's claims (decide_batch.lua KEYS[2]): order id -> slot (uint32), points, rank
# (doubles), region index (uint32), state (one letter: p pending, c confirmed, r revoked), then
# as text, each after its length: region code, ts, settled_ts, revoked_ts (uint8 lengths) and
# the beneficiary (uint32 length). CLAIM_HEAD is the fixed part for Python's struct.
CLAIM_FORMAT = "<I4ddI4c1Bc0Bc0Bc0Bc0I4c0"
CLAIM_HEAD = "<IddIc"
CLAIM_STATES = {"p": "pending", "c": "confirmed", "r": "revoked"}

# The core's beneficiaries (decide_batch.lua KEYS[3]): who -> pending, confirmed, redeemed
# points, held claims (doubles: exact to 2**53, and points may go below zero), then the
# holdings per region as text. The format reads the same in Lua's struct and Python's.
BENEFICIARY_FORMAT = "<dddd"
BENEFICIARY_REC = 32

# Notes on orders whose call was cancelled (core hash oid -> note).
NOTE_DECIDED = "D"  # "D<outcome>|<slot>|<points>|<rank>"
NOTE_EARLY = "E"  # "E<ts>": completed before its placement was decided

WIRE = {name: value for name, value in globals().items()
        if name.isupper() and isinstance(value, (int, str)) and name != "WIRE"}
