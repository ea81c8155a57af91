"""The remote inference service: ``mvmic serve`` (FastAPI on uvicorn) and ``mvmic send`` (httpx).

- :mod:`mvmic.serve.inference`: bytes → decoded input → task output → answer bytes
  (:class:`~mvmic.serve.inference.Service`), with every refusal as a status code;
- :mod:`mvmic.serve.app`: the ASGI app (``create_app``, ``app_from_env`` for workers), on
  :mod:`mvmic.serve.protocol` (refusals, ``Accept``, multipart, body limits) and
  :mod:`mvmic.serve.batching` (micro-batches);
- :mod:`mvmic.serve.server`: ``mvmic serve``; :mod:`mvmic.serve.client`: the httpx client;
  :mod:`mvmic.serve.send`: ``mvmic send``;
- :mod:`mvmic.serve.dicom`: the returned mask as a DICOM Segmentation (highdicom).

See docs/remote_inference.md.
"""
