"""The metalic HTTP API (FastAPI): validation, auth, limits, job submission, decode.

Build the app with :func:`service.main.create_app` (``uvicorn --factory
service.main:create_app``); run the whole service on one machine with
``metalic serve`` (:mod:`metalic.serve`).
"""
