"""`gpu-runner`: a workflow run's GPU runners, asked for, watched and stopped from a base runner.

Standard library only: it runs on the runner image's own python3. One concern per module:

- `cli`: the command line and the environment it reads; exit statuses.
- `transport`: one HTTP request with urllib (no redirects, bounded answers, no secret in errors).
- `broker`: the runner broker's GPU runner API, with the pod's projected token.
- `github`: this run's jobs and its cancellation, with the job's GITHUB_TOKEN.
- `decide`: what one broker snapshot means (wait, ready or fail; taken or foreign): pure.
- `runners` (start, stop), `guard`: the loops around those decisions; `waiting`: what they
  share (an injected clock and sleep, retries, how waiting and failing read in the log).
- `credential`: kubectl's exec plugin for the CI kubeconfig (GitHub OIDC -> STS -> IAM).
- `actions`: output a GitHub Actions log reads (`::error::`, `::notice::`), safely escaped.
"""
