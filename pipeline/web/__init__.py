"""The worker's HTTP surface, secure by default.

* ``auth``: bearer tokens on every API route once tokens are configured;
* ``signing``: worker-to-worker requests signed with the cluster secret;
* ``ratelimit``: a token bucket per client on the lookup routes;
* ``guard``: the one aiohttp middleware that applies the above to every route;
* ``health``: ``/metrics``, ``/healthz`` and ``/readyz`` on their own listener;
* ``listen``: bind exactly where configured, or fail naming the variable.
"""
