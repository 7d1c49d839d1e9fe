"""schemathesis hooks for core-app (loaded by scripts/schemathesis.sh).

A generated quote request almost never gets past validation: no JSON schema can say that a
policy starts within 60 days of today, that every driver is an adult on that day or that a
VIN has no I, O or Q, so nearly every POST would end in a 422 and nothing behind
validation would be tested. So half of the schema-valid bodies are replaced by the README's
sample request (dated from today) with one generated value spliced in at one field: valid
requests with a hostile value reach the aggregator, Postgres and the insurers, answer 201,
and the stateful phase follows their Location to GET the quote.
"""

import copy
import datetime

import schemathesis
from hypothesis import strategies as st

# Every field of the request, as a path into the JSON.
FIELDS = [
    *(("vehicle", key) for key in ("category", "make", "model", "year", "power_hp", "vin", "plate", "purpose")),
    *(
        ("owner", key)
        for key in ("last_name", "first_name", "middle_name", "birth_date", "passport", "region", "city")
    ),
    *(
        ("drivers", 0, key)
        for key in ("last_name", "first_name", "middle_name", "birth_date", "licence", "experience_since", "kbm_class")
    ),
    ("drivers",),
    ("unlimited_drivers",),
    ("policy", "start_date"),
    ("policy", "period_months"),
]


def sample():
    start = datetime.date.today() + datetime.timedelta(days=20)
    return {
        "vehicle": {"category": "B", "make": "LADA", "model": "VESTA", "year": 2019, "power_hp": 106,
                    "vin": "XTAGFL110KY123456", "plate": "А123ВС77", "purpose": "personal"},
        "owner": {"last_name": "Иванов", "first_name": "Иван", "middle_name": "Иванович",
                  "birth_date": "1985-04-12", "passport": "4510 123456", "region": "77", "city": "Москва"},
        "drivers": [{"last_name": "Иванов", "first_name": "Иван", "birth_date": "1985-04-12",
                     "licence": "7700 123456", "experience_since": "2005-06-01"}],
        "unlimited_drivers": False,
        "policy": {"start_date": start.isoformat(), "period_months": 12},
    }


_MISSING = object()


def _get(value, path):
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return value


def splice(body, path):
    """The sample with the generated value at `path` (the plain sample if `body` has none there)."""
    result = sample()
    value = _get(body, path)
    if value is not _MISSING:
        target = result
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(value)
    return result


@schemathesis.hook
def flatmap_case(ctx, case):
    # Only schema-valid (positive) cases: a negative one must stay invalid for its checks.
    meta = getattr(case, "_meta", None)
    positive = meta is not None and meta.generation.mode.is_positive
    operation = case.operation
    if not positive or operation.method.upper() != "POST" or operation.path != "/api/v1/quotes":
        return st.just(case)
    generated = case.body

    def spliced(path):
        case.body = splice(generated, path)
        return case

    return st.one_of(st.just(case), st.sampled_from(FIELDS).map(spliced))
