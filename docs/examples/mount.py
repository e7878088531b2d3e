"""Mount the whole anti-oom service (uploads, records, SSE, dashboard) inside your own app.

    uvicorn --app-dir docs/examples mount:app --port 8000
    # the dashboard: http://127.0.0.1:8000/antioom/   your routes: http://127.0.0.1:8000/

Settings come from ANTIOOM_* variables (ANTIOOM_DB_URL, ANTIOOM_API_KEYS…) or are passed here.
Starlette does not run a mounted app's lifespan, so the parent's runs it: that is where
anti-oom marks imports a crashed process left ``running`` as ``interrupted``, and where it
stops its imports on shutdown.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from antioom.server import Settings, create_app

antioom_app = create_app(Settings(db_url="sqlite:///shop.db"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with antioom_app.router.lifespan_context(antioom_app):
        yield


app = FastAPI(title="shop", lifespan=lifespan)
app.mount("/antioom", antioom_app)


@app.get("/")
async def home() -> dict[str, str]:
    return {"imports": "/antioom/", "api docs": "/antioom/docs"}
