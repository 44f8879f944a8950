"""Framework integrations: :mod:`.fastapi` and :mod:`.flask`.

Each is imported on its own and needs its extra (``keyguard-auth[fastapi]``,
``keyguard-auth[flask]``). Plain Starlette needs none: the ASGI middleware fills
``scope["user"]`` and ``scope["auth"]`` as ``starlette.authentication.requires`` expects.
"""
