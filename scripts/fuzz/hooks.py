"""Schemathesis hooks for scripts/fuzz.sh: the rules of the API that the OpenAPI document
cannot state, taught to the generator (never to the checks). Only requests generated to be
valid are changed; those meant to be invalid are sent as generated.

- A time window (`from`/`to`, `fromDate`/`toDate`) whose start is after its end is
  refused with 400: a rule between two parameters, which JSON Schema cannot say. Valid
  requests get their window the right way round.
- An `Idempotency-Key` names one request: the same key with a different request is
  refused with 422 (the shop keeps the first answer for repeats). That is a rule across
  requests; the generator, left alone, sends its favourite key ("0") with every body.
  Valid requests get a key of their own.
- A shipping address may give its country as `countryCode`, as `country` (the field's
  first name), or both, and then both must name the same country: a rule between two
  fields. Valid requests that give both get the same code in each.
"""

import uuid
from datetime import datetime

import schemathesis
from schemathesis import GenerationMode

WINDOWS = (("from", "to"), ("fromDate", "toDate"))


def _instant(text):
    try:
        return datetime.fromisoformat(str(text).upper().replace("Z", "+00:00"))
    except ValueError:
        return None


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4()}"
    address = case.body.get("shippingAddress") if isinstance(case.body, dict) else None
    if isinstance(address, dict) and "country" in address and "countryCode" in address:
        address["country"] = address["countryCode"]
    if case.query is None:
        return
    for start, end in WINDOWS:
        if start in case.query and end in case.query:
            a, b = _instant(case.query[start]), _instant(case.query[end])
            try:
                inverted = a is not None and b is not None and a > b
            except TypeError:  # one has an offset, the other not: not a valid window
                inverted = False
            if inverted:
                case.query[start], case.query[end] = case.query[end], case.query[start]

