"""Actions: the faults and loads an experiment's method applies (one module per target kind).

Every module here is discovered automatically by `chaosmessaging.discover()`; modules that inject
faults record them in the fault ledger (`chaosmessaging.faults`) and register how to revert them.
"""
