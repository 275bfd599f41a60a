"""The senders' record of what the platform accepted: client-side evidence, no database needed.

A k6 script that posts messages logs one line per accepted message through
`k6/lib/platform.js` (``recordAccepted``): ``console.log("ACK " + JSON)`` with the platform's id of
the message, its conversation, the client message id (run prefix + payload hash) and the time the
answer arrived. k6 writes console lines into the load's log (``start_load``'s `log_path`) as
``time=... level=info msg="ACK {...}" source=console``; this module reads them back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from chaosmessaging import runs

__all__ = ["ACK", "parse_line", "read_acks"]

ACK = "ACK "
_MSG = re.compile(r'msg="((?:[^"\\]|\\.)*)"')


def parse_line(line: str) -> dict | None:
    """The acknowledgment a k6 log line carries, or None."""
    if ACK not in line:
        return None
    match = _MSG.search(line)
    text = line if match is None else json.loads(f'"{match[1]}"')
    start = text.find(ACK)
    if start < 0:
        return None
    try:
        doc = json.loads(text[start + len(ACK) :])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("message_id") else None


def read_acks(home: str | None = None, label: str | None = None) -> dict[str, dict]:
    """``{message_id: {"conversation_id", "client_msg_id", "t"}}`` of every message the run's
    loads (or the load `label`) saw accepted."""
    out: dict[str, dict] = {}
    for load in runs.loads(home, label):
        path = Path(load.get("log_path") or "")
        if not path.is_file():
            continue
        with open(path, errors="replace") as f:
            for line in f:
                ack = parse_line(line)
                if ack is not None:
                    out[str(ack["message_id"])] = ack
    return out
