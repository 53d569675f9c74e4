"""The node daemon: dials out to a relay, advertises what this node can do, runs its jobs.

    config        NodeConfig from flags and STYLERELAY_NODE_* variables
    backoff       full-jitter exponential backoff between reconnects
    capabilities  the Capabilities sent in Hello (device, methods, styles, caps)
    params        Offer.params -> the engines' parameter objects
    reporting     engine callbacks -> throttled Progress and small JPEG Previews
    runner        JobRunner: an Offer in, a Result out (plain, threaded code, no sockets)
    jobs          JobTable: one session's offers answered, jobs run on worker threads
    session       one connection to the relay (asyncio): handshake, heartbeats, drain
    daemon        reconnect-forever loop and drain on SIGTERM/SIGINT

Errors, on top of `gpu_node.errors`:

    NodeError
    ├── BadInputError
    │   └── ConfigError    a flag or environment variable is unusable (exit status 2)
    └── FatalReject        the relay refused us for good (bad token, version; exit status 2)

Job-level refusals (`Declined`) and failures (`JobFailed`) in `runner` become Decline and
Failure messages, never exceptions that leave the session.
"""
