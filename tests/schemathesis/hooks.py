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
    positive = case.meta is not None and case.meta.generation.mode.is_positive
    if key is not None and positive:
        headers[key] = str(uuid.uuid4())
    # The user's quota (1024 MiB in the test) and the catalogue are state the schema cannot
    # state either: most valid creates it draws ask for more memory, or a version or collation
    # this catalogue or server lacks, and are refused (403, 422), so that in a busy run's time
    # the stateful phase's chains (create, then get, stop, delete) would rarely begin. Its valid
    # creates ask for 256 MiB at most (every engine's bounds allow it) and leave the rest to the
    # defaults; the other phases keep every draw.
    body = case.body
    if (
        positive
        and case.meta.phase.name == "stateful"
        and case.method.upper() == "POST"
        and case.path == "/v1/instances"
        and isinstance(body, dict)
    ):
        for refused_by_state in ("version", "charset", "collation", "database"):
            body.pop(refused_by_state, None)
        if isinstance(body.get("memory_mb"), int) and body["memory_mb"] > 256:
            body["memory_mb"] = 256
    # A DELETE answered 202 (`Prefer: respond-async`) has been accepted, not done: the instance is
    # there until its operation ends. The check `use_after_free` reads any 2xx to a DELETE as gone,
    # and a GET of the instance's operations right after it answers 200, so the stateful phase's
    # deletes are asked to answer once done. Asynchronous deletes are tested in tests/api/operations.rs.
    if positive and case.meta.phase.name == "stateful" and case.method.upper() == "DELETE":
        for name in [name for name in headers if name.lower() == "prefer"]:
            del headers[name]
