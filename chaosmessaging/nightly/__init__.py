"""The nightly suite: run every experiment, keep what happened, judge the nights.

- `catalog`: which experiments (every `experiments/*.json`) and what the plan says of each
  (plan test, continue-on-error, critical);
- `runner` + `collect` + `journal`: run them one after another with live progress into one
  results folder per night (journal, k6 summaries, samples, fault windows, service logs);
- `history` + `regressions`: each night's figures kept across nights, regressions found by
  change-point detection (plan test 15);
- `dashboard`: the self-contained HTML pages (plotly); `alerts`: Slack/Discord webhooks;
- `command` (the CLI's `nightly`, `dashboard`, `baseline`) and `merge` (the CI's report job).

It drives the extension from outside, as a user would (`chaos run`, the fault ledger, the
shared clients); the extension's actions, probes and controls never import it.
"""
