"""Copies the Kubernetes JSON schemas that deploy/kubernetes/ needs out of the kubernetes-validate
wheel, keeping of `_definitions.json` only the definitions those kinds reach (values unchanged).

    pip download --no-deps kubernetes-validate==1.37.0 -d /tmp/kv && unzip -q /tmp/kv/*.whl -d /tmp/kv
    python deploy/schema/kubernetes/prune.py /tmp/kv/kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: One file per kind used in deploy/kubernetes/ (kind-group-version.json, as the source names them).
KINDS = ("deployment-apps-v1.json", "service-v1.json", "secret-v1.json", "configmap-v1.json",
         "poddisruptionbudget-policy-v1.json", "job-batch-v1.json")
REF = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')


def main(source: Path) -> None:
    definitions = json.loads((source / "_definitions.json").read_text(encoding="utf-8"))
    todo: list[str] = []
    for kind in KINDS:
        text = (source / kind).read_text(encoding="utf-8")
        (HERE / kind).write_text(text, encoding="utf-8")
        todo += REF.findall(text)
    kept: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in kept:
            kept.add(name)
            todo += REF.findall(json.dumps(definitions["$defs"][name]))
    pruned = {key: value for key, value in definitions.items() if key != "$defs"}
    pruned["$defs"] = {name: definitions["$defs"][name] for name in sorted(kept)}
    (HERE / "_definitions.json").write_text(json.dumps(pruned, indent=2) + "\n", encoding="utf-8")
    print(f"{len(KINDS)} kinds, {len(kept)} of {len(definitions['$defs'])} definitions")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
