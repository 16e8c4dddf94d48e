"""The arena's layout contract: every word index, magic, kind and tag both cores rely on.

This module is the one place these numbers are written. The Python modules take their
constants from here (``_chan/block.py``, ``_chan/proclayer.py``, ``_mp/tokens.py``,
``_mp/ctx.py``, ``_mp/tasks.py``, ``_shm/ring_frames.py``, ``_shm/locks.py``,
``_shm/arena.py``, ``_shm/codec.py``), and the build generates the compiled core's
``c/layout.h`` from it (``setup.py``; ``python -m csp_mp._shm.layout`` prints it). The header
carries ``DIGEST``, which the compiled module exports as ``LAYOUT_DIGEST``: ``native.py``
refuses a compiled core built from another layout, and a test checks that the header in the
tree is the one this module makes.

Imports nothing (``setup.py`` runs it before the package can be imported). Values only: what
the words mean, and who writes them, is in the module that uses them.
"""

from __future__ import annotations

try:  # the interpreter's own sha256: hashlib would load OpenSSL (~2 ms of every start-up)
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter built without it
    from hashlib import sha256

WORD = 8
LINE = 64

# ---- arena (arena.py): header words, block headers, size classes
ARENA_MAGIC = 0xC5B0_A4E1_0000_0001
AW_MAGIC, AW_SIZE, AW_HEAP, AW_NLOCKS, AW_ATTACHED, AW_POISON = range(6)
# takeovers from a dead holder of a state lock, ever, and the first lock index counted
AW_TAKEOVERS, AW_STATE_LOCKS = 6, 7
BLOCK_MAGIC = 0x5A17_0000_0000_0000
BLOCK_FREE = 1 << 8
BLOCK_USED = 2 << 8
BLOCK_HEADER = LINE
NCLASS = 48
MIN_CLASS = 7  # 128-byte blocks: 64 header + 64 payload

# ---- lock lines (locks.py, lock.c): one 64-byte line per lock from the arena's locks_at
LOCK_LINE = LINE

# ---- rings (ring_frames.py, ring.c)
RING_MAGIC = 0x52_49_4E_47_00_00_00_01
RW_MAGIC, RW_CAP, RW_LOCK, RW_KIND = range(4)  # words of line 0
RING_HEAD_LINE, RING_TAIL_LINE = 1, 2  # the consumers' and the producers' word, a line each
RING_HEADER = 3 * LINE  # data from here
RING_LOCKED, RING_SPSC = 1, 2  # ring kinds (word RW_KIND)
F_INLINE, F_OOB, F_WRAP = 1, 2, 3  # frame kinds
KIND_SHIFT = 32  # a frame header is kind << KIND_SHIFT | length
POS_BITS = 40  # a head or tail word: count << POS_BITS | position
M40 = (1 << POS_BITS) - 1  # its position
M24 = (1 << (64 - POS_BITS)) - 1  # its count
M32 = (1 << KIND_SHIFT) - 1  # a frame header's length
# ---- ring frames and capacities (ring_frames.py, ring_batch.py, ring.py, ring.c)
RING_MIN_CAP = 64  # the smallest capacity (capacities are powers of two)
FRAME_HEADER = WORD  # a frame's header word; the payload follows, padded to WORD bytes
OOB_FRAME = 3 * WORD  # an out-of-band frame: its header, the message block's offset, its length
# an inline frame, header included, takes at most capacity / INLINE_SHARE bytes (the largest
# inline payload is capacity / INLINE_SHARE - FRAME_HEADER): one always fits in an empty ring,
# a wrap marker included
INLINE_SHARE = 2

# ---- a shared channel's block (_chan/block.py, chan.c)
CHAN_MAGIC = 0xC4A7_0000_0000_0001
W_MAGIC, W_CAP, W_CLOSED, W_COUNT, W_BUF, W_RECVQ, W_SENDQ, W_LOCK = range(8)
W_NRECV, W_NSEND = 8, 9  # records in recvq / sendq, dead ones included
W_REFS = 10  # handles in processes + references in flight
W_ID = 11  # new each time the allocator hands the block out
W_GROWN = 12  # 1 once one of its rings grew
CHAN_WORDS = 13
CHAN_BLOCK = 128  # bytes allocated for a block (CHAN_WORDS words, rounded up)
REFS_BYTE = W_REFS * WORD
ID_BYTE = W_ID * WORD
# a waiter record: these six little-endian int64 words, then the sender's value when HAS is 1
REC_P, REC_GID, REC_SLOT, REC_GEN, REC_CASE, REC_HAS = range(6)
REC_WORDS = 6
REC_BYTES = REC_WORDS * WORD
REC_FORMAT = "<6q"

# ---- wake kinds (_chan/proclayer.py): what a woken waiter is told
K_VALUE, K_CLOSED_RECV, K_SENT, K_CLOSED_SEND, K_GRANT = range(5)

# ---- select tokens (_mp/tokens.py): a token word reads gen << TOKEN_GEN_SHIFT | state
T_WAITING, T_DONE = 1, 2
TOKEN_GEN_SHIFT = 8

# ---- the runtime's control block (_mp/ctx.py)
CTX_MAGIC = 0xC5B0_C7A1_0000_0002
G_MAGIC, G_STOP, G_NPROCS, G_MAXPROCS, G_LOST, G_LOGICAL, G_SPARES, G_GOIDS = range(8)
# a hint on its own line (written on idle transitions, read on every go()): a P went idle and
# no frame was published for it since; go() publishes at once while it is set (Go's wakep)
G_HUNGRY = LINE // WORD
G_WORDS = 2 * LINE // WORD
P_STATUS, P_EPOCH, P_SENT, P_HANDLED, P_NGOR, P_PID, P_INBOX, P_RUNQ = range(8)
P_INFO, P_INFOLEN, P_DRAIN, P_PARKS, P_STOLEN = range(8, 13)
P_GFLOOR, P_DIRTY, P_OWES = range(13, 16)
P_CREATED, P_PREEMPT, P_BLOCKING, P_XOPS, P_XBYTES, P_MTHREADS, P_MBUSY = range(16, 23)
P_LIVE_CHAN, P_LIVE_INT64, P_LIVE_SEMA = range(23, 26)
P_PINNED_CHAN, P_PINNED_INT64, P_PINNED_SEMA = range(26, 29)
P_TASKS = 29
P_LIVE_ARRAY = 30
P_PINNED_ARRAY = 31
P_WORDS = 32  # words from one P's block to the next's
# inbox messages: msgpack arrays whose first field is the kind
M_WAKE, M_PANIC, M_WARN, M_STACK_REQ, M_STACK_REP, M_TRACE_REQ, M_TRACE_REP = range(1, 8)

# ---- value and task frames (_shm/codec.py, _mp/tasks.py, chan.c, task.c)
CODEC_EXT = 0xC1  # a byte msgpack never uses: the codec's own tags follow it
CODEC_TUPLE = 0x01  # ... a tuple of plain values, msgpack-encoded after the two bytes
CHAN_EXT = 1  # the msgpack extension type naming a channel in a task frame (8-byte offset)
# a task frame: a msgpack array of TASK_ITEMS items, seq, owner, digest, fn_bytes, args, warn,
# then where go() was called, for Go's "created by" line: the site, [function, file, line]
# (nil when unknown), and the creator's goroutine id
TASK_ITEMS = 8
TASK_SITE, TASK_CREATOR = 6, 7

# ---- channel fast paths and their wake-ups (codec.py, messages.py, broker.py, chan.c, wake.c)
# (before _exported: the digest and the header are made of the constants defined above it)
# a value whose first byte is CODEC_PICKLE followed by more bytes is a pickle (protocol 5
# starts 0x80 0x05; alone, 0x80 is msgpack's empty map)
CODEC_PICKLE = 0x80
# a WAKE message is a msgpack array of WAKE_ITEMS: M_WAKE, gid, slot, gen, case, kind, data,
# chan_off (one item more, the flow, when sent while watched); its first byte, written by
# wake.c, is MSGPACK_FIXARRAY | WAKE_ITEMS (msgpack's fixarray: up to 15 items)
WAKE_ITEMS = 8
MSGPACK_FIXARRAY = 0x90


# ---- a channel's buffer ring size (_chan/block.py's _buf_bytes, handles.c's buf_bytes): the
# smallest power of two of at least CHAN_BUF_PER_SLOT bytes a slot of its capacity, the capacity
# counted up to CHAN_BUF_CAP_MAX, and never under CHAN_BUF_MIN bytes
CHAN_BUF_MIN = 256
CHAN_BUF_PER_SLOT = 32
CHAN_BUF_CAP_MAX = 1024

def _exported() -> list[tuple[str, int]]:
    """Every integer constant of this module, in definition order."""
    return [(k, v) for k, v in globals().items()
            if k.isupper() and type(v) is int]


def _digest() -> str:
    text = ";".join(f"{k}={v}" for k, v in _exported()) + f";REC_FORMAT={REC_FORMAT}"
    return sha256(text.encode()).hexdigest()[:16]


DIGEST = _digest()


def c_header() -> str:
    """The C header the compiled core is built with (``csp_mp/_shm/c/layout.h``)."""
    lines = [
        "/* Generated from csp_mp/_shm/layout.py by setup.py: do not edit (edit layout.py). */",
        "#ifndef CSP_MP_LAYOUT_H",
        "#define CSP_MP_LAYOUT_H",
        "",
        f'#define LAYOUT_DIGEST "{DIGEST}"',
    ]
    for k, v in _exported():
        lines.append(f"#define {k} {'UINT64_C(' + hex(v) + ')' if v > 0x7FFFFFFF else v}")
    lines += ["", "#endif", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(c_header(), end="")
