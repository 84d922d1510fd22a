"""rarefit benchmarks: every number in ``benchmarks/RESULTS.md`` comes from one of these scripts.

- ``throughput``: images/s of the real job path (JobSpec → build_training → fit)
  against a hand-written PyTorch loop (``bare_loop``), and epoch time / memory
  as the data set grows.
- ``medmnist``: test metrics on PneumoniaMNIST against the MedMNIST v2
  reference rows, and imbalance strategies on a 1:10 subsample.
- ``inference``: HTTP latency and throughput of hosted predict against a
  minimal FastAPI floor, job-status polling, and job start/finish overhead.
- ``run_all``: all of them in sequence (``make bench``).

Each script takes ``--quick`` (seconds, for the smoke tests) and ``--results
PATH``; each rewrites only its own section of the results file.
"""
