"""The search service (``haq serve``): jobs over HTTP, run in worker processes, persisted in a
store and resumed after a crash, with a page to watch them. Needs the ``service`` extra
(FastAPI, uvicorn, SQLAlchemy); nothing here is imported by the rest of haq but ``haq serve``."""
