"""Parses Prometheus text (standard input) with prometheus_client's own parser, the one Prometheus's
Python client ships, and prints its families as JSON: {name: {type, help, samples: [{name, labels,
value}]}}. A text it cannot parse fails here, with the parser's error (tests/api/metrics.rs)."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    if family.name in families:
        sys.exit(f"family {family.name} appears twice")
    families[family.name] = {
        "type": family.type,
        "help": family.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in family.samples],
    }
json.dump(families, sys.stdout)
