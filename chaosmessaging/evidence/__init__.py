"""Evidence engines the verdict probes judge with (no Chaos Toolkit activities here).

`acks`: what the senders saw the platform accept (client side, every platform); `delivery`:
client-side delivery accounting (acknowledged -> received by every participant device, once,
byte-exact, never a non-participant's). A platform's server-side ledger (its platform file's
`evidence:`) is an extra the probes add where it is described.
"""
