"""Benchmarks of nanobot-api's two stacks against peers and a bare-asyncio floor (``python -m benchmarks``).

Modules: ``agents`` (the workload agent), ``servers``/``peers``/``floor`` (what is measured),
``upstream``/``relays``/``relayfloor`` (W4: the cheap upstream LLM server and the relays in
front of it), ``client``/``checks``/``load`` (the validating load process), ``meters`` (CPU and
memory), ``workloads`` (the plans), ``processes``/``harness`` (running it all),
``report``/``relayreport``/``plot``.
"""
