"""The smoke test of a deployed stack: `python3 scripts/smoke_test.py --help`.

main        reads the settings and the stack's outputs, runs a mode's checks, cleans up
modes       the checks of each runner mode, in order
checks      the broker and base runners, GitHub's runner list, the runner version
ci_access   what CI may do in the cluster, asked as CI
gpu_runners real GPU runners made from the published template, end to end
scale_set   a scale-set stack: ARC's controller, scale set, listener and recent runners
nodes       the GPU nodes' billed minutes (SMOKE_FOLLOW_NODE=1)
cluster     the one narrow way into Kubernetes (kubectl behind it)
github      GitHub's REST API with urllib, and what a runner list means
cold_start  the cold-start and billing tables, from Kubernetes' timestamps (pure)
states      what Kubernetes objects say, in a few words (pure)
template    a smoke Job from the template, as the broker makes one (pure)
settings    every environment variable, read once
report      PASS, FAIL, WARN, SKIP lines and the summary
"""
