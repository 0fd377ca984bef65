"""Code that runs inside the code sandbox (rewards/sandbox.py starts it): the solution process that runs model code,
the judge that runs a dataset's tests against it, and the plain-value codec they talk through.

These modules import only the standard library and nothing else of rlpost: the sandbox sees no project files, so
their source is handed to each sandboxed interpreter on a pipe (rewards.sandbox.bootstrap) and loaded there.
"""
