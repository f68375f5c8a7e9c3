"""The grading engine: a trusted judge, an untrusted worker in a sandbox, and the supervisor
that starts both, enforces the limits and collects the verdicts.

- ``wire``: the message format between judge and worker (JSON plus tensors as bytes).
- ``worker``: runs the learner's file and answers the judge's requests; the only place
  learner code ever runs. It imports nothing of attn-drill but ``wire``.
- ``sandbox``: the bubblewrap command line (or the unsandboxed fallback) for the worker.
- ``judge``: runs the hidden checks under pytest against a remote learner.
- ``supervisor``: one grading, end to end: :func:`grade`.
"""
