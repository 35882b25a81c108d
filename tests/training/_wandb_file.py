"""Read the records an offline W&B run would upload (its ``run-*.wandb`` file).

The file is W&B's 7-byte header followed by a LevelDB-style log of protobuf ``Record``s in
32 KiB blocks; reading it shows exactly what ``wandb sync`` would send to the server.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, pos, pending = [], HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = pb.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def read_finished_records(path: Path, timeout: float = 60.0) -> list:
    """Records of a finished run, once W&B's service has written them all.

    ``run.finish()`` returns once the service has the exit record, and the service writes
    its file behind that; a CLI process exiting tears the service down, which flushes it.
    Doing the same here, and waiting for the exit record, keeps a loaded machine from
    reading a file that is still being written.
    """
    import wandb

    wandb.teardown()
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        kinds = [r.WhichOneof("record_type") for r in records]
        if "exit" in kinds or time.monotonic() > deadline:
            assert "exit" in kinds, f"run file never got its exit record; it holds {kinds}"
            return records
        time.sleep(0.2)
