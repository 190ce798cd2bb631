#!/usr/bin/env python3
"""Validates every document of multi-document Kubernetes manifests, strictly: each ScaledObject
against the KEDA schema, every other document against kubernetes-validate's strict schemas. An
unknown kind or apiVersion fails (kubernetes-validate alone only warns on those).

Used when the shared `validate-k8s` tool is not beside the checkout; it checks the same way.
usage: k8s_documents.py SCHEMA_DIR K8S_MINOR FILE...
"""
import json
import sys

import jsonschema
import kubernetes_validate
import yaml

schema_dir, minor, files = sys.argv[1], sys.argv[2], sys.argv[3:]
keda = json.load(open(f"{schema_dir}/keda-scaledobject.json"))
rc = 0
for path in files:
    for doc in (d for d in yaml.safe_load_all(open(path)) if d):
        name = f"{path}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            if doc.get("kind") == "ScaledObject":
                errors = list(jsonschema.Draft7Validator(keda).iter_errors(doc))
                if errors:
                    raise ValueError("; ".join(f"{e.json_path}: {e.message}" for e in errors))
            else:
                kubernetes_validate.validate(doc, minor, strict=True)
            print("OK  ", name)
        except Exception as e:  # noqa: BLE001 - every failure is reported with its document
            rc = 1
            print("FAIL", name, "-", getattr(e, "message", e))
sys.exit(rc)
