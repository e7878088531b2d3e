"""Use the engine inside your own endpoint: the request body streams into the database as it
arrives, in bounded memory, with your own auth, validation and response.

    uvicorn --app-dir docs/examples embed:app --port 8000
    curl --data-binary @products.csv -H 'Content-Type: text/csv' http://127.0.0.1:8000/products
"""

import os

from fastapi import FastAPI, HTTPException, Request

from antioom import AntioomError, InputError, PushImport

DB_URL = os.environ.get("SHOP_DB_URL", "sqlite:///shop.db")
app = FastAPI(title="shop")


@app.post("/products")
async def upload_products(request: Request) -> dict[str, object]:
    """Upsert the products of a CSV body; answers the counts and the first rejected rows."""
    try:
        async with PushImport(DB_URL, dataset="products") as upload:
            async for chunk in request.stream():
                await upload.push(chunk)  # waits while the database is behind
    except InputError as exc:
        raise HTTPException(400, str(exc)) from None
    except AntioomError as exc:
        raise HTTPException(503, str(exc)) from None
    summary = upload.summary
    assert summary is not None
    return {
        "imported": summary.processed,
        "rejected": summary.failed,
        "first_rejects": [
            {"record": r.record, "column": r.column, "reason": r.reason} for r in summary.rejects
        ],
    }
