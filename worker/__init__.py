"""RQ job functions and the worker entry point of metalic.

The worker loads the model once per process (:mod:`worker.main`) and runs
:func:`worker.jobs.encode_image` for each job. The wire contract shared with the
service (key layout, job states) lives in :mod:`worker.protocol`, which imports
neither torch nor the codec.
"""
