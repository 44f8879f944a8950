"""A FastAPI app with a rate limit declared beside a route, for the real-server test:
anonymous requests (``optional=True``) are counted per client address."""

from fastapi import FastAPI

from keyguard import AsyncKeyManager
from keyguard.integrations.fastapi import Keyguard
from keyguard.ratelimit import MemoryRateLimiter
from keyguard.stores import MemoryKeyStore

keyguard = Keyguard(
    AsyncKeyManager(MemoryKeyStore()),
    limiter=MemoryRateLimiter(),
    optional=True,
    rate_limit="1000/minute",
    public_paths=["/health"],
)
app = FastAPI()
keyguard.init_app(app)


@app.get("/health")
async def health() -> str:
    return "ok"


@app.get("/invoices/{id}", openapi_extra=keyguard.limit("3/hour"))
async def invoice(id: int) -> int:
    return id


@app.get("/free/{id}")
async def free(id: int) -> int:
    return id
