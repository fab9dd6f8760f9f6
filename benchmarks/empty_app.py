"""The ceiling of the stack: an empty FastAPI endpoint, served like ``nudge api``."""

from fastapi import FastAPI, Response

app = FastAPI()


@app.post("/v1/empty")
async def empty() -> Response:
    return Response(status_code=202)


@app.get("/v1/empty")
async def empty_get() -> Response:
    return Response(status_code=200)
