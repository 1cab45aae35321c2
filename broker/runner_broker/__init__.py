"""The runner broker: the only holder of the GitHub runner credential in the cluster, and
the only creator of GPU runners.

A runner pod proves which pod it is with its projected ServiceAccount token; the broker
decides from the pod and its owner alone which runner it may have (`decisions`), hands it
one just-in-time runner and records the grant on the pod (`grants`). A job on a base
runner asks it for its run's GPU runners (`gpu_runners`). A sweep removes what has ended
(`sweep`). `service` wires the clients (`github`, `kubernetes`) and the two HTTP servers
(`server`); `__main__` reads the configuration (`config`) and runs it.

Standard library only, but for `cryptography`, imported by `app_jwt` alone.
"""
