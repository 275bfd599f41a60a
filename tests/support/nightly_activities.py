"""Test-only activities for the nightly suite's tests: hold a recorded fault for a while.

`hold_fault` starts a real `sleep` process, records it in the fault ledger as a ``load`` fault
(whose reverter stops the process) and then waits — an experiment interrupted meanwhile must
not leave the process behind."""

import os
import subprocess
import time

import psutil

from chaosmessaging import faults


def hold_fault(seconds: float = 60.0, pidfile: str = "") -> int:
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True)
    if pidfile:
        with open(pidfile, "w") as out:
            out.write(str(proc.pid))
    faults.record(
        "load",
        "load:nightly-test",
        {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "summary_path": "",
        },
        home=os.environ.get("CHAOSMESSAGING_HOME"),
    )
    time.sleep(float(seconds))
    return proc.pid
