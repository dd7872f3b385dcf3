"""The local stack: its settings (`config`), the installer (`install`), the process utilities, one module per
component and the orchestrator (`stack`, run as `python -m launch.stack`). Imports nothing: the system Python runs
`python3 -m launch.stack.install` before the virtualenv exists."""
