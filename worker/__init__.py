"""RQ job functions and the worker entry point of metalic.

The worker loads the model once per process (:mod:`worker.main`) and runs
:func:`worker.jobs.encode_image` for each job. The wire contract shared with the
service (key layout, job states, outcomes) lives in :mod:`worker.protocol`, which
imports neither torch nor the codec. A job's one outcome is committed under its
execution's lease (:mod:`worker.fencing`); the side thread of a running job is
:mod:`worker.watchdog`; abandoned jobs are found by :mod:`worker.reaper`.
"""
