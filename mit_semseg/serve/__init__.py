"""Serving models over HTTP: `python -m mit_semseg.serve` (the page and the API of `app`), one `runner` per model,
uploads checked by `images`. Needs the `serve` extra (FastAPI, uvicorn)."""
