"""Parses a Prometheus text exposition (stdin) with the reference Python client's parser and prints
the families as JSON: [{"name", "type", "help", "samples": [{"name", "labels", "value"}]}].

Exits non-zero (the parser's error on stderr) when the text does not parse. The parser is lax in
one way the caller checks: a sample that does not belong to the family declared before it becomes
a family of its own of type "unknown"/"untyped".
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def value(v: float):
    # JSON has no infinities or NaN: keep them as strings.
    return v if math.isfinite(v) else str(v)


families = [
    {
        "name": f.name,
        "type": f.type,
        "help": f.documentation,
        "samples": [
            {"name": s.name, "labels": s.labels, "value": value(s.value)} for s in f.samples
        ],
    }
    for f in text_string_to_metric_families(sys.stdin.read())
]
json.dump(families, sys.stdout)
