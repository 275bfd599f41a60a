"""Test-only activities for the nightly suite's tests: hold a recorded fault for a while.

`hold_fault` starts a real `sleep` process, records it in the fault ledger as a ``load`` fault
(whose reverter stops the process) and then waits — an experiment interrupted meanwhile must
not leave the process behind."""

import os
import subprocess
import time

import psutil

from chaosmessaging import faults
from chaosmessaging.util import OWNER_ENV, stack_home


def hold_fault(seconds: float = 60.0, pidfile: str = "") -> int:
    home = os.environ.get("CHAOSMESSAGING_HOME")
    # marked like every process the toolkit starts, so the ledger's reverter may stop it
    env = {**os.environ, OWNER_ENV: str(stack_home(home))}
    proc = subprocess.Popen(["sleep", "600"], start_new_session=True, env=env)
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
        home=home,
    )
    time.sleep(float(seconds))
    return proc.pid
