"""schemathesis hooks for tests/api/schemathesis.rs.

An Idempotency-Key is single-use: the same key with another request is 422, as the document says.
The schema cannot say "a key not used before", so schemathesis draws keys that collide ("0", "a")
and its valid requests would be refused. Each valid request gets a fresh key instead; invalid keys
(the negative cases, which must be 400) are left as drawn. Replays and reuse are tested in
tests/api/operations.rs.
"""

import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    headers = case.headers or {}
    key = next((name for name in headers if name.lower() == "idempotency-key"), None)
    if key is not None and case.meta is not None and case.meta.generation.mode.is_positive:
        headers[key] = str(uuid.uuid4())
